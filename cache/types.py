"""The cache's data types: entries as stored, and what lookups return."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np


class Source(StrEnum):
    FAQ = "faq"  # derived from a curated FAQ: trusted, active at once, never expires
    GENERATED = "generated"  # a model's answer to a real question: admission policy applies


class State(StrEnum):
    """Lifecycle of an entry. Only ACTIVE entries are served."""

    ACTIVE = "active"  # served (FAQ entries at once; generated ones once admitted)
    PENDING = "pending"  # generated, waiting for more visitors or an admin's approval
    REJECTED = "rejected"  # an admin said no, or the answers disagreed; kept for review
    FLAGGED = "flagged"  # repeated thumbs-down: not served, listed for review


class Admission(StrEnum):
    """What `offer_generated` did with a model answer (a stable code for logs and admin)."""

    PENDING = "pending"
    ADMITTED = "admitted"
    ALREADY_CACHED = "already_cached"
    REJECTED_PERSONAL_DATA = "rejected_personal_data"
    REJECTED_FOLLOW_UP = "rejected_follow_up"
    # Not the conversation's first customer turn (or not known to be): the model saw earlier
    # turns, so its answer may depend on them and is not shareable.
    REJECTED_MID_CONVERSATION = "rejected_mid_conversation"
    REJECTED_INVALID = "rejected_invalid"
    REJECTED_INCONSISTENT = "rejected_inconsistent"
    REJECTED_BY_ADMIN = "rejected_by_admin"
    # The model was shown an FAQ version that has since changed or gone: its answer may state
    # the old facts.
    REJECTED_STALE_GROUNDING = "rejected_stale_grounding"
    FLAGGED = "flagged"


class Miss(StrEnum):
    """Stable reasons for a miss (LookupResult.reason)."""

    NONE = ""  # a hit
    INVALID_INPUT = "invalid_input"
    TOO_LONG = "too_long"
    EMPTY = "empty"
    FOLLOW_UP = "follow_up"
    NO_ENTRY = "no_entry"  # the site has no servable entries
    LOW_CONFIDENCE = "low_confidence"
    VALUE_MISMATCH = "value_mismatch"
    EXPIRED = "expired"
    ENCODER_ERROR = "encoder_error"


class Tier(StrEnum):
    EXACT = "exact"
    SEMANTIC = "semantic"


@dataclass(slots=True)
class Entry:
    """One answer and the phrasings that lead to it (an FAQ, or one generated answer).

    The index holds one row per phrasing; the decision rule groups rows by entry.
    """

    entry_id: str
    site_id: str
    source: Source
    questions: list[str]  # first = canonical
    answer: str
    embeddings: np.ndarray  # [len(questions), dim] float32, L2-normalized
    state: State = State.ACTIVE
    faq_id: int | None = None
    faq_version: int | None = None
    created_at: float = 0.0
    expires_at: float | None = None  # unix time; None = never (FAQ entries)
    hits: int = 0
    positive: int = 0
    negative: int = 0
    visitors: int = 0  # distinct visitors whose first question produced this generated answer
    note: str = ""  # why it is in its state, for the admin ("admin", "inconsistent", ...)
    values: list[tuple[str, ...]] = field(default_factory=list)  # per phrasing, in order
    # Generated entries: the FAQ versions the model was shown ("faq_id:version"). Changing
    # such an FAQ's answer, or removing the FAQ, deletes the entry (it may repeat old facts).
    grounding: list[str] = field(default_factory=list)

    @property
    def demoted(self) -> bool:
        """One net thumbs-down: the semantic tier asks more confidence of this entry."""
        return self.negative > self.positive


@dataclass(frozen=True, slots=True)
class LookupResult:
    hit: bool
    answer: str | None
    entry_id: str | None
    tier: str | None  # "exact" | "semantic" | None
    confidence: float
    faq_id: int | None
    reason: str  # "" on a hit, else a Miss code
    latency_ms: float
    # The entry the semantic tier would have served (also on a low-confidence miss): for
    # near-miss review and for the evaluation's precision/hit-rate curve.
    candidate_entry_id: str | None = None
    candidate_faq_id: int | None = None


@dataclass(frozen=True, slots=True)
class Suggestion:
    faq_id: int
    question: str
    answer: str
    score: float
    faq_version: int = 0  # the version shown, recorded as the grounding of a model answer


@dataclass(frozen=True, slots=True)
class NearMiss:
    site_id: str
    question: str
    entry_id: str
    faq_id: int | None
    confidence: float
    at: float


@dataclass(frozen=True, slots=True)
class EntrySummary:
    """An entry as the admin pages list it (generated entries; flagged entries of any kind)."""

    entry_id: str
    site_id: str
    question: str
    answer: str
    state: str
    hits: int
    positive: int
    negative: int
    visitors: int
    created_at: float
    expires_at: float | None
    source: str = Source.GENERATED.value
    faq_id: int | None = None  # the FAQ an FAQ entry comes from
