"""Question text checks and normalization: the exact tier's key and the input gate.

Every lookup passes through `check_question` first, so bad input (not text, invalid UTF-8,
huge, empty, emoji-only) becomes a clean miss with a reason instead of an exception, and
`normalize` gives the exact-tier key: two questions that differ only in case, spacing,
punctuation or Unicode form share one key.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# A customer question longer than this is a letter, not an FAQ question: matching it against
# one-line phrasings is unreliable and embedding it costs ~10x a normal lookup. 1,000
# characters is ~5x the longest Banking77 question.
MAX_QUESTION_CHARS = 1000

# Everything that is not a letter/number/space after NFKC+casefold is punctuation or symbol
# for our purposes (emoji included): it never changes what is being asked.
_NON_WORD = re.compile(r"[^\w\s]|_", re.UNICODE)
_SPACES = re.compile(r"\s+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class CheckedQuestion:
    """A question that passed the gate: the original text and its exact-tier key."""

    text: str
    normalized: str


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a question cannot be looked up; `reason` is a stable code."""

    reason: str  # "invalid_input" | "too_long" | "empty"
    detail: str


def normalize(text: str) -> str:
    """Exact-tier key: NFKC, case-folded, punctuation and symbols dropped, spaces collapsed.

    Apostrophes are dropped rather than turned into spaces so "what's" and "whats" agree.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    folded = folded.replace("'", "").replace("\u2019", "")
    return _SPACES.sub(" ", _NON_WORD.sub(" ", folded)).strip()


def check_question(question: object) -> CheckedQuestion | Rejection:
    """Validate untrusted input; never raises.

    Accepts `str` or UTF-8 `bytes`. Strings holding lone surrogates (what
    `surrogateescape` decoding of invalid UTF-8 produces) are rejected as invalid.
    """
    if isinstance(question, bytes | bytearray):
        try:
            question = bytes(question).decode("utf-8")
        except UnicodeDecodeError:
            return Rejection("invalid_input", "question is not valid UTF-8")
    if not isinstance(question, str):
        return Rejection("invalid_input", f"question must be text, not {type(question).__name__}")
    if len(question) > MAX_QUESTION_CHARS:
        return Rejection("too_long", f"question longer than {MAX_QUESTION_CHARS} characters")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError:
        return Rejection("invalid_input", "question contains invalid characters")
    if "\x00" in question:
        return Rejection("invalid_input", "question contains NUL characters")
    normalized = normalize(question)
    if not normalized:
        return Rejection("empty", "question has no words (empty, punctuation or emoji only)")
    return CheckedQuestion(text=question.strip(), normalized=normalized)
