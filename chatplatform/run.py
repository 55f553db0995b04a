"""`python -m chatplatform.run`: bring the whole platform up on one machine and keep it up.

What it starts, in order: an embedded redis-server (unless REDIS_URL is set), database
migrations, the demo site (its allowed origins follow HOST and PORT), the admin account, the
offline chat model (built once, unless CHAT_MODEL is set), then a CPU-queue Celery worker, an
inference Celery worker, the periodic scheduler (Celery beat, one per box) and the ASGI server.

Every long-running process is a child of one `Supervisor` (chatplatform/supervisor.py): one that
dies is restarted with backoff and the restart is printed; the others keep serving (they
reconnect to a restarted Redis by themselves). Only Ctrl-C, SIGTERM or SIGHUP stops everything,
in reverse order. Before the platform is first healthy, a child that dies stops the start
instead (a bad setting or a busy port would otherwise restart forever).
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

from chatplatform.supervisor import Supervisor, die_with_parent, log_tail, spawn_logged
from embedded_redis import EmbeddedRedis

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ.get("PORT", "8000"))
HEALTH_TIMEOUT_S = 300  # first start loads two models on a 2-core box
SUPERVISE_EVERY_S = 0.5
# A reply to the health probe that is not JSON (Django's 400 page for a Host it does not
# serve, a proxy's error page) is "not healthy yet"; past this long it is printed once, since
# it usually means a setting, not a slow start.
NON_JSON_REPORT_AFTER_S = 10.0
# Listening on every address: this machine reaches the server through loopback.
WILDCARD_ADDRESSES = {"0.0.0.0": "127.0.0.1", "::": "::1"}
DEFAULT_ALLOWED_HOSTS = ["127.0.0.1", "localhost"]  # as chatplatform/settings/base.py
CPU_WORKER_THREADS = 4  # finalize tasks are short DB writes
INFERENCE_WORKER_THREADS = 64  # >= the engine's batch size: each thread waits on one request
# The offline model `make run` builds when CHAT_MODEL is not set: random weights.
OFFLINE_MODEL_NOTE = (
    "The chat model is the offline DEMO model: a tiny DeepSeek-architecture network with RANDOM\n"
    "  weights. Its answers are gibberish ('trouble trouble ...') and the widget marks them\n"
    "  'demo model'; FAQ answers (from the cache) are real. For real answers set CHAT_MODEL to\n"
    "  a checkpoint folder (README: 'GPU worker: model weights')."
)

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


def demo_origins_for(host: str, port: int) -> list[str]:
    """The page origins a browser on this machine has when it opens the demo shop."""
    hosts = [*DEFAULT_ALLOWED_HOSTS, url_host(probe_address(host))]
    if host not in WILDCARD_ADDRESSES:
        hosts.append(url_host(host))
    return [f"http://{name}:{port}" for name in dict.fromkeys(hosts)]


def child_commands(host: str, port: int) -> dict[str, list[str]]:
    """The supervised processes besides Redis, in start order, and their command lines."""
    celery = str(BIN / "celery")
    return {
        "worker-cpu": [celery, "-A", "chatplatform.celery_app", "worker", "-Q", "cpu",
                       "-n", "cpu@%h", "--pool", "threads", "-c", str(CPU_WORKER_THREADS),
                       "-l", "INFO"],
        "worker-inference": [celery, "-A", "inference.worker", "worker", "-Q", "inference",
                             "-n", "inference@%h", "--pool", "threads",
                             "-c", str(INFERENCE_WORKER_THREADS), "-l", "INFO"],
        # The periodic schedule (dashboard rollups) in a process of its own: a worker's
        # embedded beat (-B) outlived a killed worker, and the restarted worker began a second.
        "beat": [celery, "-A", "chatplatform.celery_app", "beat", "-l", "INFO"],
        "web": [str(BIN / "daphne"), "-b", host, "-p", str(port),
                "chatplatform.asgi:application"],
    }  # fmt: skip


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
        self.supervisor = Supervisor()
        self.redis: EmbeddedRedis | None = None
        self.var_dir = Path(os.environ.get("VAR_DIR", Path.cwd() / "var")).resolve()
        self.admin_login = ""
        self.offline_model = False

    @property
    def health_url(self) -> str:
        return f"{self.base_url}/healthz"

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

    def manage(self, *args: str) -> str:
        """Run a management command; its output is printed and returned."""
        done = subprocess.run(
            [PYTHON, "manage.py", *args], check=True, stdout=subprocess.PIPE, text=True
        )
        print(done.stdout, end="", flush=True)
        return done.stdout

    def log_path(self, name: str) -> Path:
        return self.var_dir / "logs" / f"{name}.log"

    def supervise(self, name: str, args: list[str]) -> None:
        log_path = self.log_path(name)
        print(f"  starting {name} (log: {log_path})", flush=True)
        self.supervisor.add(name, lambda: spawn_logged(args, log_path), log_path)

    def supervise_redis(self) -> None:
        port = int(os.environ.get("EMBEDDED_REDIS_PORT", "6390"))
        redis = self.redis = EmbeddedRedis(port=port, data_dir=self.var_dir / "redis")

        def start() -> subprocess.Popen[bytes]:
            # The same port and data: the append-only file brings queued tasks back.
            redis.start(start_new_session=True, preexec_fn=die_with_parent)
            assert redis.process is not None
            return redis.process

        self.supervisor.add("redis-server", start, redis.data_dir / "redis.log")
        os.environ["REDIS_URL"] = redis.url
        print(f"embedded redis-server on {redis.url}", flush=True)

    def start(self) -> None:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatplatform.settings.local")
        self.allow_own_host()  # before any child reads the settings
        if not os.environ.get("REDIS_URL"):
            self.supervise_redis()
        self.manage("check", "--fail-level", "ERROR")
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("load_demo_site", "--origins", *demo_origins_for(self.host, self.port))
        self.admin_login = self.manage("ensure_admin").strip()
        if not os.environ.get("CHAT_MODEL"):
            model_dir = self.var_dir / "models" / "tiny-deepseek"
            subprocess.run(
                [PYTHON, "-m", "inference.build_model", "--out", str(model_dir)], check=True
            )
            os.environ["CHAT_MODEL"] = str(model_dir)
            self.offline_model = True
        for name, args in child_commands(self.host, self.port).items():
            self.supervise(name, args)

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
        """Before the first healthy moment a death is a failed start, not a crash."""
        for child in self.supervisor.exited():
            assert child.process is not None
            tail = "\n".join(f"    {line}" for line in log_tail(child.log_path, 15))
            raise RuntimeError(
                f"{child.name} exited with {child.process.returncode} while starting; "
                f"see {child.log_path}:\n{tail}"
            )

    def banner(self, health: dict[str, Any]) -> str:
        base = self.base_url
        lines = [
            "",
            f"platform up: {json.dumps(health['status'])}",
            f"  demo shop with the chat widget: {base}/",
            f"  admin:                          {base}/admin/",
            f"                                  {self.admin_login}",
            f"  dashboard:                      {base}/dashboard/",
            f"  agent inbox (human handoffs):   {base}/agents/",
            f"  semantic cache pages:           {base}/cache/",
            f"  health:                         {base}/healthz",
        ]
        if self.offline_model:
            lines += ["", OFFLINE_MODEL_NOTE]
        lines += [
            "",
            "A part that dies is restarted (said here); Ctrl-C stops everything.",
            f"Logs: {self.var_dir / 'logs'}",
            "",
        ]
        return "\n".join(lines)

    def run_forever(self) -> None:
        while True:
            self.supervisor.check()
            time.sleep(SUPERVISE_EVERY_S)

    def stop(self) -> None:
        self.supervisor.stop()


def _stop_on_signal(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    platform = Platform()
    # SIGTERM (kill) and SIGHUP (the terminal closed) stop everything like Ctrl-C. SIGINT too,
    # explicitly: a shell starts a background job with SIGINT ignored, and `kill -INT` must
    # still stop it.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _stop_on_signal)
    try:
        platform.start()
        health = platform.wait_healthy()
        print(platform.banner(health), flush=True)
        platform.run_forever()
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        return 0
    except (RuntimeError, subprocess.CalledProcessError) as error:
        print(f"\nerror: {error}", file=sys.stderr)
        return 1
    finally:
        # Stopping takes a few seconds (workers finish what they run): a second Ctrl-C or
        # SIGTERM must not abandon it half-way and leave children running.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        platform.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
