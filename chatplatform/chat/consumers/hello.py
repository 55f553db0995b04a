"""Joining a conversation: the hello frame, a new or resumed conversation, the welcome, and
catching up on what the customer missed while away (answers, failures, an agent's replies)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from django.conf import settings

from chatplatform.agents import inbox, records
from chatplatform.chat import answering, config, limits, store, visitors
from chatplatform.chat.consumers.background import start_task
from chatplatform.chat.consumers.delivery import AnswerDelivery
from chatplatform.chat.protocol import ErrorCode, Hello, ProtocolError, ServerType
from inference.contracts import conversation_group


class CustomerHello(AnswerDelivery):
    """The hello frame: join a conversation and catch up on it."""

    async def hello(self, hello: Hello) -> None:
        """Join the site's conversation (new or resumed) and greet.

        The socket's state is set only once every step has succeeded, so a hello that failed
        half-way (the database or Redis briefly unavailable) can simply be sent again.
        """
        if self.conversation_id is not None:
            raise ProtocolError(ErrorCode.ALREADY_HELLO, "This socket already joined a chat.")
        site = await self.active_site(hello.site_key)
        vouched = (
            visitors.verified_visitor(hello.site_key, hello.visitor_token)
            if hello.visitor_token
            else None
        )
        conversation_id, resumed = await database_sync_to_async(store.open_conversation)(
            site.id,
            hello.conversation_id,
            vouched or hello.visitor_id,
            self.client_ip,
            visitor_verified=vouched is not None,
        )
        # Join the group before reading what was missed, so that an answer finished in
        # between is either in that read or announced to this socket.
        group = conversation_group(conversation_id)
        await self.channel_layer.group_add(group, self.channel_name)
        try:
            await limits.join_conversation(conversation_id, self.channel_name)
            welcome = await database_sync_to_async(_welcome_data)(site.id, conversation_id, resumed)
        except Exception:
            await self.channel_layer.group_discard(group, self.channel_name)
            await limits.leave_conversation(conversation_id, self.channel_name)
            raise
        self.site, self.conversation_id, self.turns = site, conversation_id, welcome.turns
        self.site_key, self.site_read_at = hello.site_key, time.monotonic()
        self.handoff_status = str(welcome.handoff["status"]) if welcome.handoff else ""
        start_task(answering.prefetch_site(site.id), "cache prefetch")
        await self.send_json(
            {
                "type": ServerType.WELCOME.value,
                "v": config.PROTOCOL_VERSION,
                "conversation_id": conversation_id,
                "resumed": resumed,
                "greeting": site.greeting,
                "quick_replies": welcome.quick_replies,
                "sla_ms": site.sla_ms,
                "max_message_chars": config.MAX_MESSAGE_CHARS,
                "handoff": welcome.handoff,
                "demo_model": settings.DEMO_MODEL,
                "visitor_verified": vouched is not None,
            }
        )
        for frame in welcome.missed:
            await self.deliver_whole(frame)
        for frame in welcome.agent_messages:
            await self.deliver_whole(frame)
        for message_id, client_message_id in welcome.failures:
            await self.report_failure(message_id, client_message_id)
        for unfinished in welcome.unfinished:
            await self.resume_pending(unfinished)


@dataclass(frozen=True)
class WelcomeData:
    quick_replies: list[dict[str, object]]
    turns: list[tuple[str, str]]  # recent (role, text) of a resumed conversation
    missed: list[dict[str, object]]  # finished answers the customer has not received
    failures: list[tuple[str, str]]  # (message id, client_message_id) of unreported failures
    unfinished: list[store.UnfinishedAnswer]  # answers still to come
    handoff: dict[str, object] | None = None  # the open handoff (or a resolve to rate)
    agent_messages: list[dict[str, object]] = field(default_factory=list)  # agent replies missed


def _welcome_data(site_id: int, conversation_id: str, resumed: bool) -> WelcomeData:
    """What a hello needs from the database (one thread hop)."""
    replies = store.quick_replies(site_id, config.QUICK_REPLY_COUNT)
    if not resumed:
        return WelcomeData(replies, [], [], [], [])
    handoff = records.customer_state(conversation_id)
    return WelcomeData(
        quick_replies=replies,
        turns=store.conversation_turns(conversation_id, config.PROMPT_HISTORY_TURNS),
        missed=store.undelivered_answers(conversation_id),
        failures=store.unreported_failures(conversation_id),
        unfinished=store.unfinished_answers(conversation_id),
        handoff=handoff.for_customer() if handoff else None,
        agent_messages=inbox.undelivered_agent_messages(conversation_id),
    )
