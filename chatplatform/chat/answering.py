"""The chat side of answering: the semantic cache, the prompt and the inference task.

Thin adapters over the cache's service and the inference contract, so the consumer reads as
the sequence of steps it performs. The cache (and its encoder, ~10 s to load) is loaded once
per process on first use, off the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from asgiref.sync import sync_to_async

from chatplatform.chat import config
from inference.admission import Fleet, should_shed
from inference.contracts import InferenceRequest, Queue, TaskName
from inference.prompt import FaqEntry, build_messages, faq_head

logger = logging.getLogger(__name__)

HOLDING_TEXT = (
    "Thanks for your patience: our assistant needs a few more seconds and its answer will "
    "appear here."
)
HOLDING_SUGGESTIONS_TEXT = "Meanwhile, one of these answers may already help:"
OVERLOADED_TEXT = "Our assistant is very busy right now. Please try again in a minute."
UNAVAILABLE_TEXT = (
    "Sorry, our assistant cannot answer this right now. You can ask to talk to a human."
)

_cache: Any = None
_cache_lock: asyncio.Lock | None = None
_fleet: Fleet | None = None
# Admission reads must not hold a question up: Redis answers in well under this.
FLEET_TIMEOUT_S = 0.5


class InferenceOverloadedError(RuntimeError):
    """The model's queue holds more than the workers can start within CHAT_SHED_AFTER_S."""


# site id -> (monotonic time read, its FAQ head); re-read after config.SITE_REFRESH_S.
_heads: dict[int, tuple[float, list[Suggestion]]] = {}


@dataclass(frozen=True)
class Suggestion:
    faq_id: int
    question: str
    answer: str
    faq_version: int = 0  # the version shown: the grounding of the model's answer

    def as_dict(self) -> dict[str, object]:
        return {"faq_id": self.faq_id, "question": self.question, "answer": self.answer}

    @property
    def ref(self) -> str:
        """The grounding reference of the version shown: "faq_id:version"."""
        return f"{self.faq_id}:{self.faq_version}"

    def as_entry(self) -> FaqEntry:
        return FaqEntry(self.question, self.answer, self.ref)


def get_cache_sync() -> Any:
    """The process's semantic cache (built and warmed on first call)."""
    from chatplatform.semanticcache.service import get_cache

    return get_cache()


def warm_up_in_background() -> None:
    """Load the cache (encoder, indexes) now, in a thread, so the first customer of a fresh
    server process does not wait ~1-2 s for it."""
    threading.Thread(target=get_cache_sync, name="chat-cache-warm-up", daemon=True).start()


async def get_cache() -> Any:
    """The process's semantic cache; the first call loads it in a thread, others wait for it."""
    global _cache, _cache_lock
    if _cache is not None:
        return _cache
    if _cache_lock is None:
        _cache_lock = asyncio.Lock()
    async with _cache_lock:
        if _cache is None:
            _cache = await asyncio.to_thread(get_cache_sync)
    return _cache


async def lookup(site_id: int, question: str, conversation_id: str, history: list[str]) -> Any:
    """The cache's LookupResult for a customer question (never raises on odd input)."""
    cache = await get_cache()
    return await cache.alookup(
        str(site_id), question, conversation_id=conversation_id, history=history
    )


async def prefetch_site(site_id: int) -> None:
    """Hold the site's cache index in this process before its customer's first question: a
    site the process does not hold (many tenants, cache/replica.py) is read from Redis here,
    while the customer reads the greeting, instead of during the first lookup."""
    cache = await get_cache()
    await cache.aprefetch(str(site_id))


async def suggestions(site_id: int, question: str) -> list[Suggestion]:
    """The FAQ entries nearest the question: prompt grounding and holding-reply suggestions."""
    cache = await get_cache()
    found = await cache.anearest_faqs(str(site_id), question, k=config.SUGGESTION_COUNT)
    return [
        Suggestion(faq_id=s.faq_id, question=s.question, answer=s.answer, faq_version=s.faq_version)
        for s in found
    ]


async def did_you_mean(site_id: int, question: str, result: Any) -> list[tuple[int, str]]:
    """(faq_id, question) of the FAQs to suggest after `result`, the question's cache miss:
    none after a hit, a follow-up or a value mismatch, only the site's own FAQs."""
    cache = await get_cache()
    found = await cache.asuggest(str(site_id), question, result, k=config.SUGGESTION_COUNT)
    return [(s.faq_id, s.question) for s in found]


def site_faq_head_sync(site_id: int) -> list[Suggestion]:
    """The site's first active FAQs by id, within the head's limits (`inference.prompt.faq_head`:
    a fixed order, so a new FAQ or an edit of a later one leaves the prompt prefix unchanged).
    """
    from chatplatform.faq.models import FAQ

    rows = (
        FAQ.objects.filter(site_id=site_id, is_active=True)
        .order_by("id")
        .values_list("id", "version", "question", "answer")[: config.SITE_FAQ_HEAD_ENTRIES]
    )
    faqs = [Suggestion(faq_id, q, a, faq_version=version) for faq_id, version, q, a in rows]
    head = faq_head(
        [s.as_entry() for s in faqs], config.SITE_FAQ_HEAD_ENTRIES, config.SITE_FAQ_HEAD_CHARS
    )
    return faqs[: len(head)]


async def site_faq_head(site_id: int) -> list[Suggestion]:
    """`site_faq_head_sync`, read at most once per SITE_REFRESH_S per site and process.

    A head read just before an FAQ edit shows the old version; the answer's grounding says
    so, and the cache refuses to store an answer written from an FAQ version it no longer
    holds, so a stale head costs at most a cache admission, never a wrong cached answer.
    """
    now = time.monotonic()
    cached = _heads.get(site_id)
    if cached is not None and now - cached[0] < config.SITE_REFRESH_S:
        return cached[1]
    head = await sync_to_async(site_faq_head_sync, thread_sensitive=False)(site_id)
    _heads[site_id] = (now, head)
    return head


def inference_request(
    *,
    conversation_id: str,
    message_id: str,
    site_id: int,
    instructions: str,
    grounding: Sequence[Suggestion],
    history: Sequence[tuple[str, str]],
    question: str,
    arrival: float,
    sla_ms: int,
    site_faqs: Sequence[Suggestion] = (),
) -> InferenceRequest:
    """The model request for one question: its deadline is arrival + the site's SLA.

    The prompt opens with the site's FAQ head (`site_faqs`, the same for every question) and
    adds the question's nearest FAQs the head lacks; the grounding lists every FAQ version
    shown (the worker removes any it had to leave out to fit the prompt).
    """
    in_head = {s.faq_id for s in site_faqs}
    nearest = [s for s in grounding if s.faq_id not in in_head]
    messages = build_messages(
        instructions,
        [s.as_entry() for s in nearest],
        history,
        question,
        site_faqs=[s.as_entry() for s in site_faqs],
    )
    return InferenceRequest(
        conversation_id=conversation_id,
        message_id=message_id,
        site_id=str(site_id),
        messages=messages,
        deadline=arrival + sla_ms / 1000.0,
        max_new_tokens=config.MAX_NEW_TOKENS,
        arrival=arrival,
        grounding=[s.ref for s in [*site_faqs, *nearest]],
    )


def _fleet_sync() -> Fleet:
    global _fleet
    if _fleet is None:
        from django.conf import settings

        client = redis.Redis.from_url(
            settings.REDIS_URL,
            socket_timeout=FLEET_TIMEOUT_S,
            socket_connect_timeout=FLEET_TIMEOUT_S,
        )
        _fleet = Fleet(client, Queue.INFERENCE.value)
    return _fleet


def _check_capacity_sync() -> None:
    """Raise InferenceOverloadedError when a new request would wait past the shed horizon."""
    try:
        backlog, workers = _fleet_sync().read()
    except redis.RedisError as error:  # the send itself will say whether Redis is down
        logger.warning("chat: cannot read the inference fleet: %s", error)
        return
    if should_shed(backlog, workers, config.SHED_AFTER_S):
        raise InferenceOverloadedError(
            f"{backlog} requests queued for {len(workers)} workers: over {config.SHED_AFTER_S} s"
        )


def _send_inference_sync(request: InferenceRequest) -> None:
    from chatplatform.celery_app import app

    _check_capacity_sync()

    app.send_task(
        TaskName.GENERATE_ANSWER.value, args=[request.to_dict()], queue=Queue.INFERENCE.value
    )


async def send_inference(request: InferenceRequest) -> None:
    """Queue the request for a GPU worker (the broker call runs off the event loop); raises
    InferenceOverloadedError instead when the queue is beyond what the workers can serve."""
    await sync_to_async(_send_inference_sync, thread_sensitive=False)(request)


def holding_text(found: Sequence[Suggestion]) -> str:
    if not found:
        return HOLDING_TEXT
    return f"{HOLDING_TEXT} {HOLDING_SUGGESTIONS_TEXT}"


def ms_since(start: float) -> float:
    return (time.time() - start) * 1000.0
