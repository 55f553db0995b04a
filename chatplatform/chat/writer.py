"""Group commit of customer messages: concurrent saves share one database transaction.

Every customer message must be committed before its ack. One commit per message caps a web
process at a few hundred messages a second on SQLite (and costs a round trip each on
PostgreSQL); here, while one batch is being written, the messages that arrive queue up and go
together in the next transaction. There is no artificial wait: a lone message is written at
once, and batches only form under load, when they are needed.
"""

from __future__ import annotations

import asyncio
import weakref

from channels.db import database_sync_to_async

from chatplatform.chat.store import NewQuestion, save_questions

# Bounds one transaction (and so the wait of the first message in it).
MAX_BATCH = 200


class QuestionWriter:
    def __init__(self) -> None:
        self._queue: list[tuple[NewQuestion, asyncio.Future[tuple[str, bool]]]] = []
        self._flushing = False

    async def save(self, question: NewQuestion) -> tuple[str, bool]:
        """Store the question (and its answer's row); returns (message id, created)."""
        future: asyncio.Future[tuple[str, bool]] = asyncio.get_running_loop().create_future()
        self._queue.append((question, future))
        if not self._flushing:
            self._flushing = True
            asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    results = await database_sync_to_async(save_questions)([q for q, _ in batch])
                except Exception as error:  # every waiter must hear of the failure
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    # A waiter cancelled meanwhile (its socket closed) has a done future:
                    # setting it would raise and leave every later waiter hanging. Its
                    # question is stored all the same, as a resend after reconnecting expects.
                    if not future.done():
                        future.set_result(result)
        finally:
            self._flushing = False


_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, QuestionWriter] = (
    weakref.WeakKeyDictionary()
)


def writer() -> QuestionWriter:
    """The writer of the running event loop (one per server process)."""
    loop = asyncio.get_running_loop()
    if loop not in _writers:
        _writers[loop] = QuestionWriter()
    return _writers[loop]
