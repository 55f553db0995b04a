"""What happens when nobody acts: run by the CPU worker's beat every SWEEP_INTERVAL_S (and, for
one agent, by their last socket's close after the grace period).

- An agent whose every inbox socket has been gone for RECONNECT_GRACE_S loses the conversations
  they hold: back to the queue, the customer is told, other agents see them waiting again.
- A handoff waiting longer than its site's reply_within_minutes is marked `no_agent`: the
  customer is told so honestly and offered to leave an e-mail address.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from chatplatform.agents import config, events, notify, presence, store

logger = logging.getLogger(__name__)


def requeue_if_gone(user_id: int, now: float | None = None) -> int:
    """Requeue the agent's conversations if they are away past the grace; how many."""
    away = presence.away_for(user_id, now)
    if away is None or away < config.RECONNECT_GRACE_S:
        return 0
    requeued = store.requeue_held_by(user_id)
    for handoff, gone_name in requeued:
        logger.info("agents: %s gone, conversation %s back to the queue", gone_name,
                    handoff.conversation_id)  # fmt: skip
        events.publish_sync(handoff, events.agent_left(gone_name, "disconnected"))
        notify.handoff_event(handoff.handoff_id, notify.Event.REQUEUED)
    return len(requeued)


def sweep(now: datetime | None = None) -> dict[str, int]:
    requeued = sum(
        requeue_if_gone(user_id, now.timestamp() if now else time.time())
        for user_id in store.agents_holding()
    )
    expired = store.expire_unanswered(now)
    for handoff in expired:
        events.publish_sync(handoff, events.handoff_unavailable(handoff))
        notify.handoff_event(handoff.handoff_id, notify.Event.NO_AGENT)
    return {"requeued": requeued, "no_agent": len(expired)}
