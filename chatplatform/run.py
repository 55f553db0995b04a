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
from typing import Any

from embedded_redis import EmbeddedRedis

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ.get("PORT", "8000"))
HEALTH_TIMEOUT_S = 300  # first start loads two models on a 2-core box
# A reply to the health probe that is not JSON (Django's 400 page for a Host it does not
# serve, a proxy's error page) is "not healthy yet"; past this long it is printed once, since
# it usually means a setting, not a slow start.
NON_JSON_REPORT_AFTER_S = 10.0
# Listening on every address: this machine reaches the server through loopback.
WILDCARD_ADDRESSES = {"0.0.0.0": "127.0.0.1", "::": "::1"}
DEFAULT_ALLOWED_HOSTS = ["127.0.0.1", "localhost"]  # as chatplatform/settings/base.py
CPU_WORKER_THREADS = 4  # finalize tasks are short DB writes
INFERENCE_WORKER_THREADS = 64  # >= the engine's batch size: each thread waits on one request

PYTHON = sys.executable
BIN = Path(PYTHON).parent


def url_host(address: str) -> str:
    """An address as written in a URL or a Host header (IPv6 in brackets)."""
    return f"[{address}]" if ":" in address else address


def probe_address(host: str) -> str:
    """Where the health probe connects: the bound address, or loopback for a wildcard."""
    return WILDCARD_ADDRESSES.get(host, host)


def allowed_hosts_for(host: str) -> list[str]:
    """ALLOWED_HOSTS for a server bound to `host` when none is set: the defaults, the bound
    address and the address the probe uses (Django answers 400 to any other Host header)."""
    hosts = [*DEFAULT_ALLOWED_HOSTS, url_host(host), url_host(probe_address(host))]
    return list(dict.fromkeys(hosts))  # without repeats, in order


def parse_health(body: bytes) -> dict[str, Any] | None:
    """The /healthz JSON, or None when the reply is not it (not healthy yet)."""
    try:
        health = json.loads(body)
    except ValueError:  # JSONDecodeError and undecodable bytes
        return None
    return health if isinstance(health, dict) and "status" in health else None


class Platform:
    def __init__(self, host: str = HOST, port: int = PORT) -> None:
        self.host = host
        self.port = port
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.redis: EmbeddedRedis | None = None
        self.var_dir = Path(os.environ.get("VAR_DIR", Path.cwd() / "var")).resolve()

    @property
    def health_url(self) -> str:
        return f"http://{url_host(probe_address(self.host))}:{self.port}/healthz"

    @property
    def base_url(self) -> str:
        """Where a browser on this machine opens the platform."""
        return f"http://{url_host(probe_address(self.host))}:{self.port}"

    def allow_own_host(self) -> None:
        """Let Django serve the bound address and the probe, unless ALLOWED_HOSTS is set."""
        if "ALLOWED_HOSTS" in os.environ:
            return
        os.environ["ALLOWED_HOSTS"] = ",".join(allowed_hosts_for(self.host))
        if self.host in WILDCARD_ADDRESSES:
            print(
                f"listening on every address; ALLOWED_HOSTS={os.environ['ALLOWED_HOSTS']} "
                "(set ALLOWED_HOSTS to serve other names, e.g. this machine's)"
            )

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
        self.allow_own_host()  # before any child reads the settings
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
        self.spawn("web", [str(BIN / "daphne"), "-b", self.host, "-p", str(self.port),
                           "chatplatform.asgi:application"])  # fmt: skip

    def wait_healthy(self, timeout_s: float = HEALTH_TIMEOUT_S) -> dict[str, Any]:
        """The /healthz JSON once it says "ok"; raises RuntimeError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        non_json_since: float | None = None
        reported = False
        while time.monotonic() < deadline:
            self.raise_if_a_child_died()
            status, body = self._probe()
            health = parse_health(body) if status is not None else None
            if health is not None and status == 200:
                return health
            if health is not None:  # 503: some part is not up yet
                last, non_json_since = json.dumps(health), None
            elif status is not None:
                text = body.decode(errors="replace")[:500]
                last = f"HTTP {status}, not the health JSON: {text}"
                non_json_since = non_json_since or time.monotonic()
                if not reported and time.monotonic() - non_json_since >= NON_JSON_REPORT_AFTER_S:
                    print(f"  {self.health_url} keeps answering {last}", file=sys.stderr)
                    reported = True
            time.sleep(1)
        raise RuntimeError(f"platform not healthy after {timeout_s:.0f} s: {last}")

    def _probe(self) -> tuple[int | None, bytes]:
        """(HTTP status, body) of one health request; (None, b"") when nothing answers."""
        try:
            with urllib.request.urlopen(self.health_url, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:  # 503 while starting; 400 for a bad Host
            return error.code, error.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None, b""

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
        base = platform.base_url
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
