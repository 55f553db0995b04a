"""Several web processes and inference workers on one machine, as a scaled-out deployment runs
them: each web process is `python -m chatplatform.serve` (daphne that drains on SIGTERM, the
images' command) on its own port; one CPU worker; inference workers with their own node names.

All of them share the test database file and a Redis database of their own (db 1 of the
session's redis-server), so the session's other platform (tests/chat) never takes their tasks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from embedded_redis import free_port

BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 300  # three model-free and two model processes start on a shared 2-core box
INFERENCE_THREADS = 8
DRAIN_TIMEOUT_S = 10


class Cluster:
    def __init__(
        self, database_path: str, redis_url: str, var_dir: Path, model_dir: Path, webs: int = 2
    ) -> None:
        self.redis_url = redis_url
        self.log_dir = var_dir / "logs" / "deploy-tests"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.host = socket.gethostname()
        self.ports = {f"web{i}": free_port() for i in range(1, webs + 1)}
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "chatplatform.settings.test",
            "DATABASE_URL": f"sqlite:///{database_path}",
            # The test settings take their Redis from TEST_REDIS_URL; the workers read REDIS_URL.
            "TEST_REDIS_URL": redis_url,
            "REDIS_URL": redis_url,
            "VAR_DIR": str(var_dir),
            "CHAT_MODEL": str(model_dir),
            "INFERENCE_VISIBILITY_TIMEOUT": "10",
            "CHAT_CANCEL_GRACE_S": "60",
            "PYTHONUNBUFFERED": "1",
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    # --- processes ---------------------------------------------------------------------------

    def spawn(self, name: str, args: list[str]) -> None:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the child
        log.write(f"\n--- {name} started at {time.strftime('%H:%M:%S')} ---\n".encode())
        log.flush()
        self.processes[name] = subprocess.Popen(
            args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start_web(self, name: str) -> None:
        self.spawn(
            name,
            [sys.executable, "-m", "chatplatform.serve", "-b", "127.0.0.1",
             "-p", str(self.ports[name]), "--drain-timeout", str(DRAIN_TIMEOUT_S),
             "chatplatform.asgi:application"],
        )  # fmt: skip

    def start_inference(self, name: str) -> None:
        self.spawn(
            name,
            [str(BIN / "celery"), "-A", "inference.worker", "worker", "-Q", "inference",
             "-n", f"inference@{name}.%h", "--pool", "threads", "-c", str(INFERENCE_THREADS),
             "-l", "INFO"],
        )  # fmt: skip

    def start(self) -> None:
        self.spawn(
            "worker-cpu",
            [str(BIN / "celery"), "-A", "chatplatform.celery_app", "worker", "-Q", "cpu",
             "-n", "cpu@deploy-tests.%h", "--pool", "threads", "-c", "4", "-l", "INFO"],
        )  # fmt: skip
        for name in ("inference1", "inference2"):
            self.start_inference(name)
        for name in self.ports:
            self.start_web(name)
        for name in self.ports:
            self.wait_ready(name)
        for name in ("inference1", "inference2"):
            self.wait_worker(name)

    def node(self, name: str) -> str:
        """The Celery node name of an inference worker."""
        return f"inference@{name}.{self.host}"

    def ws_url(self, name: str) -> str:
        return f"ws://127.0.0.1:{self.ports[name]}/ws/chat/"

    def wait_ready(self, web: str) -> None:
        """Until `web` answers /healthz with 200 (database, Redis and both queues' workers)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited; see {self.log_dir / (name + '.log')}")
            try:
                url = f"http://127.0.0.1:{self.ports[web]}/healthz"
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as error:
                last = error.read().decode(errors="replace")
            except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
                last = str(error)
            time.sleep(0.5)
        raise RuntimeError(f"{web} not healthy after {READY_TIMEOUT_S} s: {last}")

    def wait_worker(self, name: str) -> None:
        """Until inference worker `name` answers a ping (its model is loaded)."""
        from celery import Celery

        app = Celery(broker=self.redis_url)
        deadline = time.monotonic() + READY_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if self.processes[name].poll() is not None:
                    raise RuntimeError(f"{name} exited; see {self.log_dir / (name + '.log')}")
                if app.control.ping(destination=[self.node(name)], timeout=1):
                    return
        finally:
            app.close()
        raise RuntimeError(f"{name} did not answer a ping after {READY_TIMEOUT_S} s")

    def signal(self, name: str, signum: int) -> None:
        os.killpg(self.processes[name].pid, signum)

    def wait_exit(self, name: str, timeout: float) -> int:
        """The exit code of a process told to stop; it is forgotten (restart it by name)."""
        code = self.processes[name].wait(timeout=timeout)
        del self.processes[name]
        return code

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGCONT)  # a paused one must be able to exit
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    # --- the inference queue ----------------------------------------------------------------

    def only_consumer(self, name: str) -> None:
        """Let only inference worker `name` take tasks from the queue (the others stop)."""
        self._control("add_consumer", [self.node(name)])
        others = [self.node(n) for n in ("inference1", "inference2") if n != name]
        others = [node for node in others if self._alive(node)]
        if others:
            self._control("cancel_consumer", others)

    def all_consume(self) -> None:
        nodes = [self.node(n) for n in ("inference1", "inference2") if n in self.processes]
        self._control("add_consumer", nodes)

    def _alive(self, node: str) -> bool:
        return any(node.endswith(name + "." + self.host) for name in self.processes)

    def _control(self, command: str, destination: list[str]) -> None:
        from celery import Celery

        app = Celery(broker=self.redis_url)
        try:
            replies = getattr(app.control, command)(
                "inference", destination=destination, reply=True, timeout=10
            )
        finally:
            app.close()
        answered = {name for reply in replies for name in reply}
        if answered != set(destination):
            raise RuntimeError(f"{command}: only {answered} of {destination} answered")
