"""The contract between the chat layer and the inference workers.

Both sides import this module and nothing else of each other's: the web process sends an
`InferenceRequest` as a Celery task on `Queue.INFERENCE`; the worker streams `StreamEvent`s
to the conversation's channel-layer group and, when done, sends the `InferenceResult` to the
CPU queue for persisting. This module must stay free of Django and torch imports so a GPU
worker and a web process can both load it cheaply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Queue(StrEnum):
    """Celery queue names. One place for them, so routing and workers never disagree."""

    # GPU work: one model copy per worker process; only Redis is reachable from there.
    INFERENCE = "inference"
    # Everything that touches the SQL database: persisting answers, metrics, cache admission.
    CPU = "cpu"


class TaskName(StrEnum):
    """Celery task names used across the process boundary (sent by name, never imported)."""

    GENERATE_ANSWER = "inference.generate_answer"
    FINALIZE_ANSWER = "chatplatform.finalize_answer"


class StreamEventType(StrEnum):
    """The `type` of channel-layer messages a worker sends to a conversation group.

    Channels dispatches a group message to the consumer method named after its type with
    dots turned into underscores (`answer.delta` -> `answer_delta`).
    """

    START = "answer.start"  # the model admitted the request and began prefill
    DELAYED = "answer.delayed"  # admitted, but the first token will miss the deadline:
    # carries `estimated_ttft_ms` so the chat layer sends a holding reply now; the answer follows
    DELTA = "answer.delta"  # new text, coalesced to at most one message per ~30 ms
    END = "answer.end"  # finished; carries the InferenceResult as a dict
    REFUSED = "answer.refused"  # cannot make the deadline or bad request; carries code+message
    ERROR = "answer.error"  # the worker failed mid-answer


# Totals the workers keep in Redis (no expiry) and the chat side's /metrics reports as counters.
SHED_TOTAL_KEY = "inference:shed_total"  # requests a worker refused as `overloaded`
HANDED_BACK_TOTAL_KEY = "inference:handed_back_total"  # handed back for an idle worker


def conversation_group(conversation_id: str) -> str:
    """Channel-layer group name of one conversation (group names allow [a-zA-Z0-9_.-])."""
    return f"conversation.{conversation_id}"


def cancel_key(message_id: str) -> str:
    """Redis key the chat layer sets when the customer went away; workers stop that request."""
    return f"inference:cancel:{message_id}"


def answered_key(message_id: str) -> str:
    """Redis key that closes a message once, taken with SET NX: by the worker that sends its
    final event (answer.end, answer.refused, answer.error), or by the chat layer when the
    answer timed out (the worker then sends nothing more). Whoever takes it has the last word."""
    return f"inference:answered:{message_id}"


# Longer than any redelivery or late timeout of the same message.
ANSWERED_TTL_S = 24 * 3600


@dataclass(frozen=True)
class PromptMessage:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class InferenceRequest:
    conversation_id: str
    message_id: str  # the customer's message this answers; also the idempotency key
    site_id: str
    messages: list[PromptMessage]
    deadline: float  # unix time (seconds) by which the first token must reach the customer
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    arrival: float = 0.0  # unix time the customer's message arrived at the server
    # The FAQ versions in the prompt ("faq_id:version"). The worker does not read them; it
    # hands them back on the result so that the cache knows what the answer was grounded on.
    grounding: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InferenceRequest:
        messages = [PromptMessage(**m) for m in data["messages"]]
        return cls(**{**data, "messages": messages})


@dataclass(frozen=True)
class InferenceResult:
    conversation_id: str
    message_id: str
    site_id: str
    text: str
    finish_reason: str  # "stop" | "length" | "cancelled" | "deadline" | "error"
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None  # arrival -> first token produced; None if none was produced
    total_ms: float  # arrival -> last token
    gpu_seconds: float = 0.0  # engine time attributable to this request (for cost figures)
    grounding: list[str] = field(default_factory=list)  # the request's, handed back

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InferenceResult:
        return cls(**data)
