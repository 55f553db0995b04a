"""The local platform survives its parts dying (issue: one dead process stopped `make run`).

`python -m chatplatform.run` runs as a user starts it (embedded Redis, SQLite, the offline
model), with a customer that behaves like the widget: it resumes its conversation after any
drop and resends what was not acknowledged. Each child is SIGKILLed in turn while a question
is being answered: the inference worker, the CPU worker, the ASGI server, then the embedded
redis-server (a Redis restart). Each comes back (the supervisor says so), the customer resumes,
and in the end every acknowledged question has exactly one outcome (its answer, or an error
that says it failed or timed out), none twice, and the database agrees with what the customer
saw. Killing the CPU worker leaves exactly one scheduler (beat) running.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import ClientConnection, connect

from chatplatform.chat.store import reply_id_for
from embedded_redis import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 300
# What the supervisor runs, and how to recognise each child's command line.
CHILDREN = {
    "worker-inference": lambda args: "inference.worker" in args,
    "worker-cpu": lambda args: "chatplatform.celery_app" in args and "worker" in args,
    "beat": lambda args: "chatplatform.celery_app" in args and "beat" in args,
    "web": lambda args: any(a.endswith("daphne") for a in args),
    "redis-server": lambda args: bool(args) and "redis-server" in args[0],
}
VICTIMS = ["worker-inference", "worker-cpu", "web", "redis-server"]
# Answer timeout (60 s) + the wait for an answer on its way (45 s) + a resume's reconnects.
SETTLE_S = 150
# A finalize task held by a killed CPU worker comes back after the CPU app's visibility timeout
# (30 s) and one sweep (7 s, chatplatform/settings/base.py): the stored row agrees by then.
FINALIZE_REDELIVERED_WITHIN_S = 45


def command_line(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def processes() -> Iterator[tuple[int, Path]]:
    """(pid, /proc entry) of every process on the machine."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            yield int(entry.name), entry


def children_of(parent: int) -> dict[str, int]:
    found: dict[str, int] = {}
    for pid, entry in processes():
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != parent:
            continue
        args = command_line(pid)
        for name, matches in CHILDREN.items():
            if matches(args):
                found[name] = pid
    return found


def processes_with(var_dir: Path, matches) -> list[int]:
    """Processes anywhere (orphans too) started for this platform (its VAR_DIR) that match."""
    pids = []
    for pid, entry in processes():
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"VAR_DIR={var_dir}".encode() in environ and matches(command_line(pid)):
            pids.append(pid)
    return pids


@dataclass
class Customer:
    """A widget-like client: resumes after any drop, resends what was not acknowledged."""

    url: str
    origin: str
    site_key: str
    conversation_id: str | None = None
    socket: ClientConnection | None = None
    outbox: dict[str, str] = field(default_factory=dict)  # client id -> text, not acked
    acked: dict[str, str] = field(default_factory=dict)  # client id -> question id
    outcomes: dict[str, set[tuple[str, ...]]] = field(default_factory=dict)
    reconnects: int = 0

    def ask(self, client_message_id: str, text: str) -> None:
        self.outbox[client_message_id] = text
        self._send_outbox()

    def pump(self, seconds: float) -> None:
        """Receive (and reconnect) for `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.socket is None:
                self._connect(deadline)
                continue
            try:
                frame = json.loads(self.socket.recv(timeout=max(0.05, deadline - time.monotonic())))
            except TimeoutError:
                continue
            except (ConnectionClosed, OSError):
                self._drop()
                continue
            self._handle(frame)

    def pump_until(self, condition, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline:
            self.pump(0.5)
        return condition()

    def answered(self, client_message_id: str) -> bool:
        question = self.acked.get(client_message_id)
        return question is not None and bool(self.outcomes.get(question))

    def unresolved(self) -> list[str]:
        return [cid for cid in self.acked if not self.answered(cid)]

    def _connect(self, deadline: float) -> None:
        try:
            socket = connect(self.url, origin=self.origin, open_timeout=5, close_timeout=1)  # noqa: SIM115
            hello = {"type": "hello", "v": 1, "site_key": self.site_key,
                     "conversation_id": self.conversation_id, "visitor_id": "v_chaos"}  # fmt: skip
            socket.send(json.dumps(hello))
            while True:
                frame = json.loads(socket.recv(timeout=10))
                if frame["type"] == "welcome":
                    break
                if frame["type"] == "error":  # hello refused (say Redis still coming back)
                    raise ConnectionError(frame["code"])
        except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError, ConnectionError):
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            return
        assert self.conversation_id in (None, frame["conversation_id"]), "conversation lost"
        self.conversation_id = frame["conversation_id"]
        self.socket = socket
        self.reconnects += 1
        self._send_outbox()

    def _drop(self) -> None:
        if self.socket is not None:
            self.socket.close()
        self.socket = None

    def _send_outbox(self) -> None:
        if self.socket is None:
            return
        for client_message_id, text in list(self.outbox.items()):
            frame = {"type": "message", "client_message_id": client_message_id, "text": text}
            try:
                self.socket.send(json.dumps(frame))
            except (ConnectionClosed, OSError):
                self._drop()
                return

    def _handle(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "ack":
            self.outbox.pop(frame["client_message_id"], None)
            self.acked[frame["client_message_id"]] = frame["message_id"]
        elif kind in ("answer", "answer.end"):
            # The same answer may come twice (streamed, then whole on a resume): one outcome.
            outcome = ("answer", frame["message_id"], frame["text"])
            self.outcomes.setdefault(frame["reply_to"], set()).add(outcome)
        elif kind == "error" and frame.get("reply_to"):
            self.outcomes.setdefault(frame["reply_to"], set()).add(("error", frame["code"]))
        # an error with `ref` and no `reply_to` refused the message: it stays in the outbox


@dataclass
class RunningPlatform:
    process: subprocess.Popen[bytes]
    log: Path
    var_dir: Path
    port: int

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float, after: int = 0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the run command exited:\n{self.output()[-4000:]}"
            if text in self.output()[after:]:
                return True
            time.sleep(0.2)
        return False


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inference.build_model import build

    return build(tmp_path_factory.mktemp("models") / "tiny-deepseek")


@pytest.fixture
def running(tmp_path: Path, tiny_model_dir: Path):
    port, redis_port = free_port(), free_port()
    var_dir = tmp_path / "var"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("REDIS_URL", "TEST_REDIS_URL", "DATABASE_URL", "ALLOWED_HOSTS")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="chatplatform.settings.local",
        PORT=str(port),
        EMBEDDED_REDIS_PORT=str(redis_port),
        VAR_DIR=str(var_dir),
        CHAT_MODEL=str(tiny_model_dir),
        ADMIN_PASSWORD="chaos-test-password",
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "chatplatform.run"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    platform = RunningPlatform(process, log, var_dir, port)
    try:
        assert platform.wait_for("platform up", START_TIMEOUT_S), platform.output()[-4000:]
        yield platform
    finally:
        process.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def stored_reply(var_dir: Path, question_id: str) -> tuple[str, str, bool] | None:
    """(state, text, delivered) of a question's model answer row, as the database has it."""
    with sqlite3.connect(var_dir / "db.sqlite3", timeout=30) as db:
        row = db.execute(
            "SELECT state, text, delivered FROM conversations_message WHERE id = ?",
            (uuid.UUID(reply_id_for(question_id)).hex,),
        ).fetchone()
    return None if row is None else (row[0], row[1], bool(row[2]))


def test_every_child_killed_in_turn_comes_back_and_no_answer_is_lost_or_doubled(
    running: RunningPlatform,
) -> None:
    # given the demo shop's widget, as a customer on its page
    site_key = re.search(r"widget key (pk_[A-Za-z0-9_-]+)", running.output())
    assert site_key is not None
    origin = f"http://127.0.0.1:{running.port}"
    customer = Customer(f"ws://127.0.0.1:{running.port}/ws/chat/", origin, site_key.group(1))
    customer.pump(2)
    assert customer.conversation_id is not None
    for round_number, victim in enumerate(VICTIMS):
        # when a question is being answered ...
        cid = f"q{round_number}"
        customer.ask(cid, f"Can my parrot ride in delivery van number {round_number}?")
        assert customer.pump_until(lambda c=cid: c in customer.acked, 30), customer
        pids = children_of(running.process.pid)
        said_so_far = len(running.output())
        # ... and the victim is SIGKILLed
        os.kill(pids[victim], signal.SIGKILL)
        # then the supervisor says so and starts it again
        assert running.wait_for(f"! {victim} (pid {pids[victim]}) exited with signal SIGKILL",
                                30, after=said_so_far), running.output()[-3000:]  # fmt: skip
        assert running.wait_for(f"  {victim} restarted", 60, after=said_so_far)
        # and the customer goes on (a second question, asked while it comes back)
        customer.ask(f"{cid}-after", f"Is delivery van number {round_number} insured?")
        if victim == "worker-cpu":
            # exactly one scheduler, and it is not the worker's child
            beats = processes_with(running.var_dir, CHILDREN["beat"])
            assert beats == [children_of(running.process.pid)["beat"]]
    # then every acknowledged question ends with exactly one outcome, none twice
    assert customer.pump_until(lambda: not customer.unresolved() and not customer.outbox,
                               SETTLE_S), (customer.unresolved(), customer.outbox)  # fmt: skip
    customer.pump(5)  # room for a contradicting second outcome to show
    assert len(customer.acked) == 2 * len(VICTIMS)
    for cid, question_id in customer.acked.items():
        outcomes = customer.outcomes[question_id]
        assert len(outcomes) == 1, (cid, outcomes)

    # and the database agrees with what the customer saw: at once, or once the finalize task
    # that a killed CPU worker held is delivered again (its visibility timeout plus a sweep)
    def disagreements() -> list[tuple[Any, Any]]:
        wrong = []
        for question_id in customer.acked.values():
            [outcome] = customer.outcomes[question_id]
            row = stored_reply(running.var_dir, question_id)
            if outcome[0] == "answer":
                agrees = row == ("done", outcome[2], True)
            else:
                agrees = row is not None and row[0] == "failed" and row[2]
            if not agrees:
                wrong.append((outcome, row))
        return wrong

    deadline = time.monotonic() + FINALIZE_REDELIVERED_WITHIN_S
    while disagreements() and time.monotonic() < deadline:
        time.sleep(1)
    assert not disagreements(), disagreements()
    kinds = sorted(next(iter(customer.outcomes[q]))[0] for q in customer.acked.values())
    print(f"outcomes: {kinds}; reconnects: {customer.reconnects}")  # shown with -s
    assert customer.reconnects >= 3  # the web and Redis kills dropped its socket
    assert "error:" not in running.output()
