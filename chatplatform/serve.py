"""`python -m chatplatform.serve`: daphne with a graceful drain on SIGTERM.

Plain daphne stops on SIGTERM by cancelling every application at once: each chat socket drops
without a close frame (the browser sees 1006) while its consumer is cut off mid-way. A
redeploy or a scale-down sends SIGTERM to every web process in turn, so this server drains
instead:

1. It stops listening: new connections go to the other web processes (the load balancer
   retries a refused connection; Kubernetes has already taken the pod out of the Service
   during preStop).
2. Every chat consumer gets the disconnect it would get from a closing client, so it leaves
   its conversation's group, releases its connection count and stops its timers before
   anything else is sent. Answers it was waiting for are not lost: the worker still finishes
   them and stores them, and the widget's resume on another process delivers them (the
   `welcome` of a resumed conversation sends every answer not yet received).
3. Once its consumer is done, each socket is closed with code 1012 ("service restart"): the
   widget reconnects at once (any close but a refusal makes it reconnect) and resumes.
4. HTTP requests in flight are answered; then the process exits 0. After DRAIN_TIMEOUT_S
   (`--drain-timeout`) whatever is left is cancelled as plain daphne would. A second SIGTERM
   or SIGINT stops at once.

Every daphne option is accepted, and the application is named as for daphne:

    python -m chatplatform.serve -b 0.0.0.0 -p 8000 --proxy-headers chatplatform.asgi:application
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import time
from typing import Any

from daphne.cli import CommandLineInterface
from daphne.server import Server
from daphne.ws_protocol import WebSocketProtocol
from twisted.internet import reactor

logger = logging.getLogger("chatplatform.serve")

# RFC 6455 registry: 1012 "Service Restart": the server is restarting, reconnect.
CLOSE_SERVICE_RESTART = 1012
DEFAULT_DRAIN_TIMEOUT_S = 20.0  # well inside Kubernetes' and compose's grace periods
# How long a consumer may take over its disconnect before its socket is closed anyway.
CONSUMER_DISCONNECT_TIMEOUT_S = 5.0
POLL_S = 0.05


class DrainingServer(Server):
    """daphne's Server, plus `drain()` on SIGTERM (see the module docstring)."""

    drain_timeout_s = DEFAULT_DRAIN_TIMEOUT_S

    def run(self) -> None:
        self.ports: list[Any] = []
        self.draining_since: float | None = None
        # After reactor.run() has installed Twisted's own handlers, which stop at once.
        reactor.callWhenRunning(self._install_signal_handlers)
        super().run()

    def listen_success(self, port: Any) -> None:
        self.ports.append(port)
        super().listen_success(port)

    def _install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        # A signal handler runs between bytecodes of the main thread: hand over to the reactor.
        if self.draining_since is None and signum == signal.SIGTERM:
            reactor.callFromThread(self.drain)
        else:
            reactor.callFromThread(self.stop)

    def drain(self) -> None:
        if self.draining_since is not None:
            return
        self.draining_since = time.monotonic()
        sockets = [p for p in self.connections if isinstance(p, WebSocketProtocol)]
        logger.info(
            "SIGTERM: draining %d websocket(s) and %d other connection(s), at most %.0f s",
            len(sockets),
            len(self.connections) - len(sockets),
            self.drain_timeout_s,
        )
        for port in self.ports:
            port.stopListening()
        for protocol in sockets:
            self._disconnect_consumer(protocol)
        self._watch_drain()

    def _disconnect_consumer(self, protocol: WebSocketProtocol) -> None:
        """Tell the application the socket is going away, as a closing client would."""
        queue = getattr(protocol, "application_queue", None)
        if queue is None or protocol.muted:
            return
        queue.put_nowait({"type": "websocket.disconnect", "code": CLOSE_SERVICE_RESTART})
        protocol.muted = True  # the real close later must not deliver a second disconnect

    def _watch_drain(self) -> None:
        assert self.draining_since is not None
        waited = time.monotonic() - self.draining_since
        for protocol, details in list(self.connections.items()):
            if not isinstance(protocol, WebSocketProtocol) or "disconnected" in details:
                continue
            instance = details.get("application_instance")
            consumer_done = instance is None or instance.done()
            if consumer_done or waited >= CONSUMER_DISCONNECT_TIMEOUT_S:
                self._close_socket(protocol)
        if not self.connections:
            logger.info("drained in %.2f s", waited)
            self.stop()
        elif waited >= self.drain_timeout_s:
            logger.warning("drain timeout: cancelling %d connection(s)", len(self.connections))
            self.stop()
        else:
            reactor.callLater(POLL_S, self._watch_drain)

    @staticmethod
    def _close_socket(protocol: WebSocketProtocol) -> None:
        if protocol.state == protocol.STATE_OPEN:
            # sendCloseFrame, not sendClose: autobahn's public call refuses the 1012 code.
            protocol.sendCloseFrame(code=CLOSE_SERVICE_RESTART, reasonUtf8=b"server restarting")
        elif protocol.state == protocol.STATE_CONNECTING:
            protocol.dropConnection(abort=True)


class DrainingCommandLine(CommandLineInterface):
    server_class = DrainingServer


def split_drain_timeout(argv: list[str]) -> tuple[float, list[str]]:
    """(`--drain-timeout` seconds, the other arguments for daphne)."""
    raw, rest = str(DEFAULT_DRAIN_TIMEOUT_S), []
    args = iter(argv)
    for arg in args:
        if arg == "--drain-timeout":
            raw = next(args, "")
        elif arg.startswith("--drain-timeout="):
            raw = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    try:
        timeout = float(raw)
    except ValueError:
        timeout = math.nan
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"--drain-timeout must be a number of seconds above 0, not {raw!r}")
    return timeout, rest


def main(argv: list[str]) -> int:
    try:
        timeout, daphne_args = split_drain_timeout(argv)
    except ValueError as error:
        print(f"serve: {error}", file=sys.stderr)
        return 2
    DrainingServer.drain_timeout_s = timeout
    DrainingCommandLine().run(daphne_args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
