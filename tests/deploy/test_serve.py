"""chatplatform.serve's own option: a drain timeout that is not a positive number is refused
at start with a clear message (the drain itself is tested in test_scale_out.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from chatplatform.serve import DEFAULT_DRAIN_TIMEOUT_S, split_drain_timeout


def test_the_drain_timeout_is_taken_out_of_daphnes_arguments() -> None:
    assert split_drain_timeout(["-p", "80", "--drain-timeout", "7", "app:x"]) == (
        7.0,
        ["-p", "80", "app:x"],
    )
    assert split_drain_timeout(["--drain-timeout=2.5", "app:x"]) == (2.5, ["app:x"])
    assert split_drain_timeout(["app:x"]) == (DEFAULT_DRAIN_TIMEOUT_S, ["app:x"])


@pytest.mark.parametrize("value", ["0", "-3", "soon", "nan"])
def test_a_bad_drain_timeout_stops_the_server_at_start(value: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "chatplatform.serve", "--drain-timeout", value,
         "chatplatform.asgi:application"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2
    assert "--drain-timeout" in run.stderr
