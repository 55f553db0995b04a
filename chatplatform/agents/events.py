"""Channel-layer events of the human-agent side: who is told what, in one place.

Two kinds of groups: every agent socket joins the group of each site it may read (`inbox.changed`
names a conversation whose summary or transcript changed; the socket re-reads it from the
database, so an event carries no data that could go stale), and every customer socket is in its
conversation's group (inference/contracts.conversation_group), which gets the agent's side of
the conversation (`agent.joined`, `agent.message`, ...), handled in consumers/handoff.py.
"""

from __future__ import annotations

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from chatplatform.agents.records import AgentMessage, HandoffView, open_handoff_exists
from inference.contracts import conversation_group


def site_group(site_id: int) -> str:
    """The group of the agent sockets that may read `site_id`."""
    return f"agents.site.{site_id}"


async def inbox_changed(site_id: int, conversation_id: str) -> None:
    await get_channel_layer().group_send(
        site_group(site_id), {"type": "inbox.changed", "conversation_id": conversation_id}
    )


async def to_customer(conversation_id: str, event: dict[str, object]) -> None:
    await get_channel_layer().group_send(conversation_group(conversation_id), event)


def agent_joined(handoff: HandoffView) -> dict[str, object]:
    return {"type": "agent.joined", "agent_name": handoff.agent_name}


def agent_message(message: AgentMessage) -> dict[str, object]:
    return {"type": "agent.message", "frame": message.frame()}


def agent_typing(name: str) -> dict[str, object]:
    return {"type": "agent.typing", "agent_name": name}


def agent_left(name: str, reason: str) -> dict[str, object]:
    """`reason`: "handed_back" (the bot answers again) or "disconnected" (back in the queue)."""
    return {"type": "agent.left", "agent_name": name, "reason": reason}


def handoff_resolved(handoff: HandoffView) -> dict[str, object]:
    return {"type": "handoff.resolved", "agent_name": handoff.agent_name}


def handoff_waiting(handoff: HandoffView) -> dict[str, object]:
    """Another socket of the conversation asked for a person: every tab shows it."""
    return {"type": "handoff.waiting", "handoff": handoff.for_customer()}


def handoff_unavailable(handoff: HandoffView) -> dict[str, object]:
    return {"type": "handoff.unavailable", "handoff": handoff.for_customer()}


def publish_sync(handoff: HandoffView, customer_event: dict[str, object] | None) -> None:
    """From a Celery task: tell the site's agents and (optionally) the customer."""

    async def publish() -> None:
        if customer_event is not None:
            await to_customer(handoff.conversation_id, customer_event)
        await inbox_changed(handoff.site_id, handoff.conversation_id)

    async_to_sync(publish)()


def bot_answer_stored(site_id: int, conversation_id: str) -> None:
    """From the finalize task: a model answer was stored; agents following a conversation that
    waits for them see it (the bot answers while nobody has claimed it yet)."""
    if open_handoff_exists(conversation_id):
        async_to_sync(inbox_changed)(site_id, conversation_id)
