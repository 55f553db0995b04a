"""The real platform as subprocesses for end-to-end and browser tests.

Exactly the processes the run command starts: daphne (ASGI), a CPU-queue Celery worker and an
inference Celery worker with the offline model, all on the session's redis-server and the
test database file. Started once per test session (see the `platform` fixture).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from chatplatform.supervisor import die_with_parent
from embedded_redis import free_port

BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 240  # two models load on a shared 2-core box
CPU_WORKER_THREADS = 4
INFERENCE_WORKER_THREADS = 16  # the tests never run more than a few answers at once


class ChatPlatform:
    def __init__(self, database_path: str, redis_url: str, var_dir: Path, model_dir: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws/chat/"
        self.log_dir = var_dir / "logs" / "chat-tests"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "chatplatform.settings.test",
            "DATABASE_URL": f"sqlite:///{database_path}",
            "REDIS_URL": redis_url,
            "TEST_REDIS_URL": redis_url,
            "VAR_DIR": str(var_dir),
            "CHAT_MODEL": str(model_dir),
            "INFERENCE_VISIBILITY_TIMEOUT": "30",
            "CHAT_CANCEL_GRACE_S": "30",
            # Webhook retries in a fraction of a second (tests/chat/test_agents_notifications.py).
            "AGENT_WEBHOOK_RETRY_BASE_S": "0.3",
            "AGENT_WEBHOOK_MAX_ATTEMPTS": "3",
            "PYTHONUNBUFFERED": "1",
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the child
        self.processes[name] = subprocess.Popen(
            args,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # A test session that dies (a timeout, a kill) must not leave the platform running.
            preexec_fn=die_with_parent,
        )

    def start_web(self) -> None:
        self._spawn(
            "web",
            [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(self.port),
             "chatplatform.asgi:application"],
        )  # fmt: skip

    def start(self) -> None:
        celery = str(BIN / "celery")
        self._spawn(
            "worker-cpu",
            [celery, "-A", "chatplatform.celery_app", "worker", "-Q", "cpu", "-n", "cpu@%h",
             "--pool", "threads", "-c", str(CPU_WORKER_THREADS), "-l", "INFO"],
        )  # fmt: skip
        self._spawn(
            "worker-inference",
            [celery, "-A", "inference.worker", "worker", "-Q", "inference",
             "-n", "inference@%h", "--pool", "threads", "-c", str(INFERENCE_WORKER_THREADS),
             "-l", "INFO"],
        )  # fmt: skip
        self.start_web()
        self.wait_healthy()

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited; see {self.log_dir / (name + '.log')}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=5) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as error:
                last = error.read().decode(errors="replace")
            except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
                last = str(error)
            time.sleep(0.5)
        raise RuntimeError(f"platform not healthy after {READY_TIMEOUT_S} s: {last}")

    def kill_web(self) -> None:
        """Drop every socket at once, as a crashed or redeployed web server does."""
        process = self.processes.pop("web")
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def pause(self, name: str) -> None:
        """Freeze a process (SIGSTOP): e.g. hold the model back while the customer is away."""
        os.killpg(self.processes[name].pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        os.killpg(self.processes[name].pid, signal.SIGCONT)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
