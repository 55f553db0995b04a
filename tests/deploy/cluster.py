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
import sys
import time
from pathlib import Path

from embedded_redis import free_port
from tests.chat.platform import ChatPlatform

BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 300  # three model-free and two model processes start on a shared 2-core box
INFERENCE_THREADS = 8
DRAIN_TIMEOUT_S = 10


class Cluster(ChatPlatform):
    """ChatPlatform's environment and process handling, with several web processes (one per
    name in `ports`) and two inference workers."""

    def __init__(
        self, database_path: str, redis_url: str, var_dir: Path, model_dir: Path, webs: int = 2
    ) -> None:
        super().__init__(database_path, redis_url, var_dir, model_dir)
        self.redis_url = redis_url
        self.log_dir = var_dir / "logs" / "deploy-tests"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.host = socket.gethostname()
        self.ports = {f"web{i}": free_port() for i in range(1, webs + 1)}
        # A killed worker's task comes back within ~12 s (the scale-out test hands one over).
        self.env.update({"INFERENCE_VISIBILITY_TIMEOUT": "10", "CHAT_CANCEL_GRACE_S": "60"})

    def spawn(self, name: str, args: list[str]) -> None:
        with open(self.log_dir / f"{name}.log", "ab") as log:
            log.write(f"\n--- {name} started at {time.strftime('%H:%M:%S')} ---\n".encode())
        self._spawn(name, args)

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

    def socket_url(self, name: str) -> str:
        return f"ws://127.0.0.1:{self.ports[name]}/ws/chat/"

    def wait_ready(self, web: str) -> None:
        """Until `web` answers /healthz with 200 (database, Redis and both queues' workers)."""
        self.base_url = f"http://127.0.0.1:{self.ports[web]}"
        self.wait_healthy()

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
        super().stop()

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
