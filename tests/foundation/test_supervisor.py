"""The run command's supervisor on real processes: a child that dies is restarted with backoff
and the restart is said; what a dead child left in its process group goes with it; stopping
ends every child, the last started first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatplatform import supervisor as supervisor_module
from chatplatform.run import child_commands
from chatplatform.supervisor import Supervisor, spawn_logged

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"]
# A child that leaves a grandchild in its process group, as `celery worker -B` left its beat.
PARENT_OF_A_LEFTOVER = [
    sys.executable,
    "-c",
    "import subprocess, sys, time; "
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
    "print(p.pid, flush=True); time.sleep(600)",
]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def said() -> list[str]:
    return []


@pytest.fixture
def supervisor(said: list[str]) -> Iterator[Supervisor]:
    supervisor = Supervisor(say=said.append)
    yield supervisor
    supervisor.stop()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def wait_for(condition, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def first_line(path: Path) -> str:
    assert wait_for(lambda: path.exists() and path.read_text().strip() != "")
    return path.read_text().split()[0]


def test_a_killed_child_is_restarted_and_the_restart_is_said(
    supervisor: Supervisor, said: list[str], tmp_path: Path
) -> None:
    # given a supervised child
    log = tmp_path / "worker.log"
    child = supervisor.add("worker", lambda: spawn_logged(SLEEPER, log), log)
    first_pid = child.pid
    assert first_pid is not None and first_line(log) == "up"
    # when it is killed
    os.kill(first_pid, signal.SIGKILL)
    # then it is started again after the first delay, and both events are said
    assert wait_for(lambda: (supervisor.check(), child.pid != first_pid and child.running())[1])
    assert child.restarts == 1
    assert child.history == [-signal.SIGKILL]
    assert said[0].startswith(f"! worker (pid {first_pid}) exited with signal SIGKILL")
    assert "restarting it in 1 s" in said[0] and str(log) in said[0]
    assert any(line.strip() == "worker| up" for line in said)  # the log's last lines
    assert said[-1] == f"  worker restarted (pid {child.pid}; restart 1)"


def test_restart_delay_doubles_while_it_keeps_failing_and_resets_once_stable(
    tmp_path: Path, said: list[str]
) -> None:
    # given a child that exits at once, on a clock the test moves
    clock = FakeClock()
    supervisor = Supervisor(say=said.append, clock=clock)
    failing = [sys.executable, "-c", "raise SystemExit(3)"]
    child = supervisor.add("flaky", lambda: spawn_logged(failing, tmp_path / "f.log"), None)
    delays = []
    try:
        for _ in range(7):
            assert child.process is not None
            child.process.wait(timeout=20)
            supervisor.check()  # notices the exit, schedules the restart
            assert child.restart_at is not None
            delays.append(child.restart_at - clock.now)
            clock.now = child.restart_at
            supervisor.check()  # restarts it
        # then: 1, 2, 4 ... capped at 30 s
        assert delays == [1, 2, 4, 8, 16, 30, 30]
        assert "exited with status 3" in said[0]
        # when it then stays up for a minute before failing again, the delay is back to 1 s
        assert child.process is not None
        child.process.wait(timeout=20)
        clock.now += supervisor_module.STABLE_AFTER_S
        supervisor.check()
        assert child.restart_at == clock.now + 1
    finally:
        supervisor.stop()


def test_a_restart_clears_what_the_dead_child_left_behind(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    # given a child whose own child (say an embedded beat) runs in its process group
    log = tmp_path / "parent.log"
    child = supervisor.add("worker", lambda: spawn_logged(PARENT_OF_A_LEFTOVER, log), log)
    leftover = int(first_line(log))
    assert child.pid is not None and alive(leftover)
    # when the child is SIGKILLed, its own child survives it for now (reparented)
    os.kill(child.pid, signal.SIGKILL)
    assert wait_for(lambda: not child.running())
    assert alive(leftover)
    # then the restart ends it first, so no second copy ever runs beside the new one
    assert wait_for(lambda: (supervisor.check(), child.restarts == 1)[1])
    assert wait_for(lambda: not alive(leftover))


def test_stop_ends_every_child_in_reverse_order(
    supervisor: Supervisor, said: list[str], tmp_path: Path
) -> None:
    children = [
        supervisor.add(name, lambda: spawn_logged(SLEEPER, tmp_path / "s.log"), None)
        for name in ("redis-server", "worker", "web")
    ]
    supervisor.stop()
    assert [line.strip() for line in said] == [
        "stopping web",
        "stopping worker",
        "stopping redis-server",
    ]
    assert all(child.process is not None and child.process.poll() is not None for child in children)
    # and nothing is restarted once stopping
    supervisor.check()
    assert all(child.restarts == 0 for child in children)


def test_a_child_dies_with_the_supervisor(tmp_path: Path) -> None:
    # given a supervisor process (SIGKILLed, it cannot stop anything itself)
    log = tmp_path / "orphan.log"
    script = (
        "import sys, time; from pathlib import Path; "
        "from chatplatform.supervisor import Supervisor, spawn_logged; "
        f"s = Supervisor(); s.add('c', lambda: spawn_logged({SLEEPER!r}, Path({str(log)!r})), "
        "None); print(s.children[0].pid, flush=True); time.sleep(600)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert alive(child_pid)
        # when the supervisor is killed outright
        parent.kill()
        parent.wait(timeout=10)
        # then its child does not linger, holding a port
        assert wait_for(lambda: not alive(child_pid))
    finally:
        if parent.poll() is None:
            parent.kill()


def test_beat_runs_on_its_own_not_inside_the_cpu_worker() -> None:
    commands = child_commands("127.0.0.1", 8000)
    assert list(commands) == ["worker-cpu", "worker-inference", "beat", "web"]
    assert "-B" not in commands["worker-cpu"] and "--beat" not in commands["worker-cpu"]
    assert commands["beat"][1:4] == ["-A", "chatplatform.celery_app", "beat"]
