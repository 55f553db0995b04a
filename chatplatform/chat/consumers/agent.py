"""The agent's websocket at /ws/agent/: the live inbox of human agents (docs/protocol.md,
"Agent socket").

Staff only, by the dashboards' site access rules (superusers: every site; other staff: the sites
granted to them); anyone else is refused at the handshake (close 4403). The socket joins the
agent group of each site it may read: `inbox.changed` events name a conversation whose summary
(and, if this agent has it open, transcript) is re-read from the database and pushed. Every
action is one conditional update in chatplatform/agents/store.py, so a double claim, a reply to
a conversation not held, or one after a resolve is refused with a stable code.

When the agent's last socket closes, their conversations return to the queue after the grace
period unless they came back (a reload): agents/sweep.py, also run by the CPU worker's beat for
sockets whose process died without closing them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model

from chatplatform.agents import config, events, inbox, notify, presence, records, sweep
from chatplatform.agents import store as agent_store
from chatplatform.agents.protocol import (
    AgentClientType,
    AgentCommand,
    AgentPing,
    AgentServerType,
    ConversationCommand,
    ReplyCommand,
    parse_agent_frame,
)
from chatplatform.chat.consumers.background import GuardedConsumer, start_task
from chatplatform.chat.protocol import ErrorCode, ProtocolError, error_frame
from chatplatform.dashboards.access import readable_sites

logger = logging.getLogger(__name__)

# Close code refusing a socket that is not a signed-in staff user's (mirrors HTTP 403).
CLOSE_FORBIDDEN = 4403


def _readable_site_ids(user: Any) -> list[int]:
    return list(readable_sites(user).values_list("pk", flat=True))


def _current_access(user_id: int) -> list[int] | None:
    """The user's readable sites now; None when they are no longer an active staff user."""
    user = get_user_model().objects.filter(pk=user_id, is_active=True, is_staff=True).first()
    return None if user is None else _readable_site_ids(user)


class AgentConsumer(GuardedConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        self.user_id: int | None = None
        if user is None or not user.is_authenticated or not user.is_staff or not user.is_active:
            await self.close(code=CLOSE_FORBIDDEN)  # before accept: the handshake is refused
            return
        self.user_id = user.pk
        self.name = records.agent_name(user)
        self.site_ids = await database_sync_to_async(_readable_site_ids)(user)
        self.open_id: str | None = None  # the conversation whose transcript is shown
        self.sent: dict[str, tuple[str, str]] = {}  # its messages as sent: id -> (state, text)
        for site_id in self.site_ids:
            await self.channel_layer.group_add(events.site_group(site_id), self.channel_name)
        await presence.heard_from(self.user_id, self.channel_name)
        await self.accept()
        conversations = await database_sync_to_async(inbox.inbox)(self.site_ids)
        await self.send_json(
            {
                "type": AgentServerType.INBOX.value,
                "agent": {"id": self.user_id, "name": self.name},
                "conversations": conversations,
            }
        )

    async def disconnect(self, code: int) -> None:
        if self.user_id is None:
            return
        for site_id in self.site_ids:
            await self.channel_layer.group_discard(events.site_group(site_id), self.channel_name)
        await presence.closed(self.user_id, self.channel_name)
        start_task(_requeue_after_grace(self.user_id), "agent requeue")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        assert self.user_id is not None
        try:
            if text_data is None:
                raise ProtocolError(
                    ErrorCode.BINARY_NOT_SUPPORTED, "Binary frames are not accepted; send JSON."
                )
            command = parse_agent_frame(text_data)
            await presence.heard_from(self.user_id, self.channel_name)
            await self.handle(command)
        except ProtocolError as error:
            await self.send_json(error.frame())
        except Exception:
            logger.exception("agents: failed to handle a frame")
            await self.send_json(
                error_frame(ErrorCode.INTERNAL, "Something went wrong on our side; retry.")
            )

    async def handle(self, command: AgentCommand) -> None:
        if isinstance(command, AgentPing):
            await self.send_json({"type": AgentServerType.PONG.value})
            return
        # Access is read again for every action: a user whose staff status or site grants were
        # withdrawn while the inbox was open acts on what they may read now, or not at all.
        access = await database_sync_to_async(_current_access)(self.user_id)
        if access is None:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.site_ids = access
        if isinstance(command, ReplyCommand):
            await self.reply(command)
        else:
            try:
                await self.act(command)
            except ProtocolError as error:
                error.ref = error.ref or command.conversation_id
                raise

    async def act(self, command: ConversationCommand) -> None:
        kind, conversation_id = command.kind, command.conversation_id
        if kind == AgentClientType.OPEN:
            await self.open(conversation_id)
        elif kind == AgentClientType.CLAIM:
            await self.claim(conversation_id)
        elif kind == AgentClientType.TYPING:
            await self.typing(conversation_id)
        elif kind == AgentClientType.HAND_BACK:
            handoff = await self.db(agent_store.hand_back, conversation_id)
            await events.to_customer(conversation_id, events.agent_left(self.name, "handed_back"))
            await self.acted(AgentServerType.HAND_BACK_OK, handoff, notify.Event.HANDED_BACK)
        elif kind == AgentClientType.RESOLVE:
            handoff = await self.db(agent_store.resolve, conversation_id)
            await events.to_customer(conversation_id, events.handoff_resolved(handoff))
            await self.acted(AgentServerType.RESOLVE_OK, handoff, notify.Event.RESOLVED)

    async def db(self, action: Any, conversation_id: str) -> records.HandoffView:
        """A store action of this agent on a conversation of their sites."""
        return await database_sync_to_async(action)(conversation_id, self.user_id, self.site_ids)

    async def acted(self, reply: AgentServerType, handoff: records.HandoffView, event: str) -> None:
        await self.send_json({"type": reply.value, "conversation_id": handoff.conversation_id})
        await events.inbox_changed(handoff.site_id, handoff.conversation_id)
        await database_sync_to_async(notify.handoff_event)(handoff.handoff_id, event)

    async def open(self, conversation_id: str) -> None:
        messages = await database_sync_to_async(inbox.transcript)(conversation_id, self.site_ids)
        summary = await database_sync_to_async(inbox.conversation_summary)(
            conversation_id, self.site_ids
        )
        self.open_id = conversation_id
        self.sent = {str(m["id"]): (str(m["state"]), str(m["text"])) for m in messages}
        await self.send_json(
            {
                "type": AgentServerType.TRANSCRIPT.value,
                "conversation_id": conversation_id,
                "conversation": summary,
                "messages": messages,
            }
        )

    async def claim(self, conversation_id: str) -> None:
        claim = database_sync_to_async(agent_store.claim)
        handoff, claimed_now = await claim(conversation_id, self.user_id, self.site_ids)
        if not claimed_now:  # this agent held it already (a resent claim): nothing changes
            await self.send_json(
                {"type": AgentServerType.CLAIM_OK.value, "conversation_id": conversation_id}
            )
            return
        await events.to_customer(conversation_id, events.agent_joined(handoff))
        await self.acted(AgentServerType.CLAIM_OK, handoff, notify.Event.CLAIMED)

    async def typing(self, conversation_id: str) -> None:
        summary = await database_sync_to_async(inbox.conversation_summary)(
            conversation_id, self.site_ids
        )
        if summary is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, "No conversation with this id in your sites.")
        if summary["status"] != "held" or summary["agent_id"] != self.user_id:
            raise ProtocolError(ErrorCode.NOT_HOLDER, agent_store.NOT_HOLDER_TEXT)
        await events.to_customer(conversation_id, events.agent_typing(self.name))

    async def reply(self, command: ReplyCommand) -> None:
        try:
            message, created = await database_sync_to_async(agent_store.reply)(
                command.conversation_id,
                self.user_id,
                self.site_ids,
                command.client_message_id,
                command.text,
            )
        except ProtocolError as error:
            error.ref = command.client_message_id
            raise
        await self.send_json(
            {
                "type": AgentServerType.REPLY_OK.value,
                "conversation_id": command.conversation_id,
                "client_message_id": command.client_message_id,
                "message_id": message.message_id,
                "duplicate": not created,
            }
        )
        if created:  # a resend is acked again, never delivered twice
            await events.to_customer(command.conversation_id, events.agent_message(message))
            await events.inbox_changed(message.site_id, command.conversation_id)

    # --- events from the site groups ----------------------------------------------------------

    async def inbox_changed(self, event: dict[str, Any]) -> None:
        conversation_id = event["conversation_id"]
        summary = await database_sync_to_async(inbox.conversation_summary)(
            conversation_id, self.site_ids
        )
        if summary is None:
            return
        await self.send_json({"type": AgentServerType.CONVERSATION.value, "conversation": summary})
        if conversation_id == self.open_id:
            await self.send_new_messages(conversation_id)

    async def send_new_messages(self, conversation_id: str) -> None:
        messages = await database_sync_to_async(inbox.transcript)(conversation_id, self.site_ids)
        changed = []
        for message in messages:
            seen = (str(message["state"]), str(message["text"]))
            if self.sent.get(str(message["id"])) != seen:
                self.sent[str(message["id"])] = seen
                changed.append(message)
        if changed:
            await self.send_json(
                {
                    "type": AgentServerType.MESSAGES.value,
                    "conversation_id": conversation_id,
                    "messages": changed,
                }
            )

    async def send_json(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(frame, ensure_ascii=False))


async def _requeue_after_grace(user_id: int) -> None:
    """The agent's last socket may have closed: after the grace, unless they are back, their
    conversations return to the queue (the sweep does the same for sockets that died)."""
    await asyncio.sleep(config.RECONNECT_GRACE_S)
    await database_sync_to_async(sweep.requeue_if_gone)(user_id)
