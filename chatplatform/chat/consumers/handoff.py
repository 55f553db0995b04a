"""The customer's side of a human handoff: asking for a person, leaving an e-mail address,
rating the resolved conversation, and relaying what the agent does (channel-layer events of the
conversation's group, sent by the agent socket and the sweep: chatplatform/agents/events.py).

`handoff_status` follows the conversation's handoff (read at hello, then kept by these events):
while it is `held` the customer's messages go to the agent, and neither the cache nor the model
answers them (customer.py).
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from chatplatform.agents import events, notify
from chatplatform.agents import store as agent_store
from chatplatform.agents.models import Handoff
from chatplatform.chat.consumers.hello import CustomerHello
from chatplatform.chat.protocol import Contact, Rating, ServerType

HELD = Handoff.Status.HELD.value
WAITING = Handoff.Status.WAITING.value
RESOLVED = Handoff.Status.RESOLVED.value


class CustomerHandoff(CustomerHello):
    """Handoff frames of the customer and the agent's events on their conversation."""

    async def connect(self) -> None:
        self.handoff_status = ""  # "", "waiting", "held" or "resolved"
        await super().connect()

    @property
    def handoff_open(self) -> bool:
        return self.handoff_status in (WAITING, HELD)

    # --- the customer's frames ----------------------------------------------------------------

    async def request_handoff(self) -> None:
        assert self.site is not None and self.conversation_id is not None
        handoff, created = await database_sync_to_async(agent_store.request_handoff)(
            self.site.id, self.conversation_id
        )
        self.handoff_status = handoff.status
        await self.send_json({"type": ServerType.HANDOFF_OK.value, **handoff.for_customer()})
        if handoff.unavailable:
            await self.send_json(
                {"type": ServerType.HANDOFF_UNAVAILABLE.value, **handoff.for_customer()}
            )
        if created:
            await events.to_customer(self.conversation_id, events.handoff_waiting(handoff))
            await events.inbox_changed(self.site.id, self.conversation_id)
            await database_sync_to_async(notify.handoff_event)(
                handoff.handoff_id, notify.Event.REQUESTED
            )

    async def leave_contact(self, contact: Contact) -> None:
        assert self.site is not None and self.conversation_id is not None
        handoff = await database_sync_to_async(agent_store.leave_contact)(
            self.conversation_id, contact.email
        )
        await self.send_json({"type": ServerType.CONTACT_OK.value, "email": contact.email})
        await events.inbox_changed(self.site.id, self.conversation_id)
        await database_sync_to_async(notify.handoff_event)(
            handoff.handoff_id, notify.Event.CONTACT_LEFT
        )

    async def rate(self, rating: Rating) -> None:
        assert self.site is not None and self.conversation_id is not None
        handoff = await database_sync_to_async(agent_store.rate)(
            self.conversation_id, rating.score, rating.comment
        )
        self.handoff_status = ""
        await self.send_json({"type": ServerType.RATING_OK.value, "score": rating.score})
        await database_sync_to_async(notify.handoff_event)(handoff.handoff_id, notify.Event.RATED)

    async def tell_agents(self) -> None:
        """A customer message (and its answer, if any) was stored: agents following the
        conversation re-read it."""
        if self.handoff_open:
            assert self.site is not None and self.conversation_id is not None
            await events.inbox_changed(self.site.id, self.conversation_id)

    # --- the agent's events on this conversation ----------------------------------------------

    async def handoff_waiting(self, event: dict[str, Any]) -> None:
        if self.handoff_open:
            return  # this socket asked, or knew already
        self.handoff_status = WAITING
        await self.send_json({"type": ServerType.HANDOFF_OK.value, **event["handoff"]})

    async def handoff_unavailable(self, event: dict[str, Any]) -> None:
        await self.send_json({"type": ServerType.HANDOFF_UNAVAILABLE.value, **event["handoff"]})

    async def agent_joined(self, event: dict[str, Any]) -> None:
        self.handoff_status = HELD
        await self.send_json(
            {"type": ServerType.AGENT_JOINED.value, "agent_name": event["agent_name"]}
        )

    async def agent_message(self, event: dict[str, Any]) -> None:
        frame = event["frame"]
        if frame["message_id"] in self.delivered:
            return  # already sent by this socket's hello (it joined while the reply was new)
        await self.deliver_whole(frame)

    async def agent_typing(self, event: dict[str, Any]) -> None:
        await self.send_json(
            {"type": ServerType.AGENT_TYPING.value, "agent_name": event["agent_name"]}
        )

    async def agent_left(self, event: dict[str, Any]) -> None:
        # Handed back: the bot answers again. Disconnected: back in the queue for another agent.
        self.handoff_status = WAITING if event["reason"] == "disconnected" else ""
        await self.send_json(
            {
                "type": ServerType.AGENT_LEFT.value,
                "agent_name": event["agent_name"],
                "reason": event["reason"],
            }
        )

    async def handoff_resolved(self, event: dict[str, Any]) -> None:
        self.handoff_status = RESOLVED
        await self.send_json(
            {"type": ServerType.HANDOFF_RESOLVED.value, "agent_name": event["agent_name"]}
        )
