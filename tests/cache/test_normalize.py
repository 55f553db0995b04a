"""Unit tests of the input gate and the exact-tier key."""

from __future__ import annotations

import pytest

from cache.normalize import (
    MAX_QUESTION_CHARS,
    CheckedQuestion,
    Rejection,
    check_question,
    normalize,
)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How long does DELIVERY take?", "how long does delivery take"),
        ("  how   long\tdoes delivery take ?!", "How long does delivery take"),
        ("What's the fee?", "whats the fee"),
        ("What\u2019s the fee?", "What's the fee?"),
        ("ｆｕｌｌｗｉｄｔｈ text", "fullwidth text"),  # NFKC
        ("Straße", "STRASSE"),  # casefold
    ],
)
def test_equivalent_questions_share_a_key(a: str, b: str) -> None:
    assert normalize(a) == normalize(b)


def test_numbers_and_words_survive_normalization() -> None:
    assert normalize("Order #A-123: where is it?") == "order a 123 where is it"
    assert normalize("refund 30 days") != normalize("refund 14 days")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("?!...", "empty"),
        ("😀😀🎉", "empty"),
        ("x" * (MAX_QUESTION_CHARS + 1), "too_long"),
        ("a" * 100_000, "too_long"),
        (b"\xff\xfe\x00bad", "invalid_input"),
        ("bad \udcff surrogate", "invalid_input"),
        ("nul\x00byte", "invalid_input"),
        (None, "invalid_input"),
        (12345, "invalid_input"),
    ],
)
def test_bad_input_is_rejected_with_a_reason(value: object, reason: str) -> None:
    checked = check_question(value)
    assert isinstance(checked, Rejection)
    assert checked.reason == reason


def test_utf8_bytes_and_text_with_emoji_pass() -> None:
    assert check_question("Where is my parcel? 📦".encode()) == CheckedQuestion(
        "Where is my parcel? 📦", "where is my parcel"
    )
