"""The agent socket's frames (/ws/agent/, the inbox page): types and validation.

Error codes and the error frame are the customer protocol's (chatplatform/chat/protocol.py), so
each code is spelled once; docs/protocol.md describes both sockets. The two sockets parse with
different functions: a customer socket has no way to send any of these frames (`unknown_type`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from chatplatform.chat.protocol import (
    ErrorCode,
    ProtocolError,
    load_frame,
    parse_message_fields,
    parse_uuid,
)


class AgentClientType(StrEnum):
    OPEN = "open"  # show a conversation's transcript (and follow it live)
    CLAIM = "claim"
    REPLY = "reply"
    TYPING = "typing"
    HAND_BACK = "hand_back"
    RESOLVE = "resolve"
    PING = "ping"


class AgentServerType(StrEnum):
    INBOX = "inbox"  # on connect: every open handoff of the agent's sites
    CONVERSATION = "conversation"  # one conversation's summary changed (or left the queue)
    TRANSCRIPT = "transcript"  # answer to `open`: every message
    MESSAGES = "messages"  # new or changed messages of the open conversation
    CLAIM_OK = "claim.ok"
    REPLY_OK = "reply.ok"
    HAND_BACK_OK = "hand_back.ok"
    RESOLVE_OK = "resolve.ok"
    PONG = "pong"


@dataclass(frozen=True)
class ConversationCommand:
    """open, claim, typing, hand_back or resolve of one conversation."""

    kind: AgentClientType
    conversation_id: str


@dataclass(frozen=True)
class ReplyCommand:
    conversation_id: str
    client_message_id: str
    text: str


@dataclass(frozen=True)
class AgentPing:
    pass


AgentCommand = ConversationCommand | ReplyCommand | AgentPing


def parse_agent_frame(text: str) -> AgentCommand:
    data = load_frame(text)
    kind = data.get("type")
    if not isinstance(kind, str) or kind not in {t.value for t in AgentClientType}:
        known = ", ".join(t.value for t in AgentClientType)
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"Unknown type; expected one of {known}.")
    kind = AgentClientType(kind)
    if kind == AgentClientType.PING:
        return AgentPing()
    conversation_id = parse_uuid(data.get("conversation_id"), "conversation_id")
    if kind != AgentClientType.REPLY:
        return ConversationCommand(kind, conversation_id)
    message = parse_message_fields(data)
    return ReplyCommand(conversation_id, message.client_message_id, message.text)
