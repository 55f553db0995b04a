"""Embedding service: an LRU of recent questions and batching of concurrent lookups.

Concurrent callers (threads, or coroutines of an async consumer) hand their question to one
worker thread, which encodes everything queued since its last pass in a single encoder call:
32 simultaneous lookups cost one batched forward pass instead of 32 single ones. Repeated
questions skip the encoder entirely through the LRU.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np

from cache.encoder import Encoder

logger = logging.getLogger(__name__)

# Most questions a batched pass takes: keeps one pass under ~100 ms on 2 cores so no caller
# waits behind an arbitrarily long batch.
MAX_BATCH = 32
# Bulk encoding (FAQ sync, rebuilds) goes in chunks of this size: padding to the longest
# sentence of a chunk wastes less than padding a whole FAQ list.
BULK_CHUNK = 64


class EmbeddingService:
    def __init__(self, encoder: Encoder, lru_size: int) -> None:
        self.encoder = encoder
        self.dim = encoder.dim
        self._lru: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lru_size = lru_size
        self._lru_lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[str, Future[np.ndarray]]] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._run, name="cache-encoder", daemon=True)
        self._worker.start()

    def _cached(self, text: str) -> np.ndarray | None:
        with self._lru_lock:
            vector = self._lru.get(text)
            if vector is not None:
                self._lru.move_to_end(text)
            return vector

    def _remember(self, text: str, vector: np.ndarray) -> None:
        with self._lru_lock:
            self._lru[text] = vector
            self._lru.move_to_end(text)
            while len(self._lru) > self._lru_size:
                self._lru.popitem(last=False)

    def submit(self, text: str) -> Future[np.ndarray]:
        """A future of the question's vector (resolved at once on an LRU hit)."""
        future: Future[np.ndarray] = Future()
        vector = self._cached(text)
        if vector is not None:
            future.set_result(vector)
        else:
            self._queue.put((text, future))
        return future

    def embed(self, text: str) -> np.ndarray:
        return self.submit(text).result()

    async def aembed(self, text: str) -> np.ndarray:
        return await asyncio.wrap_future(self.submit(text))

    def embed_many(self, texts: Sequence[str]) -> np.ndarray:
        """Bulk encoding in the caller's thread (FAQ sync): [len(texts), dim]."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunks = [
            self.encoder.encode(texts[i : i + BULK_CHUNK]) for i in range(0, len(texts), BULK_CHUNK)
        ]
        return np.concatenate(chunks)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            # A caller that gave up (an async lookup cancelled when its chat closed) cancelled
            # its future: drop it here, since setting a cancelled future's result raises and
            # would end this thread, leaving every later lookup of the process waiting forever.
            # A future marked running can no longer be cancelled, so the results below land.
            batch = [item for item in batch if item[1].set_running_or_notify_cancel()]
            if not batch:
                continue
            texts = list(dict.fromkeys(text for text, _ in batch))
            try:
                vectors = dict(zip(texts, self.encoder.encode(texts), strict=True))
            except Exception as error:  # noqa: BLE001 - handed to every waiting caller
                logger.exception("encoder failed on a batch of %d", len(texts))
                for _, future in batch:
                    future.set_exception(error)
                continue
            for text, vector in vectors.items():
                self._remember(text, vector)
            for text, future in batch:
                future.set_result(vectors[text])
