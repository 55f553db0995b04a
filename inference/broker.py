"""Celery's Redis transport as both Celery apps use it (the inference worker and the CPU worker).

kombu keeps each delivery in Redis until its task acknowledges it (`acks_late`: after the task
finished), and a periodic sweep puts deliveries older than the visibility timeout back on their
queue: that is how a killed worker's task reaches another worker. This transport changes two
things about it:

- **Renewal.** Before each sweep the worker refreshes the timestamps of the deliveries it still
  holds (tasks running or waiting for a thread), so a task that runs longer than the visibility
  timeout is not handed to a second worker while it runs. Only a dead or frozen worker's
  deliveries age past the timeout. The timeout can then be short, so a dead worker's task
  comes back quickly, without guessing the longest task.
- **No restore from memory.** kombu also re-queues a channel's unacknowledged deliveries when
  the channel closes. When the broker connection drops, that re-queues tasks that are still
  running in this worker, and after a Redis restart it killed the worker instead (kombu 5.7.0:
  the consumer's reconnect closes the channel after the transport has dropped its client,
  "Unrecoverable error: AttributeError('NoneType' object has no attribute 'hostname')").
  The deliveries are in Redis already; the sweep brings back those this worker never finishes.
- **Late acknowledgements.** A task that was running when the connection dropped finishes
  later and acknowledges its delivery on the old, closed channel; kombu then fails with an
  AttributeError on the event loop, which also stopped the worker. Such an acknowledgement is
  skipped with a warning: the delivery comes back after the visibility timeout and is found
  already done (the inference service answers a message once; finalize is idempotent).

Plain kombu otherwise; selected with Celery's `broker_transport` setting (TRANSPORT below).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kombu.transport import redis as kombu_redis

logger = logging.getLogger(__name__)

TRANSPORT = "inference.broker:Transport"


def restore_interval_s(visibility_timeout_s: int) -> int:
    """How often a worker renews its deliveries and sweeps for abandoned ones: several times
    per timeout, so one late renewal does not let a running task be redelivered."""
    return max(1, min(10, visibility_timeout_s // 4))


def redelivery_within_s(visibility_timeout_s: int) -> int:
    """Worst case from a worker's death until another worker receives its unacked task."""
    return visibility_timeout_s + restore_interval_s(visibility_timeout_s)


def transport_options(visibility_timeout_s: int, key_prefix: str = "") -> dict[str, Any]:
    """`broker_transport_options` for a timeout; `key_prefix` gives an app keys of its own.

    kombu keeps unacknowledged deliveries under fixed key names per Redis database, and its
    sweep restores every entry older than *its own app's* timeout: two apps with different
    timeouts on one database need different keys."""
    options: dict[str, Any] = {
        "visibility_timeout": visibility_timeout_s,
        "unacked_restore_interval": restore_interval_s(visibility_timeout_s),
        "unacked_restore_throttle": 1,  # renew and sweep on every tick of that interval
    }
    if key_prefix:
        options.update(
            unacked_key=f"{key_prefix}_unacked",
            unacked_index_key=f"{key_prefix}_unacked_index",
            unacked_mutex_key=f"{key_prefix}_unacked_mutex",
        )
    return options


class QoS(kombu_redis.QoS):
    restore_at_shutdown = False  # see the module docstring: the sweep restores, not the close

    def ack(self, delivery_tag: str) -> None:
        if self._orphaned(delivery_tag, "acknowledged"):
            return
        super().ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if self._orphaned(delivery_tag, "rejected"):
            return
        super().reject(delivery_tag, requeue=requeue)

    def _orphaned(self, delivery_tag: str, action: str) -> bool:
        """Whether this channel lost its broker connection (closed after a connection loss)."""
        transport = self.channel.connection
        if transport is not None and transport.client is not None:
            return False
        logger.warning(
            "delivery %s %s after its broker connection was replaced: it stays in Redis and "
            "comes back after the visibility timeout, to be found done",
            delivery_tag,
            action,
        )
        return True

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        self.renew_held()
        super().restore_visible(start, num, interval)

    def renew_held(self) -> int:
        """Mark every delivery this channel still holds as fresh; returns how many it holds.

        Runs on the worker's event-loop thread, the only one that adds to or removes from
        `_delivered` (task threads only mark tags acknowledged). `xx`: an entry the task
        acknowledged meanwhile is not brought back.

        Tags already acknowledged or rejected (`_dirty`: kombu forgets them only at its next
        flush, which a worker whose consumer was cancelled never runs) are not renewed: a
        delivery keeps its tag when it is requeued, so this worker would keep fresh another
        worker's delivery of the same task, which then never came back when that worker died.
        """
        tags = [tag for tag in self._delivered if tag not in self._dirty]
        if tags:
            with self.channel.conn_or_acquire() as client:
                client.zadd(self.unacked_index_key, dict.fromkeys(tags, time.time()), xx=True)
        return len(tags)


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel
