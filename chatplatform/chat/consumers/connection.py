"""The customer socket's life: counting and accepting it, closing it when idle, guarding
frames (rate limits, errors that keep the socket open), checking the site, sending frames."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async

from chatplatform import metrics
from chatplatform.chat import config, limits, store
from chatplatform.chat.consumers.background import (
    GuardedConsumer,
    background_tasks,
    cancel_if_abandoned,
    start_task,
)
from chatplatform.chat.protocol import (
    ClientCommand,
    ErrorCode,
    ProtocolError,
    error_frame,
    parse_client_frame,
)
from inference.contracts import conversation_group

if TYPE_CHECKING:
    from chatplatform.chat.consumers.delivery import PendingAnswer

logger = logging.getLogger(__name__)

# Close code for refusing a socket outright (private range 4000-4999; mirrors HTTP 429).
CLOSE_TOO_MANY_CONNECTIONS = 4429
# Close code for a socket silent longer than config.CONNECTION_COUNT_TTL_S (mirrors HTTP 408).
CLOSE_IDLE = 4408


class CustomerConnection(GuardedConsumer):
    """The socket's life and frame guard; `handle` (in `ChatConsumer`) acts on each frame."""

    async def connect(self) -> None:
        self.client_ip: str = (self.scope.get("client") or ["unknown"])[0] or "unknown"
        self.site: store.SiteInfo | None = None
        self.site_key = ""
        self.site_read_at = 0.0  # monotonic time `site` was read
        self.conversation_id: str | None = None
        self.turns: list[tuple[str, str]] = []  # recent (role, text), oldest first
        self.pending: dict[str, PendingAnswer] = {}
        self.delivered: set[str] = set()  # answer ids this socket has sent whole
        self.counted = False
        self.last_frame_at = time.monotonic()
        self.idle_watch: asyncio.Task[None] | None = None
        # Count the socket before accepting it, so that once a client sees its socket open, the
        # count includes it (the next socket from that address is judged with this one in).
        allowed = await limits.open_connection(self.client_ip, self.channel_name)
        await self.accept()
        if not allowed:
            await self.send_error(
                ErrorCode.TOO_MANY_CONNECTIONS, "Too many open chats from your network."
            )
            await self.close(code=CLOSE_TOO_MANY_CONNECTIONS)
            return
        self.counted = True
        metrics.connection_opened()
        self.idle_watch = start_task(self._close_when_idle(), "idle watch")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """The consumer's whole life. However it ends, its timers end with it.

        When the channel layer fails (a Redis restart), channels raises out of here and daphne
        drops the socket without calling `disconnect`: the answer timers kept running, and a
        timeout that fired on the dead socket was recorded as told to the customer, who was
        then told nothing on their return. Stopped here, the returning customer's socket
        resumes those answers (their timers counting from the question's arrival)."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stop_timers()

    def stop_timers(self) -> None:
        for pending in getattr(self, "pending", {}).values():
            for timer in pending.timers:
                timer.cancel()
        idle_watch = getattr(self, "idle_watch", None)
        if idle_watch is not None:
            idle_watch.cancel()

    async def disconnect(self, code: int) -> None:
        if not self.counted:
            return
        if self.idle_watch is not None:
            self.idle_watch.cancel()
        metrics.connection_closed()
        await limits.close_connection(self.client_ip, self.channel_name)
        if self.conversation_id is not None:
            await self.channel_layer.group_discard(
                conversation_group(self.conversation_id), self.channel_name
            )
            await limits.leave_conversation(self.conversation_id, self.channel_name)
            for pending in self.pending.values():
                for timer in pending.timers:
                    timer.cancel()
            if self.pending:
                task = start_task(
                    cancel_if_abandoned(self.conversation_id, list(self.pending)),
                    "cancel of abandoned answers",
                )
                background_tasks.add(task)
                task.add_done_callback(background_tasks.discard)

    # --- client frames ------------------------------------------------------------------------

    async def _close_when_idle(self) -> None:
        """Close the socket once the client has been silent for CONNECTION_COUNT_TTL_S.

        By then its entry in the per-address connection count has lapsed: left open, a silent
        socket would no longer count, and a client could hold any number of them. Only frames
        that refreshed that entry count as traffic (invalid frames do not).
        """
        while True:
            silent_for = time.monotonic() - self.last_frame_at
            if silent_for >= config.CONNECTION_COUNT_TTL_S:
                logger.info("chat: closing a socket silent for %.0f s", silent_for)
                await self.close(code=CLOSE_IDLE)
                return
            await asyncio.sleep(config.CONNECTION_COUNT_TTL_S - silent_for)

    async def event_failed(self) -> None:
        """Tell the client; a pending answer the failure concerns is still closed by its
        timeout timer."""
        await self.send_error(ErrorCode.INTERNAL, "Something went wrong on our side.")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        arrival = time.time()
        try:
            if text_data is None:
                raise ProtocolError(
                    ErrorCode.BINARY_NOT_SUPPORTED, "Binary frames are not accepted; send JSON."
                )
            await self.handle(parse_client_frame(text_data), arrival)
        except ProtocolError as error:
            metrics.rejected(error.code.value)
            await self.send_json(error.frame())
        except Exception:
            # The socket must stay usable whatever went wrong on our side; log it loudly.
            logger.exception("chat: failed to handle a frame")
            await self.send_error(ErrorCode.INTERNAL, "Something went wrong on our side; retry.")

    async def handle(self, command: ClientCommand, arrival: float) -> None:
        raise NotImplementedError

    async def active_site(self, site_key: str, ref: str | None = None) -> store.SiteInfo:
        """The site of this widget key, if it is active and allows this page; `ref` names the
        client frame a refusal answers."""
        site = await database_sync_to_async(store.find_site)(site_key)
        if site is None:
            raise ProtocolError(ErrorCode.UNKNOWN_SITE, "No active site has this widget key.", ref)
        if not site.allows_origin(self.origin()):
            raise ProtocolError(
                ErrorCode.ORIGIN_NOT_ALLOWED,
                "This site does not allow the widget on this page.",
                ref,
            )
        return site

    async def refresh_site(self, client_message_id: str) -> None:
        """Re-read the site's settings when they are older than SITE_REFRESH_S: an admin who
        deactivated the site, or removed this page's origin, since the chat opened stops open
        widgets too. The message is refused before it is stored, so nothing is half-written."""
        if time.monotonic() - self.site_read_at < config.SITE_REFRESH_S:
            return
        self.site = await self.active_site(self.site_key, client_message_id)
        self.site_read_at = time.monotonic()

    async def check_frame_rate(self) -> None:
        """Refuse a hello, feedback, handoff or ping over the per-socket or per-address limit
        (this also marks the socket live; see limits.allow_frame)."""
        broken = await limits.allow_frame(self.client_ip, self.channel_name, self.conversation_id)
        self.last_frame_at = time.monotonic()  # the socket's entries were refreshed
        if broken is not None:
            raise ProtocolError(
                ErrorCode.RATE_LIMITED, "Too many requests; wait a minute and try again."
            )

    # --- sending ------------------------------------------------------------------------------

    async def send_json(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(frame, ensure_ascii=False))

    async def send_error(self, code: ErrorCode, message: str) -> None:
        metrics.rejected(code.value)
        await self.send_json(error_frame(code, message))

    def origin(self) -> str | None:
        for name, value in self.scope.get("headers", []):
            if name == b"origin":
                return value.decode("latin-1")
        return None
