"""The thread that keeps a process's indexes in line with every other process.

It follows the Redis change stream (XREAD BLOCK, so a change is seen within one block period
of ~0.2 s), applies each change, and about once a second flushes the buffered hit counters and
near misses. If Redis goes away it retries with backoff and, once back, rebuilds the indexes
from Redis (changes may have been trimmed from the stream meanwhile).
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from cache.replica import Replica

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 5.0


def _stream_id(value: str) -> tuple[int, int]:
    millis, _, seq = value.partition("-")
    return int(millis), int(seq or 0)


class ChangeFollower(threading.Thread):
    def __init__(self, replica: Replica, rebuild_first: bool = False) -> None:
        super().__init__(name="cache-sync", daemon=True)
        self.replica = replica
        self._rebuild_first = rebuild_first
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        backoff = 0.1
        failed = self._rebuild_first
        last_flush = time.monotonic()
        while not self._stop_event.is_set():
            try:
                if failed:
                    self.replica.rebuild()
                    failed = False
                    backoff = 0.1
                self._follow_once()
                if time.monotonic() - last_flush >= self.replica.config.flush_interval_s:
                    self.replica.flush()
                    self.replica.refresh_indexes()
                    self._check_not_trimmed()
                    last_flush = time.monotonic()
            except Exception as error:  # noqa: BLE001 - this thread must outlive any failure
                # A Redis outage, or a change it cannot parse or apply (another code version's,
                # a hand-made XADD, an unreadable entry), would otherwise end the thread, and
                # the process would serve deleted and edited entries until restarted. A rebuild
                # reloads everything from Redis and resumes after the newest change.
                if self._stop_event.is_set():
                    return
                if isinstance(error, redis.RedisError):
                    logger.warning(
                        "cache sync: Redis error (%s); retrying in %.1f s", error, backoff
                    )
                else:
                    logger.exception("cache sync: unexpected error; rebuilding in %.1f s", backoff)
                failed = True
                self._stop_event.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _follow_once(self) -> None:
        changes = self.replica.store.read_changes(
            self.replica.last_change_id, self.replica.config.sync_block_ms
        )
        for change_id, site_id, op, entry_ids in changes:
            self.replica.apply_change(site_id, op, entry_ids)
            self.replica.last_change_id = change_id

    def _check_not_trimmed(self) -> None:
        """Rebuild when the stream was trimmed past our position (we would miss changes)."""
        oldest = self.replica.store.oldest_change_id()
        last = self.replica.last_change_id
        if oldest is not None and last != "0-0" and _stream_id(oldest) > _stream_id(last):
            logger.warning("cache sync: fell behind the change stream; rebuilding")
            self.replica.rebuild()
