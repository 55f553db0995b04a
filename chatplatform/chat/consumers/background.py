"""Background tasks of the consumers: started and not awaited, so failures are logged here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from chatplatform.chat import config, limits

logger = logging.getLogger(__name__)

# Background tasks that must outlive the consumer (cancellation after the grace period).
background_tasks: set[asyncio.Task[None]] = set()


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
    if await limits.someone_present(conversation_id):
        return
    for message_id in message_ids:
        await limits.request_cancel(message_id)
