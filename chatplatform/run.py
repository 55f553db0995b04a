"""`python -m chatplatform.run`: bring the whole platform up on one machine.

What it starts, in order: an embedded redis-server (unless REDIS_URL is set), database
migrations, the demo site, the admin account, the offline chat model (built once, unless
CHAT_MODEL is set), a CPU-queue Celery worker, an inference Celery worker and the ASGI server.
Ctrl-C (or SIGTERM) stops everything it started, in reverse order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from chatplatform.embedded_redis import EmbeddedRedis

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ.get("PORT", "8000"))
HEALTH_TIMEOUT_S = 300  # first start loads two models on a 2-core box
CPU_WORKER_THREADS = 4  # finalize tasks are short DB writes
INFERENCE_WORKER_THREADS = 64  # >= the engine's batch size: each thread waits on one request

PYTHON = sys.executable
BIN = Path(PYTHON).parent


class Platform:
    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.redis: EmbeddedRedis | None = None
        self.var_dir = Path(os.environ.get("VAR_DIR", Path.cwd() / "var")).resolve()

    def manage(self, *args: str) -> None:
        subprocess.run([PYTHON, "manage.py", *args], check=True)

    def spawn(self, name: str, args: list[str]) -> None:
        log_path = self.var_dir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the child
        print(f"  starting {name} (log: {log_path})")
        child = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.children.append((name, child))

    def start(self) -> None:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatplatform.settings.local")
        if not os.environ.get("REDIS_URL"):
            port = int(os.environ.get("EMBEDDED_REDIS_PORT", "6390"))
            self.redis = EmbeddedRedis(port=port, data_dir=self.var_dir / "redis")
            os.environ["REDIS_URL"] = self.redis.start()
            print(f"embedded redis-server on {os.environ['REDIS_URL']}")
        self.manage("check", "--fail-level", "ERROR")
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("load_demo_site")
        self.manage("ensure_admin")
        if not os.environ.get("CHAT_MODEL"):
            model_dir = self.var_dir / "models" / "tiny-deepseek"
            subprocess.run(
                [PYTHON, "-m", "inference.build_model", "--out", str(model_dir)], check=True
            )
            os.environ["CHAT_MODEL"] = str(model_dir)
        celery = str(BIN / "celery")
        # -B: the CPU worker also runs the periodic schedule (dashboard rollups); one per box.
        self.spawn("worker-cpu", [celery, "-A", "chatplatform.celery_app", "worker", "-Q", "cpu",
                                  "-n", "cpu@%h", "--pool", "threads", "-B",
                                  "-c", str(CPU_WORKER_THREADS), "-l", "INFO"])  # fmt: skip
        self.spawn("worker-inference", [celery, "-A", "inference.worker", "worker",
                                        "-Q", "inference", "-n", "inference@%h",
                                        "--pool", "threads", "-c", str(INFERENCE_WORKER_THREADS),
                                        "-l", "INFO"])  # fmt: skip
        self.spawn("web", [str(BIN / "daphne"), "-b", HOST, "-p", str(PORT),
                           "chatplatform.asgi:application"])  # fmt: skip

    def wait_healthy(self) -> dict:
        url = f"http://{HOST}:{PORT}/healthz"
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        last: dict = {}
        while time.monotonic() < deadline:
            self.raise_if_a_child_died()
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    return json.load(response)
            except urllib.error.HTTPError as error:  # 503: some part not up yet
                last = json.load(error)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(1)
        raise RuntimeError(f"platform not healthy after {HEALTH_TIMEOUT_S} s: {last}")

    def raise_if_a_child_died(self) -> None:
        for name, child in self.children:
            if child.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {child.returncode}; see var/logs/{name}.log"
                )

    def stop(self) -> None:
        for name, child in reversed(self.children):
            if child.poll() is None:
                print(f"  stopping {name}")
                child.terminate()
        for _, child in self.children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
        if self.redis is not None:
            print("  stopping embedded redis-server")
            self.redis.stop()


def main() -> int:
    platform = Platform()
    # SIGTERM behaves like Ctrl-C so `kill` also stops every child.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        platform.start()
        health = platform.wait_healthy()
        base = f"http://{HOST}:{PORT}"
        print(f"\nplatform up: {json.dumps(health['status'])}")
        print(f"  demo shop with the chat widget: {base}/")
        print(f"  admin:                          {base}/admin/   (credentials above)")
        print(f"  dashboard:                      {base}/dashboard/")
        print(f"  health:                         {base}/healthz")
        print("Ctrl-C stops everything.\n", flush=True)
        while True:
            platform.raise_if_a_child_died()
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nstopping...")
        return 0
    except (RuntimeError, subprocess.CalledProcessError) as error:
        print(f"\nerror: {error}", file=sys.stderr)
        return 1
    finally:
        platform.stop()


if __name__ == "__main__":
    sys.exit(main())
