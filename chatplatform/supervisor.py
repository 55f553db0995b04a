"""Keep a set of child processes running: restart one that exits, with backoff, and say so.

The run command (`chatplatform/run.py`) puts every process of the local platform under one
`Supervisor`. A child that exits on its own (a crash, a SIGKILL, the OOM killer) is started
again after a delay that doubles on each quick failure (1 s, 2 s, 4 s ... 30 s) and drops back
to 1 s once the child has stayed up for a minute; each exit and restart is printed with the
child's exit status and the last lines of its log. Only `stop()` (Ctrl-C, SIGTERM, SIGHUP in
the run command) ends them, in the reverse order of their start.

Each child runs in its own session (process group): a Ctrl-C typed in the terminal reaches the
supervisor only, which then stops the children in order (web before workers before Redis), and
a restart can clear whatever the dead child left behind in its group. On Linux a child is also
told to exit when the supervisor dies (SIGKILL included), so no orphan keeps a port.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

FIRST_RESTART_DELAY_S = 1.0
MAX_RESTART_DELAY_S = 30.0  # a crash loop retries twice a minute, not in a tight loop
STABLE_AFTER_S = 60.0  # a child up this long is healthy again: its next restart is quick
STOP_TIMEOUT_S = 20.0  # a worker's warm shutdown finishes its running tasks first
LOG_TAIL_LINES = 5
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent() -> None:
    """In a freshly forked child: ask Linux for a SIGTERM when the parent dies."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn_logged(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start `args` in its own session, output appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,  # the supervisor is single-threaded: safe after fork
        )


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"


def log_tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> list[str]:
    if path is None or not path.exists():
        return []
    with open(path, "rb") as log:
        log.seek(max(0, path.stat().st_size - 8192))
        text = log.read().decode(errors="replace")
    return [line for line in text.splitlines() if line.strip()][-lines:]


def kill_group(pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal the process group a child led (its leftovers too, once it is gone)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


@dataclass
class Child:
    """One supervised process. `start` launches it (and may wait until it is ready)."""

    name: str
    start: Callable[[], subprocess.Popen[bytes]]
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_delay_s: float = FIRST_RESTART_DELAY_S
    restart_at: float | None = None  # set while waiting to be restarted
    history: list[int] = field(default_factory=list)  # exit statuses seen, oldest first

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    def __init__(
        self,
        say: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.children: list[Child] = []
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.clock = clock
        self.stopping = False

    def add(
        self, name: str, start: Callable[[], subprocess.Popen[bytes]], log_path: Path | None
    ) -> Child:
        """Start a child now and supervise it from then on."""
        child = Child(name=name, start=start, log_path=log_path)
        self.children.append(child)
        self._launch(child)
        return child

    def child(self, name: str) -> Child:
        return next(child for child in self.children if child.name == name)

    def exited(self) -> list[Child]:
        """Children that are not running right now (dead, or waiting for their restart)."""
        return [child for child in self.children if not child.running()]

    def check(self) -> None:
        """Notice children that exited and restart those whose delay has passed."""
        if self.stopping:
            return
        now = self.clock()
        for child in self.children:
            if child.restart_at is None and not child.running():
                self._schedule_restart(child, now)
            if child.restart_at is not None and now >= child.restart_at:
                self._restart(child)

    def _schedule_restart(self, child: Child, now: float) -> None:
        assert child.process is not None
        returncode = child.process.returncode
        child.history.append(returncode)
        if now - child.started_at >= STABLE_AFTER_S:
            child.next_delay_s = FIRST_RESTART_DELAY_S
        delay = child.next_delay_s
        child.next_delay_s = min(MAX_RESTART_DELAY_S, delay * 2)
        child.restart_at = now + delay
        where = f"; log: {child.log_path}" if child.log_path else ""
        self.say(
            f"! {child.name} (pid {child.process.pid}) exited with {describe_exit(returncode)}"
            f" after {now - child.started_at:.0f} s; restarting it in {delay:.0f} s{where}"
        )
        for line in log_tail(child.log_path):
            self.say(f"    {child.name}| {line}")

    def _restart(self, child: Child) -> None:
        if child.process is not None:
            kill_group(child.process.pid)  # what it left behind (e.g. pool processes)
        child.restart_at = None
        child.restarts += 1
        try:
            self._launch(child)
        except Exception as error:  # it failed to start at all: try again later
            self.say(f"! {child.name} could not be started: {error}")
            child.restart_at = self.clock() + child.next_delay_s
            child.next_delay_s = min(MAX_RESTART_DELAY_S, child.next_delay_s * 2)
            return
        self.say(f"  {child.name} restarted (pid {child.pid}; restart {child.restarts})")

    def _launch(self, child: Child) -> None:
        child.process = child.start()
        child.started_at = self.clock()

    def stop(self) -> None:
        """Stop every child, the last started first; SIGKILL those that do not exit in time."""
        self.stopping = True
        for child in reversed(self.children):
            if child.running():
                assert child.process is not None
                self.say(f"  stopping {child.name}")
                child.process.terminate()
                try:
                    child.process.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.say(f"  {child.name} did not stop in {STOP_TIMEOUT_S:.0f} s: killed")
            if child.process is not None:
                kill_group(child.process.pid)
                child.process.wait()
