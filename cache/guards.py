"""Guards that veto a semantic match or an admission, whatever the similarity says.

- values: numbers (digits or words), amounts, order ids, e-mail addresses, dates, months and
  weekdays in the question must equal those of the matched phrasing, in the same order
  ("refund for order 123" must never get order 456's answer, nor "03/04" the answer of "04/03");
- follow-ups: questions that lean on the conversation ("what about the second one?") cannot
  be answered from a shared cache;
- personal data: questions or answers carrying it are never stored as shareable entries.

Pure functions over text; no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
# Tokens mixing letters and digits ("A12-345", "#ord9931") are identifiers: order ids,
# reference codes, postcodes.
_IDENTIFIER = re.compile(r"#?\b(?=[\w-]*\d)(?=[\w-]*[a-z])[\w-]{3,}\b", re.UNICODE)
# A number as written: digits with separators ("1,000.50", "1,50", "1.2.3") or a leading-point
# decimal (".5"). What the separators mean is decided by `_canonical_number`.
_NUMBER = re.compile(r"(?<![\d.,])(?:\d+(?:[.,]\d+)*|\.\d+)")
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_DECIMAL_COMMA = re.compile(r"\d*,\d{1,2}")  # "1,50" (euros) is 1.5, never 150
_DECIMAL = re.compile(r"(\d*)\.(\d+)")
# "1.000" is one thousand in much of Europe and 1.0 elsewhere: it stays as written, so it
# agrees with neither "1" nor "1000" (a miss, never a wrong answer).
_AMBIGUOUS_POINT = re.compile(r"\d{1,3}\.\d{3}")

_MONTH_NAMES = {
    "january": "january", "jan": "january", "february": "february", "feb": "february",
    "march": "march", "mar": "march", "april": "april", "apr": "april", "may": "may",
    "june": "june", "jun": "june", "july": "july", "jul": "july", "august": "august",
    "aug": "august", "september": "september", "sep": "september", "sept": "september",
    "october": "october", "oct": "october", "november": "november", "nov": "november",
    "december": "december", "dec": "december",
}  # fmt: skip
_MONTHS = "|".join(sorted(_MONTH_NAMES, key=len, reverse=True))
# A month name next to a day number is a date ("march 3", "3rd of may").
_DATE_WORDS = re.compile(rf"\b(?:(\d{{1,2}})\s+(?:of\s+)?({_MONTHS})|({_MONTHS})\s+(\d{{1,2}}))\b")
# A month name on its own is a value too ("open in december?"), except "may", which alone is
# mostly the verb ("may I pay by card?").
_MONTH_ALONE = re.compile(rf"\b(?:{'|'.join(m for m in _MONTH_NAMES if m != 'may')})\b")
_WEEKDAYS = re.compile(
    r"\b(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday|today|tomorrow|yesterday)\b"
)
_CARDINALS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
)  # fmt: skip
_NUMBER_WORDS = {word: str(value) for value, word in enumerate(_CARDINALS)} | {
    "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70",
    "eighty": "80", "ninety": "90", "hundred": "100", "thousand": "1000", "million": "1000000",
    "dozen": "12", "twice": "2",
}  # fmt: skip
_ORDINALS = (
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
    "tenth", "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth",
    "seventeenth", "eighteenth", "nineteenth", "twentieth",
)  # fmt: skip
_ORDINAL_WORDS = {word: str(value) for value, word in enumerate(_ORDINALS, start=1)} | {
    "thirtieth": "30"
}
# "one" is also a pronoun ("which one", "the blue one?", "one of my orders"): only the number
# ("one item") counts. Group 1 of each pattern is the pronoun "one".
_PRONOUN_ONE = (
    re.compile(
        r"\b(?:this|that|which|the|other|another|each|any|every|no|some|new|old|right|wrong|a"
        r"|same|only|last|next|first|second|cheaper|better|bigger|smaller)\s+(one)\b"
    ),
    re.compile(r"\b(one)\s+(?:of|another|more)\b"),
    re.compile(r"\b(one)\s*(?:[?!.,;:]|$)"),
)
_TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_UNITS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# "twenty-five" / "twenty five" is one number, 25 (so it agrees with "25").
_COMPOUND_NUMBER_WORD = re.compile(rf"\b({'|'.join(_TENS)})[- ]({'|'.join(_UNITS)})\b")
_NUMBER_WORD = re.compile(rf"\b(?:{'|'.join(sorted(_NUMBER_WORDS, key=len, reverse=True))})\b")
# An ordinal word is a value after a determiner ("my first order", "a second card"); alone it
# is mostly an adverb ("activate it first"), which must not cost a hit.
_ORDINAL_WORD = re.compile(
    r"\b(?:the|my|your|our|their|his|her|its|a|an|this|that|every)\s+"
    rf"({'|'.join(sorted(_ORDINAL_WORDS, key=len, reverse=True))})\b"
)


_ORDINAL = re.compile(r"\b(\d+)(?:st|nd|rd|th)\b")


def _fold(text: str) -> str:
    """NFKC, case-folded, ordinals as plain numbers ("1st" is a number, not an identifier)."""
    return _ORDINAL.sub(r"\1", unicodedata.normalize("NFKC", text).casefold())


def _canonical_number(raw: str) -> str:
    """One spelling per number: "1,000" == "1000", "1.50" == "1.5", ".5" == "0.5"."""
    if _THOUSANDS.fullmatch(raw):
        raw = raw.replace(",", "")
    elif _DECIMAL_COMMA.fullmatch(raw):
        raw = raw.replace(",", ".")
    elif _AMBIGUOUS_POINT.fullmatch(raw):
        return raw
    decimal = _DECIMAL.fullmatch(raw)
    if decimal is None:
        return raw  # an integer, or several separators ("1.2.3"): as written
    whole, fraction = decimal.group(1) or "0", decimal.group(2).rstrip("0")
    return f"{whole}.{fraction}" if fraction else whole


def _blank(text: str, start: int, end: int) -> str:
    """`text` with [start, end) replaced by spaces: later patterns skip it, offsets hold."""
    return text[:start] + " " * (end - start) + text[end:]


def extract_values(text: str) -> tuple[str, ...]:
    """The concrete values a question is about, in a canonical form, in question order.

    Order matters: "open on 03/04?" and "open on 04/03?" carry the same numbers but are
    different days. Numbers lose thousands separators ("1,000" == "1000") and number words
    count as numbers ("two" == "2"); currency symbols are not part of the value (so "$1" and
    "1 dollar" agree), which errs on the side of a miss only when the numbers differ.
    """
    folded = _fold(text)
    found: list[tuple[int, str]] = []

    def take(pattern: re.Pattern[str], value_of: Callable[[re.Match[str]], str | None]) -> None:
        nonlocal folded
        for match in list(pattern.finditer(folded)):
            value = value_of(match)
            if value is not None:
                found.append((match.start(), value))
                folded = _blank(folded, match.start(), match.end())

    take(_EMAIL, lambda m: "email:" + m.group())
    take(_DATE_WORDS, _date_value)
    take(_MONTH_ALONE, lambda m: "month:" + _MONTH_NAMES[m.group()])
    take(_WEEKDAYS, lambda m: "day:" + m.group())
    take(_IDENTIFIER, lambda m: "id:" + m.group().lstrip("#").replace("-", ""))
    take(_NUMBER, lambda m: "num:" + _canonical_number(m.group()))
    take(_COMPOUND_NUMBER_WORD, _compound_value)
    pronoun_ones = {m.start(1) for pattern in _PRONOUN_ONE for m in pattern.finditer(folded)}
    take(_ORDINAL_WORD, lambda m: "num:" + _ORDINAL_WORDS[m.group(1)])
    take(_NUMBER_WORD, lambda m: _number_word_value(m, pronoun_ones))
    return tuple(value for _, value in sorted(found))


def _date_value(match: re.Match[str]) -> str:
    day = match.group(1) or match.group(4)
    month = _MONTH_NAMES[match.group(2) or match.group(3)]
    return f"date:{month}{day}"


def _compound_value(match: re.Match[str]) -> str:
    tens, unit = _NUMBER_WORDS[match.group(1)], _NUMBER_WORDS[match.group(2)]
    return f"num:{int(tens) + int(unit)}"


def _number_word_value(match: re.Match[str], pronoun_ones: set[int]) -> str | None:
    word = match.group()
    if word == "one" and match.start() in pronoun_ones:
        return None
    return "num:" + _NUMBER_WORDS[word]


def values_agree(question_values: tuple[str, ...], entry_values: tuple[str, ...]) -> bool:
    """True when a cached answer may be served: the same values of each kind, in the same
    order within a kind. Order within a kind matters ("03/04" vs "04/03"); order across kinds
    does not ("open on Saturday at 9" and "open at 9 on Saturday" ask the same)."""
    return _by_kind(question_values) == _by_kind(entry_values)


def _by_kind(values: tuple[str, ...]) -> tuple[str, ...]:
    # A stable sort on the kind prefix ("num", "day", ...) keeps each kind's own order.
    return tuple(sorted(values, key=lambda value: value.split(":", 1)[0]))


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
_SHORT_PHONE = re.compile(r"(?<![\w.,/-])\d{3}[ .-]\d{4}(?![\w/-])")  # "555-1234"
# A run of 6+ digits is an account, order or customer number ("order 123456", "account
# number 12345678"); amounts are written shorter or with separators ("1,000,000").
_LONG_NUMBER = re.compile(r"(?<![\d.,])\d{6,}(?![\d.,]\d)")
_BIRTH_DATE = re.compile(r"\b(?:dob|d\.o\.b|date of birth|birth ?date|born on|birthday)\b")
_CARD_CANDIDATE = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_IBAN = re.compile(r"\b[a-z]{2}\d{2}(?: ?[a-z0-9]{4}){2,7}(?: ?[a-z0-9]{1,4})?\b")
_SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
_SELF_NAME = re.compile(r"\b(?:my (?:full |first |last )?name is|i am called) \w+", re.UNICODE)
# "I am John Smith", "this is Jane": a self-introduction shows in the capital letter, so this
# one runs on the unfolded text. "I am Unable to log in" also matches: that costs a cache
# entry, never a leak.
_SELF_INTRODUCTION = re.compile(r"\b(?:[Ii] am|I'm|[Tt]his is|[Ii]t's) [A-Z][a-z]+\b")
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
    if (_PHONE.search(folded) or _SHORT_PHONE.search(folded)) and "card_number" not in kinds:
        kinds.append("phone")
    if _BIRTH_DATE.search(folded) and re.search(r"\d", folded):
        kinds.append("date_of_birth")
    if _SELF_NAME.search(folded) or _SELF_INTRODUCTION.search(unicodedata.normalize("NFKC", text)):
        kinds.append("name")
    if _ADDRESS.search(folded) or _POSTAL_ADDRESS.search(folded):
        kinds.append("address")
    if _LONG_NUMBER.search(folded) or any(v.startswith("id:") for v in extract_values(folded)):
        kinds.append("identifier")
    return kinds
