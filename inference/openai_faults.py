"""What went wrong with a call to the OpenAI-compatible server, and whether to try again.

Pure logic, unit-tested directly. `classify` turns what the `openai` client raised (or what
`openai_engine` found wrong in a stream) into a `Fault`; `retry_delay_s` says how long to wait
before the next attempt, or None when the request must end in the chat error instead: the
fault is not one that passes (a 400, a wrong key), or the wait would end after the request's
retry window.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from dataclasses import dataclass
from enum import StrEnum

import openai

# Backoff between attempts when the server gives no Retry-After: first retries come fast (a
# restarted server is often back within a second), later ones spread out.
BACKOFF_S = (0.1, 0.25, 0.5, 1.0, 2.0)


class FaultKind(StrEnum):
    UNREACHABLE = "unreachable"  # refused, reset, DNS: the server is down or restarting
    RATE_LIMITED = "rate_limited"  # 429 (Retry-After honoured)
    SERVER_ERROR = "server_error"  # 5xx
    STREAM_CUT = "stream_cut"  # the stream ended without a finish reason, or was aborted
    MALFORMED = "malformed_chunk"  # a chunk that is not JSON or not a chat completion chunk
    STALLED = "stalled"  # no byte for the stall timeout (first token or between chunks)
    REJECTED = "rejected"  # 4xx other than 429: retrying the same request cannot help


class StreamCutError(Exception):
    """The server's stream ended before a chunk with a finish reason."""


class MalformedChunkError(Exception):
    """A stream chunk the client parsed but that is not a chat completion chunk."""


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    detail: str  # for logs: never the API key (the client's messages do not carry it)
    retry_after_s: float | None = None  # what the server asked for, if it did

    @property
    def retryable(self) -> bool:
        return self.kind is not FaultKind.REJECTED


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        now = time.time() if now is None else now
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def classify(error: BaseException) -> Fault:
    """The fault behind an exception from a call or its stream."""
    if isinstance(error, openai.APITimeoutError):
        return Fault(FaultKind.STALLED, "no answer from the server within the stall timeout")
    if isinstance(error, openai.APIConnectionError):
        cause = error.__cause__ or error
        return Fault(FaultKind.UNREACHABLE, f"{type(cause).__name__}: {cause}")
    if isinstance(error, openai.APIStatusError):
        status = error.status_code
        detail = f"HTTP {status}: {error.message}"
        if status == 429:
            retry_after = parse_retry_after(error.response.headers.get("retry-after"))
            return Fault(FaultKind.RATE_LIMITED, detail, retry_after)
        if status >= 500:
            return Fault(FaultKind.SERVER_ERROR, detail)
        return Fault(FaultKind.REJECTED, detail)
    if isinstance(error, openai.APIError):
        # An error object inside the stream (the server failed mid-answer).
        return Fault(FaultKind.STREAM_CUT, f"error in the stream: {error.message}")
    if isinstance(error, StreamCutError):
        return Fault(FaultKind.STREAM_CUT, str(error))
    if isinstance(error, (MalformedChunkError, json.JSONDecodeError)):
        return Fault(FaultKind.MALFORMED, f"{type(error).__name__}: {error}")
    raise TypeError(f"not a server fault: {error!r}") from error


def retry_delay_s(fault: Fault, attempt: int, now: float, give_up_at: float) -> float | None:
    """Seconds to wait before attempt `attempt + 1`, or None to give up.

    A Retry-After the server sent is honoured as is; otherwise the backoff schedule. Gives up
    when the next attempt would start after `give_up_at` rather than wait and fail anyway.
    """
    if not fault.retryable:
        return None
    if fault.retry_after_s is not None:
        delay = fault.retry_after_s
    else:
        delay = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
    if now + delay > give_up_at:
        return None
    return delay
