"""The websocket protocol (version 1): message types, error codes and client-frame validation.

docs/protocol.md is the prose description; this module is the one place where type names and
error codes are spelled. `parse_client_frame` turns raw text into a typed command or raises
`ProtocolError(code, message)`; nothing the client sends reaches the consumer unvalidated.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from chatplatform.chat import config


class ClientType(StrEnum):
    HELLO = "hello"
    MESSAGE = "message"
    FEEDBACK = "feedback"
    HANDOFF = "handoff"
    CONTACT = "contact"  # an e-mail address for a reply, when no agent is available
    RATING = "rating"  # 1-5 and a comment, once an agent resolved the conversation
    PING = "ping"
    CHOOSE_SUGGESTION = "choose_suggestion"  # one click on a "did you mean" suggestion
    DECLINE_SUGGESTIONS = "decline_suggestions"  # "none of these"


class ServerType(StrEnum):
    WELCOME = "welcome"
    ACK = "ack"
    ANSWER = "answer"  # a whole answer at once (cache, or a finished answer on resume)
    ANSWER_START = "answer.start"
    ANSWER_DELTA = "answer.delta"
    ANSWER_END = "answer.end"
    HOLDING = "holding"  # honest holding reply inside the SLA; the model's answer follows
    SUGGESTIONS = "suggestions"  # "did you mean": FAQs to answer a missed question in one click
    SUGGESTIONS_DECLINED = "suggestions.declined"  # "none of these" taken
    FEEDBACK_OK = "feedback.ok"
    HANDOFF_OK = "handoff.ok"
    # Human agents (chatplatform/agents/): the customer's side of a handoff.
    HANDOFF_UNAVAILABLE = "handoff.unavailable"  # outside opening hours, or nobody answered
    AGENT_JOINED = "agent.joined"
    AGENT_MESSAGE = "agent.message"
    AGENT_TYPING = "agent.typing"
    AGENT_LEFT = "agent.left"
    HANDOFF_RESOLVED = "handoff.resolved"  # the widget then asks for a rating
    CONTACT_OK = "contact.ok"
    RATING_OK = "rating.ok"
    PONG = "pong"
    ERROR = "error"


class ErrorCode(StrEnum):
    BAD_JSON = "bad_json"
    BINARY_NOT_SUPPORTED = "binary_not_supported"
    FRAME_TOO_LARGE = "frame_too_large"
    UNKNOWN_TYPE = "unknown_type"
    BAD_FIELD = "bad_field"
    UNSUPPORTED_VERSION = "unsupported_version"
    HELLO_REQUIRED = "hello_required"
    ALREADY_HELLO = "already_hello"
    UNKNOWN_SITE = "unknown_site"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    UNKNOWN_MESSAGE = "unknown_message"
    EMPTY_MESSAGE = "empty_message"
    MESSAGE_TOO_LONG = "message_too_long"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    MODEL_UNAVAILABLE = "model_unavailable"
    OVERLOADED = "overloaded"  # the model's queue is beyond what it can serve in time
    ANSWER_FAILED = "answer_failed"
    ANSWER_TIMEOUT = "answer_timeout"
    INTERNAL = "internal_error"
    # Human agents: the customer's frames.
    NO_HANDOFF = "no_handoff"
    NOT_RESOLVED = "not_resolved"
    # Human agents: the agent socket's frames (chatplatform/chat/consumers/agent.py).
    NOT_FOUND = "not_found"
    NOT_WAITING = "not_waiting"
    ALREADY_CLAIMED = "already_claimed"
    NOT_HOLDER = "not_holder"
    # "Did you mean": choose_suggestion and decline_suggestions.
    NOT_SUGGESTED = "not_suggested"
    SUGGESTION_GONE = "suggestion_gone"
    ALREADY_CHOSEN = "already_chosen"
    ALREADY_DECLINED = "already_declined"


class ProtocolError(Exception):
    """A client-facing error: a stable code plus a human message (and the frame it concerns)."""

    def __init__(self, code: ErrorCode, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref

    def frame(self) -> dict[str, Any]:
        return error_frame(self.code, self.message, self.ref)


def error_frame(code: ErrorCode, message: str, ref: str | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": ServerType.ERROR.value, "code": code.value, "message": message}
    if ref is not None:
        frame["ref"] = ref
    return frame


@dataclass(frozen=True)
class Hello:
    site_key: str
    conversation_id: str | None
    visitor_id: str
    visitor_token: str | None = None  # the site's signature of a visitor (chat/visitors.py)


@dataclass(frozen=True)
class ChatMessage:
    client_message_id: str
    text: str


@dataclass(frozen=True)
class Feedback:
    message_id: str
    positive: bool


@dataclass(frozen=True)
class ChooseSuggestion:
    message_id: str  # the customer's question the suggestions were shown for
    faq_id: int


@dataclass(frozen=True)
class DeclineSuggestions:
    message_id: str


@dataclass(frozen=True)
class Handoff:
    pass


@dataclass(frozen=True)
class Contact:
    email: str


@dataclass(frozen=True)
class Rating:
    score: int
    comment: str


@dataclass(frozen=True)
class Ping:
    pass


ClientCommand = (
    Hello
    | ChatMessage
    | Feedback
    | Handoff
    | Contact
    | Rating
    | Ping
    | ChooseSuggestion
    | DeclineSuggestions
)

# Client-chosen ids: short and boring, so they are safe in logs, keys and the database column.
_CLIENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# A site's signed visitor token (checked for its signature by chat/visitors.py).
_VISITOR_TOKEN = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
# The longest spelling uuid.UUID accepts ("urn:uuid:{...}"); longer text is not an id.
_MAX_UUID_CHARS = 47
# Control characters other than tab/newline never belong in a chat message.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Protocol frames are flat objects (depth 1). Deeper JSON is never a valid frame, and ~1,000
# levels (a 2 KB frame) made the decoder raise RecursionError, a traceback in the log at will.
MAX_JSON_DEPTH = 16
# A JSON string (escapes included) or a bracket: brackets inside strings are not nesting.
_JSON_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def load_frame(text: str) -> dict[str, Any]:
    """A text frame within the size limit, as the JSON object it must be (both sockets)."""
    if len(text.encode("utf-8", "surrogatepass")) > config.MAX_FRAME_BYTES:
        raise ProtocolError(
            ErrorCode.FRAME_TOO_LARGE, f"Frames are limited to {config.MAX_FRAME_BYTES} bytes."
        )
    if _nesting_depth(text) > MAX_JSON_DEPTH:
        raise ProtocolError(
            ErrorCode.BAD_JSON, f"Frames are flat JSON objects (nesting over {MAX_JSON_DEPTH})."
        )
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: a last guard, see MAX_JSON_DEPTH
        raise ProtocolError(ErrorCode.BAD_JSON, "Frames must be JSON objects.") from None
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.BAD_JSON, "Frames must be JSON objects.")
    return data


def parse_client_frame(text: str) -> ClientCommand:
    """Validate one text frame and return the command it carries."""
    data = load_frame(text)
    kind = data.get("type")
    parsers = {
        ClientType.HELLO: _parse_hello,
        ClientType.MESSAGE: parse_message_fields,
        ClientType.FEEDBACK: _parse_feedback,
        ClientType.HANDOFF: lambda _: Handoff(),
        ClientType.CONTACT: _parse_contact,
        ClientType.RATING: _parse_rating,
        ClientType.PING: lambda _: Ping(),
        ClientType.CHOOSE_SUGGESTION: _parse_choose_suggestion,
        ClientType.DECLINE_SUGGESTIONS: lambda d: DeclineSuggestions(
            parse_uuid(d.get("message_id"), "message_id")
        ),
    }
    if not isinstance(kind, str) or kind not in parsers:
        known = ", ".join(t.value for t in ClientType)
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"Unknown type; expected one of {known}.")
    return parsers[ClientType(kind)](data)


def _nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in `text` (JSON or not), without decoding it."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return 0  # the common case, answered by two C-speed counts: it cannot nest deeper
    depth = deepest = 0
    for token in _JSON_STRING_OR_BRACKET.finditer(text):
        bracket = token.group()
        if bracket in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif bracket in ("]", "}"):
            depth -= 1
    return deepest


def _parse_hello(data: dict[str, Any]) -> Hello:
    version = data.get("v")
    # bool is an int in Python: `true` must not pass for version 1.
    if not isinstance(version, int) or isinstance(version, bool):
        raise ProtocolError(
            ErrorCode.BAD_FIELD,
            f"v must be the protocol version, the integer {config.PROTOCOL_VERSION}.",
        )
    if version != config.PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"This server speaks protocol version {config.PROTOCOL_VERSION}.",
        )
    site_key = data.get("site_key")
    if not _is_client_id(site_key):
        raise ProtocolError(ErrorCode.BAD_FIELD, "site_key must be 1-64 letters, digits or _.:-")
    conversation_id = data.get("conversation_id")
    if conversation_id is not None:
        conversation_id = parse_uuid(conversation_id, "conversation_id")
    visitor_id = data.get("visitor_id")
    if visitor_id is None or visitor_id == "":
        visitor_id = ""
    elif not _is_client_id(visitor_id):
        raise ProtocolError(ErrorCode.BAD_FIELD, "visitor_id must be 1-64 letters, digits or _.:-")
    visitor_token = data.get("visitor_token")
    if visitor_token is not None and not (
        isinstance(visitor_token, str) and _VISITOR_TOKEN.fullmatch(visitor_token)
    ):
        raise ProtocolError(
            ErrorCode.BAD_FIELD, "visitor_token must be 1-200 letters, digits or _.:-"
        )
    return Hello(
        site_key=site_key,
        conversation_id=conversation_id,
        visitor_id=visitor_id,
        visitor_token=visitor_token,
    )


def parse_message_fields(data: dict[str, Any]) -> ChatMessage:
    """`client_message_id` and `text` of a customer message or an agent's reply."""
    client_message_id = data.get("client_message_id")
    if not _is_client_id(client_message_id):
        raise ProtocolError(
            ErrorCode.BAD_FIELD, "client_message_id must be 1-64 letters, digits or _.:-"
        )
    text = data.get("text")
    if not isinstance(text, str):
        raise ProtocolError(ErrorCode.BAD_FIELD, "text must be a string.", client_message_id)
    text = _CONTROL.sub("", text).strip()
    if not text:
        raise ProtocolError(ErrorCode.EMPTY_MESSAGE, "The message is empty.", client_message_id)
    if len(text) > config.MAX_MESSAGE_CHARS:
        raise ProtocolError(
            ErrorCode.MESSAGE_TOO_LONG,
            f"Messages are limited to {config.MAX_MESSAGE_CHARS} characters.",
            client_message_id,
        )
    if _has_lone_surrogate(text):
        raise ProtocolError(ErrorCode.BAD_FIELD, "text is not valid Unicode.", client_message_id)
    return ChatMessage(client_message_id=client_message_id, text=text)


def _parse_feedback(data: dict[str, Any]) -> Feedback:
    message_id = parse_uuid(data.get("message_id"), "message_id")
    value = data.get("value")
    if value not in ("up", "down"):
        raise ProtocolError(ErrorCode.BAD_FIELD, 'value must be "up" or "down".')
    return Feedback(message_id=message_id, positive=value == "up")


def _parse_contact(data: dict[str, Any]) -> Contact:
    email = data.get("email")
    if not isinstance(email, str) or not _is_email(email.strip()):
        raise ProtocolError(ErrorCode.BAD_FIELD, "email must be an e-mail address.")
    return Contact(email=email.strip())


def _parse_rating(data: dict[str, Any]) -> Rating:
    score = data.get("score")
    if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5:
        raise ProtocolError(ErrorCode.BAD_FIELD, "score must be a whole number from 1 to 5.")
    comment = data.get("comment") or ""
    if not isinstance(comment, str):
        raise ProtocolError(ErrorCode.BAD_FIELD, "comment must be a string.")
    comment = _CONTROL.sub("", comment).strip()
    if len(comment) > config.MAX_RATING_COMMENT_CHARS or _has_lone_surrogate(comment):
        raise ProtocolError(
            ErrorCode.BAD_FIELD,
            f"comment must be valid text of at most {config.MAX_RATING_COMMENT_CHARS} characters.",
        )
    return Rating(score=score, comment=comment)


def _is_email(value: str) -> bool:
    # RFC 5321's limits (Django's validator does not check them): 254 in all, 64 before the @.
    if len(value) > 254 or len(value.partition("@")[0]) > 64:
        return False
    try:
        validate_email(value)
    except ValidationError:
        return False
    return not _has_lone_surrogate(value)


def _parse_choose_suggestion(data: dict[str, Any]) -> ChooseSuggestion:
    message_id = parse_uuid(data.get("message_id"), "message_id")
    faq_id = data.get("faq_id")
    # bool is an int in Python; ids are positive and fit the database's 64-bit column.
    if not isinstance(faq_id, int) or isinstance(faq_id, bool) or not 0 < faq_id < 2**63:
        raise ProtocolError(ErrorCode.BAD_FIELD, "faq_id must be a suggestion's faq_id.")
    return ChooseSuggestion(message_id=message_id, faq_id=faq_id)


def parse_uuid(value: Any, name: str) -> str:
    # Only strings: str() of a number or an object must not be parsed as an id.
    if not isinstance(value, str) or len(value) > _MAX_UUID_CHARS:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{name} must be a UUID.")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"{name} must be a UUID.") from None


def _is_client_id(value: Any) -> bool:
    # fullmatch: `$` would let a trailing newline through.
    return isinstance(value, str) and _CLIENT_ID.fullmatch(value) is not None


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
