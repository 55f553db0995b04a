"""Scale-out and graceful shutdown on one machine, through real processes: two web processes
(chatplatform.serve, the images' command), one CPU worker and two inference workers on the
offline model, all on one Redis and database; real websocket clients.

- an answer made by the second worker reaches a socket on the first web process;
- SIGTERM to a web process closes its sockets with 1012 after their consumers finished, the
  process exits 0, and the conversation resumed on the other web process gets everything;
- SIGTERM to an inference worker finishes the answer it streams; killed before it could (its
  grace period spent), its answer is handed to the other worker;
- the load benchmark splits its customers over both web processes;
- in Chromium, the widget whose web process drains reconnects through a proxy to the other
  one and shows the answer that was being made.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from chatplatform.conversations.models import Message
from chatplatform.faq.demo_data import DEMO_SITE_NAME
from tests.browser import chromium
from tests.chat.conftest import ORIGIN, make_site
from tests.deploy.balancer import Balancer
from tests.deploy.cluster import DRAIN_TIMEOUT_S, Cluster

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

MODEL_TIMEOUT_S = 90  # a fresh worker's first answer on a loaded 2-core box
NOVEL = "Can I get a camp stove engraved with my club logo? (order {n})"
CLOSE_SERVICE_RESTART = 1012


@pytest.fixture(scope="module")
def cluster(django_db_setup, django_db_blocker, redis_url: str) -> Iterator[Cluster]:
    import redis as redis_lib
    from django.conf import settings
    from django.db import connection

    var_dir = Path(settings.VAR_DIR)
    model_dir = var_dir / "models" / "tiny-deepseek"
    subprocess.run(
        [sys.executable, "-m", "inference.build_model", "--out", str(model_dir)],
        check=True,
        capture_output=True,
    )
    own_redis = redis_url.rsplit("/", 1)[0] + "/1"  # away from the session's other platform
    redis_lib.Redis.from_url(own_redis).flushdb()
    scaled = Cluster(connection.settings_dict["NAME"], own_redis, var_dir, model_dir)
    # Long answers (the offline model always runs to the limit): a SIGTERM lands mid-answer.
    scaled.env.update({"CHAT_MAX_NEW_TOKENS": "256", "INFERENCE_MAX_NEW_TOKENS": "256"})
    try:
        scaled.start()
        yield scaled
    finally:
        scaled.stop()


def open_socket(cluster: Cluster, web: str) -> ClientConnection:
    return connect(cluster.socket_url(web), origin=ORIGIN, open_timeout=30)


def send(socket: ClientConnection, frame: dict[str, Any]) -> None:
    socket.send(json.dumps(frame))


def receive_type(socket: ClientConnection, kinds: set[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        frame = json.loads(socket.recv(timeout=max(0.01, deadline - time.monotonic())))
        if frame["type"] in kinds:
            return frame


def hello(socket: ClientConnection, site, conversation_id: str | None = None) -> dict[str, Any]:
    send(socket, {"type": "hello", "v": 1, "site_key": site.widget_key,
                  "conversation_id": conversation_id})  # fmt: skip
    return receive_type(socket, {"welcome"}, 30)


def ask(socket: ClientConnection, cid: str, text: str) -> dict[str, Any]:
    send(socket, {"type": "message", "client_message_id": cid, "text": text})
    ack = receive_type(socket, {"ack"}, 60)
    assert ack["client_message_id"] == cid
    return ack


def outcome_line(log: str, message_id: str) -> int:
    """Where the worker logged how the answer to `message_id` ended (-1: not logged)."""
    match = re.search(rf"message {message_id}: (?!received)\w+", log)
    return match.start() if match else -1


def wait_for_outcome(cluster: Cluster, worker: str, message_id: str) -> None:
    """Until `worker` has logged how the answer ended (it logs just after sending the end)."""

    def logged() -> bool:
        return outcome_line(cluster.log(worker), message_id) >= 0

    wait_for(logged, 30, f"{worker} to log the end of {message_id}")


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_an_answer_made_by_the_second_worker_reaches_a_socket_on_the_first_web(cluster) -> None:
    # given: a customer on web1, and only the second inference worker taking tasks
    site = make_site(sla_ms=20_000)
    cluster.only_consumer("inference2")
    try:
        with open_socket(cluster, "web1") as socket:
            hello(socket, site)
            # when
            ack = ask(socket, "w2", NOVEL.format(n=1))
            end = receive_type(socket, {"answer.end"}, MODEL_TIMEOUT_S)
    finally:
        cluster.all_consume()
    # then: worker 2 made it (worker 1 never saw it) and web1's socket received it whole
    assert end["reply_to"] == ack["message_id"] and end["text"]
    wait_for_outcome(cluster, "inference2", ack["message_id"])
    assert ack["message_id"] not in cluster.log("inference1")


def test_sigterm_drains_web_and_the_conversation_resumes_on_the_other(cluster) -> None:
    # given: a conversation on web1 with one answer delivered and one still to come (the
    # inference workers are held back)
    site = make_site(sla_ms=20_000)
    try:
        with open_socket(cluster, "web1") as socket:
            conversation_id = hello(socket, site)["conversation_id"]
            first = ask(socket, "d1", NOVEL.format(n=2))
            first_end = receive_type(socket, {"answer.end"}, MODEL_TIMEOUT_S)
            for worker in ("inference1", "inference2"):
                cluster.signal(worker, signal.SIGSTOP)
            pending = ask(socket, "d2", NOVEL.format(n=3))
            # when: web1 is told to stop, as a redeploy or a scale-down does
            cluster.signal("web1", signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    socket.recv(timeout=DRAIN_TIMEOUT_S + 5)
        # then: the socket was closed with "service restart" (the widget reconnects), and
        # the process drained and exited cleanly
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == CLOSE_SERVICE_RESTART
        assert cluster.wait_exit("web1", DRAIN_TIMEOUT_S + 10) == 0
        assert "drained in" in cluster.log("web1")
        # and the customer, resuming on web2, gets the answer that was still being made
        with open_socket(cluster, "web2") as resumed:
            welcome = hello(resumed, site, conversation_id)
            assert welcome["resumed"] and welcome["conversation_id"] == conversation_id
            for worker in ("inference1", "inference2"):
                cluster.signal(worker, signal.SIGCONT)
            frame = receive_type(resumed, {"answer", "answer.end"}, MODEL_TIMEOUT_S)
            while frame.get("reply_to") != pending["message_id"]:
                frame = receive_type(resumed, {"answer", "answer.end"}, MODEL_TIMEOUT_S)
            assert frame["text"]
    finally:
        for worker in ("inference1", "inference2"):
            cluster.signal(worker, signal.SIGCONT)
        if "web1" not in cluster.processes:
            cluster.start_web("web1")
            cluster.wait_ready("web1")
    # nothing lost: both answers stored, and recorded as delivered to the customer
    answers = Message.objects.filter(conversation_id=conversation_id, role="assistant")
    replied = {str(a.in_reply_to_id) for a in answers}
    assert replied >= {first["message_id"], pending["message_id"]}
    assert first_end["reply_to"] == first["message_id"]

    def delivered() -> bool:
        row = answers.filter(in_reply_to_id=pending["message_id"]).first()
        return row is not None and row.delivered

    wait_for(delivered, 30, "the resumed answer to be recorded as delivered")


def test_sigterm_to_an_inference_worker_finishes_its_answer(cluster) -> None:
    # given: an answer being streamed by inference2, the only worker taking tasks
    site = make_site(sla_ms=20_000)
    cluster.only_consumer("inference2")
    try:
        with open_socket(cluster, "web2") as socket:
            hello(socket, site)
            ack = ask(socket, "t1", NOVEL.format(n=4))
            receive_type(socket, {"answer.start"}, MODEL_TIMEOUT_S)
            # when: the worker is told to stop mid-answer
            cluster.signal("inference2", signal.SIGTERM)
            end = receive_type(socket, {"answer.end", "error"}, MODEL_TIMEOUT_S)
            # then: the answer is finished and delivered, and the worker exits cleanly
            assert end["type"] == "answer.end" and end["reply_to"] == ack["message_id"]
            assert cluster.wait_exit("inference2", 60) == 0
        # and it was in flight: the worker logged its shutdown before the answer's end
        log = cluster.log("inference2")
        warm_shutdown = log.rfind("Warm shutdown")
        assert 0 <= warm_shutdown < outcome_line(log, ack["message_id"]), log[-2000:]
    finally:
        restart_worker(cluster, "inference2")


def test_an_inference_worker_killed_after_its_grace_hands_its_answer_to_another(cluster) -> None:
    # given: an answer being streamed by inference1 while inference2 waits
    site = make_site(sla_ms=60_000)
    cluster.only_consumer("inference1")
    try:
        with open_socket(cluster, "web1") as socket:
            hello(socket, site)
            ack = ask(socket, "k1", NOVEL.format(n=5))
            receive_type(socket, {"answer.start"}, MODEL_TIMEOUT_S)
            cluster.all_consume()
            # when: its grace period runs out (SIGTERM, then SIGKILL, as Kubernetes does)
            cluster.signal("inference1", signal.SIGTERM)
            cluster.signal("inference1", signal.SIGKILL)
            cluster.wait_exit("inference1", 30)
            # then: the other worker restarts the answer (a second answer.start) and ends it
            restart = receive_type(socket, {"answer.start"}, MODEL_TIMEOUT_S)
            end = receive_type(socket, {"answer.end"}, MODEL_TIMEOUT_S)
        assert restart["reply_to"] == end["reply_to"] == ack["message_id"]
        wait_for_outcome(cluster, "inference2", ack["message_id"])
    finally:
        restart_worker(cluster, "inference1")


def test_the_load_benchmark_splits_its_customers_over_both_web_processes(cluster) -> None:
    # given: the site's FAQs in the cluster's own cache
    site = make_site()
    subprocess.run(
        [sys.executable, "manage.py", "rebuild_semantic_cache"],
        env=cluster.env, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    urls = [cluster.socket_url("web1"), cluster.socket_url("web2")]
    connects_before = {web: cluster.log(web).count("WSCONNECT") for web in ("web1", "web2")}
    # when
    run = subprocess.run(
        [sys.executable, "-m", "chatplatform.chat.loadtest", "--url", ",".join(urls),
         "--site-key", site.widget_key, "--rates", "", "--conversations", "4",
         "--messages", "2", "--faq-share", "1", "--paraphrase-share", "0", "--think-ms", "50"],
        env=cluster.env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    # then: half the customers on each process, every message answered
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["web_processes"] == 2
    assert report["concurrency"]["clients_per_url"] == {urls[0]: 2, urls[1]: 2}
    assert report["concurrency"]["messages"] == 8 and report["concurrency"]["lost"] == 0
    for web in ("web1", "web2"):  # and each process saw its customers' sockets
        assert cluster.log(web).count("WSCONNECT") >= connects_before[web] + 2, web


def restart_worker(cluster: Cluster, name: str) -> None:
    """Start worker `name` again if it stopped, and wait until it takes tasks."""
    if name in cluster.processes and cluster.processes[name].poll() is not None:
        cluster.wait_exit(name, 1)
    if name not in cluster.processes:
        cluster.start_inference(name)
    cluster.wait_worker(name)
    cluster.all_consume()


# Records every close code the page's websockets see, before the widget loads.
CLOSE_PROBE = """
window.__closes = [];
const NativeWebSocket = window.WebSocket;
window.WebSocket = function (url, protocols) {
  const socket = new NativeWebSocket(url, protocols);
  socket.addEventListener("close", (event) => window.__closes.push(event.code));
  return socket;
};
window.WebSocket.prototype = NativeWebSocket.prototype;
Object.assign(window.WebSocket, NativeWebSocket);
"""


@pytest.mark.browser
def test_the_widget_reconnects_through_the_proxy_when_its_web_process_drains(cluster) -> None:
    # given: the demo page through a proxy that prefers web1
    site = make_site(sla_ms=20_000, name=DEMO_SITE_NAME)
    backends = [cluster.ports["web1"], cluster.ports["web2"]]
    try:
        with Balancer(backends) as proxy, chromium() as browser:
            site.allowed_origins = [proxy.base_url]
            site.save()
            page = browser.new_page()
            page.add_init_script(CLOSE_PROBE)
            page.goto(proxy.base_url + "/")
            page.locator("#cs-chat-widget .launcher").click()
            page.locator("#cs-chat-widget .msg.assistant").first.wait_for()  # the greeting
            # and a question acked whose answer is held back (the inference workers pause)
            drain_web1_with_a_question_pending(cluster, page)
            # then: the socket was closed with 1012, the widget reconnected (to web2 through
            # the proxy), resumed, and shows the answer, recorded as delivered
            assert page.evaluate("window.__closes")[0] == CLOSE_SERVICE_RESTART
            page.wait_for_function(
                """() => document.querySelector('#cs-chat-widget').shadowRoot
                     .querySelectorAll('.msg.assistant .meta').length >= 1""",
                timeout=MODEL_TIMEOUT_S * 1000,
            )
            reply = Message.objects.filter(site=site, role="assistant", source="llm")

            def delivered() -> bool:
                return reply.filter(delivered=True, state="done").exists()

            wait_for(delivered, 30, "the answer to be recorded as delivered")
            shown = page.locator("#cs-chat-widget .msg.assistant .text").nth(1).text_content()
            assert shown == reply.get().text
    finally:
        if "web1" not in cluster.processes:
            cluster.start_web("web1")
            cluster.wait_ready("web1")


def drain_web1_with_a_question_pending(cluster: Cluster, page) -> None:
    for worker in ("inference1", "inference2"):
        cluster.signal(worker, signal.SIGSTOP)
    try:
        page.locator("#cs-chat-widget textarea").fill("Do you ship kayaks to Iceland?")
        page.locator("#cs-chat-widget textarea").press("Enter")
        page.wait_for_function(
            "() => !JSON.parse(localStorage.getItem(Object.keys(localStorage)[0])).outbox.length"
        )
        # when: web1, which holds the widget's socket, drains
        cluster.signal("web1", signal.SIGTERM)
        assert cluster.wait_exit("web1", DRAIN_TIMEOUT_S + 10) == 0
        page.wait_for_function("() => window.__closes.length > 0")
    finally:
        for worker in ("inference1", "inference2"):
            cluster.signal(worker, signal.SIGCONT)
