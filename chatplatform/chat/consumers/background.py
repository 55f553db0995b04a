"""What the consumers share: background tasks (started and not awaited, so failures are logged
here) and the guard of channel-layer event handlers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import redis.exceptions
from channels.generic.websocket import AsyncWebsocketConsumer

from chatplatform.chat import config, limits

logger = logging.getLogger(__name__)

# Background tasks that must outlive the consumer (cancellation after the grace period).
background_tasks: set[asyncio.Task[None]] = set()

# A cancel that cannot reach Redis is tried again, with these waits in between (about 30 s in
# all): a lost cancel lets a generation nobody will read run to its end on the GPU. Redis
# answers slowly when its machine is starved (a model server beside the platform on 2 cores
# delayed PINGs by up to 2.8 s, so one call could pass the pool's 5 s timeout).
CANCEL_RETRY_WAITS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)


def start_task(coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """A background task of a consumer whose failure is logged (nobody awaits it)."""
    task = asyncio.create_task(coroutine, name=name)
    task.add_done_callback(log_failure)
    return task


def log_failure(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    error = task.exception()
    if error is not None:
        logger.error("chat: the %s failed", task.get_name(), exc_info=error)


async def cancel_if_abandoned(conversation_id: str, message_ids: list[str]) -> None:
    """After the grace period, stop generating answers nobody is connected to receive."""
    await asyncio.sleep(config.CANCEL_GRACE_S)
    for wait_s in (*CANCEL_RETRY_WAITS_S, None):
        try:
            if await limits.someone_present(conversation_id):
                return
            for message_id in message_ids:
                await limits.request_cancel(message_id)  # idempotent: safe to repeat
            return
        except redis.exceptions.RedisError as error:
            if wait_s is None:
                raise  # logged by start_task's callback: the generations run to their end
            logger.warning(
                "chat: cancelling %d abandoned answer(s) failed (%s); trying again in %.1f s",
                len(message_ids),
                error,
                wait_s,
            )
            await asyncio.sleep(wait_s)


class GuardedConsumer(AsyncWebsocketConsumer):
    """A consumer whose channel-layer event handlers cannot drop its socket."""

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Run the handler of a channel-layer event with the same guard as client frames.

        An exception escaping a handler would make daphne close the socket (1011) without
        `disconnect` ever running, leaking its counters: log it, tell the client, stay open.
        """
        if message["type"].startswith("websocket."):
            await super().dispatch(message)
            return
        try:
            await super().dispatch(message)
        except Exception:
            logger.exception("chat: failed to handle the event %s", message.get("type"))
            await self.event_failed()

    async def event_failed(self) -> None:
        """What the client is told after a failed event handler (nothing by default)."""
