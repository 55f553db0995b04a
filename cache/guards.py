"""Guards that veto a semantic match or an admission, whatever the similarity says.

- values: numbers, amounts, order ids, e-mail addresses and dates in the question must equal
  those of the matched phrasing ("refund for order 123" must never get order 456's answer);
- follow-ups: questions that lean on the conversation ("what about the second one?") cannot
  be answered from a shared cache;
- personal data: questions or answers carrying it are never stored as shareable entries.

Pure functions over text; no I/O.
"""

from __future__ import annotations

import re
import unicodedata

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
# Tokens mixing letters and digits ("A12-345", "#ord9931") are identifiers: order ids,
# reference codes, postcodes.
_IDENTIFIER = re.compile(r"#?\b(?=[\w-]*\d)(?=[\w-]*[a-z])[\w-]{3,}\b", re.UNICODE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december|"
    "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
)
# A month name only counts as a date value next to a day number ("march 3", "3rd of may"):
# "may" alone is mostly the verb.
_DATE_WORDS = re.compile(
    rf"\b(?:\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:{_MONTHS})|(?:{_MONTHS})\s+\d{{1,2}}(?:st|nd|rd|th)?)\b"
)
_WEEKDAYS = re.compile(
    r"\b(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday|today|tomorrow|yesterday)\b"
)


_ORDINAL = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b")


def _fold(text: str) -> str:
    """NFKC, case-folded, ordinals as plain numbers ("1st" is a number, not an identifier)."""
    return _ORDINAL.sub(r"\1", unicodedata.normalize("NFKC", text).casefold())


def extract_values(text: str) -> frozenset[str]:
    """The concrete values a question is about, in a canonical form.

    Numbers lose thousands separators ("1,000" == "1000"); currency symbols are not part of
    the value (so "$1" and "1 dollar" agree), which errs on the side of a miss only when the
    numbers differ.
    """
    folded = _fold(text)
    values: set[str] = set()
    for match in _EMAIL.finditer(folded):
        values.add("email:" + match.group())
    folded = _EMAIL.sub(" ", folded)
    for match in _DATE_WORDS.finditer(folded):
        values.add("date:" + re.sub(r"(st|nd|rd|th)\b|\bof\b|\s+", "", match.group()))
    folded = _DATE_WORDS.sub(" ", folded)
    for match in _WEEKDAYS.finditer(folded):
        values.add("day:" + match.group())
    for match in _IDENTIFIER.finditer(folded):
        values.add("id:" + match.group().lstrip("#").replace("-", ""))
    folded = _IDENTIFIER.sub(" ", folded)
    for match in _NUMBER.finditer(folded):
        number = match.group().replace(",", "")
        values.add("num:" + (number.rstrip("0").rstrip(".") if "." in number else number))
    return frozenset(values)


def values_agree(question_values: frozenset[str], entry_values: frozenset[str]) -> bool:
    """True when a cached answer may be served: exactly the same values on both sides."""
    return question_values == entry_values


# Phrases that only make sense inside a conversation. Kept narrow on purpose: each one
# wrongly matching a stand-alone question costs a cache hit, never correctness.
_FOLLOW_UP_PATTERNS = [
    r"^(?:and|also|but)\b",
    r"^(?:what|how) about\b",
    r"^(?:same|ditto)\b",
    r"\bthe (?:first|second|third|fourth|fifth|last|other|previous|next|latter|former)"
    r" (?:one|ones|option|order|item)\b",
    r"\b(?:that|those) (?:one|ones|order|orders|item|items)\b",
    r"\bthe same one\b",
    r"\b(?:you (?:said|mentioned|told me|just said)|as (?:above|before|you said))\b",
    r"\b(?:it|that|this) (?:too|as well)\b",
    r"^(?:why|how|when|where)(?: not)?$",
]
_FOLLOW_UP = re.compile("|".join(f"(?:{p})" for p in _FOLLOW_UP_PATTERNS))
# With history, a short question built on a bare pronoun ("is it free?", "can I cancel
# them?") refers to something said before.
_PRONOUN = re.compile(r"\b(?:it|its|that|this|they|them|those|these|there|he|she|him|her)\b")
SHORT_FOLLOW_UP_WORDS = 6


def is_follow_up(normalized_question: str, history: list[str] | None) -> bool:
    """True when the question depends on earlier turns and must bypass the cache.

    `normalized_question` is `normalize()`'s output (lower case, no punctuation).
    """
    if _FOLLOW_UP.search(normalized_question):
        return True
    if history:
        words = normalized_question.split()
        return len(words) <= SHORT_FOLLOW_UP_WORDS and bool(_PRONOUN.search(normalized_question))
    return False


_PHONE = re.compile(r"(?<!\w)\+?\d[\d ().-]{7,}\d(?!\w)")
_CARD_CANDIDATE = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_IBAN = re.compile(r"\b[a-z]{2}\d{2}(?: ?[a-z0-9]{4}){2,7}(?: ?[a-z0-9]{1,4})?\b")
_SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
_SELF_NAME = re.compile(r"\b(?:my name is|i am called|my full name is) [a-z]+ [a-z]+", re.UNICODE)
_ADDRESS = re.compile(r"\b(?:i live at|my address is)\b")
_POSTAL_ADDRESS = re.compile(r"\b\d{1,5} [a-z]+ (?:street|st|road|rd|avenue|ave|lane|ln)\b")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = int(char)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def personal_data_kinds(text: str) -> list[str]:
    """Kinds of personal data found in `text` (empty list: none found).

    Identifiers (order ids, long numbers) count too: an answer about one customer's order is
    not shareable even when it names no person.
    """
    folded = _fold(text)
    kinds: list[str] = []
    if _EMAIL.search(folded):
        kinds.append("email")
    for match in _CARD_CANDIDATE.finditer(folded):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and _luhn_ok(digits):
            kinds.append("card_number")
            break
    if _IBAN.search(folded):
        kinds.append("iban")
    if _SSN.search(folded):
        kinds.append("national_id")
    if _PHONE.search(folded) and "card_number" not in kinds:
        kinds.append("phone")
    if _SELF_NAME.search(folded):
        kinds.append("name")
    if _ADDRESS.search(folded) or _POSTAL_ADDRESS.search(folded):
        kinds.append("address")
    if any(v.startswith("id:") for v in extract_values(folded)):
        kinds.append("identifier")
    return kinds
