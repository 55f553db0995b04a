"""Unit tests of the value guard, follow-up detection and personal-data detection."""

from __future__ import annotations

import pytest

from cache.guards import extract_values, is_follow_up, personal_data_kinds, values_agree
from cache.normalize import normalize


def test_values_are_extracted_in_canonical_form() -> None:
    values = extract_values(
        "Refund of $1,000.50 for order A-12345 on March 3rd, mail me at Jo@x.com"
    )
    assert values == ("num:1000.5", "id:a12345", "date:march3", "email:jo@x.com")


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("Refund of 1,50 euros?", ("num:1.5",)),  # a decimal comma, not 150
        ("Is .5 kg allowed?", ("num:0.5",)),
        ("Costs 0.50?", ("num:0.5",)),
        ("Fee of 1.000?", ("num:1.000",)),  # one thousand or 1.0: kept as written
        ("Fee of 1,000,000.00?", ("num:1000000",)),
        ("Delivered in two weeks?", ("num:2",)),
        ("Within twenty-five days?", ("num:25",)),
        ("My third order", ("num:3",)),
        ("I need to activate it first", ()),  # an adverb, not a value
        ("Are you open in December?", ("month:december",)),
        ("Open on dec 24?", ("date:december24",)),
        ("Which one is cheaper?", ()),  # "one" as a pronoun is no value
        ("May I pay by card?", ()),
    ],
)
def test_values_keep_decimals_number_words_and_months(text: str, values: tuple[str, ...]) -> None:
    assert extract_values(text) == values


@pytest.mark.parametrize(
    ("question", "entry"),
    [
        ("Where is order 123?", "Where is order 456?"),
        ("Can I withdraw 500 euros?", "Can I withdraw 5000 euros?"),
        ("Where is order 123?", "Where is my order?"),
        ("Is the shop open on Monday?", "Is the shop open on Sunday?"),
        ("Delivered by 3 May?", "Delivered by 4 May?"),
        ("Are you open on 03/04?", "Are you open on 04/03?"),  # same numbers, another day
        ("Refund of 1,50?", "Refund of 150?"),
        ("Is .5 allowed?", "Is 5 allowed?"),
        ("Fee of 1.000?", "Fee of 1?"),
        ("Delivered in two weeks?", "Delivered in three weeks?"),
        ("Are you open in December?", "Are you open in January?"),
        ("Are you open on Sunday?", "Are you open?"),
    ],
)
def test_different_values_disagree(question: str, entry: str) -> None:
    assert not values_agree(extract_values(question), extract_values(entry))


@pytest.mark.parametrize(
    ("question", "entry"),
    [
        ("What is this $1 charge?", "Why was I charged 1 euro?"),
        ("Refund of 1,000?", "refund of 1000"),
        ("How do I reset my password?", "I forgot my password"),
        ("May I pay by card?", "Can I pay by card?"),  # "may" alone is not a date
        ("Delivered in two weeks?", "Delivered in 2 weeks?"),
        ("Refund of 1,50 euros?", "Refund of 1.50 euros?"),
        ("Can I change the blue one?", "How do I change my order?"),
        ("Open on Dec 24?", "open on december 24th"),
        ("Are you open on Saturday at 9?", "Are you open at 9 on Saturday?"),  # kinds reordered
    ],
)
def test_same_values_agree(question: str, entry: str) -> None:
    assert values_agree(extract_values(question), extract_values(entry))


@pytest.mark.parametrize(
    "question",
    [
        "What about the second one?",
        "and for that order?",
        "Also, is it free?",
        "how about the other option",
        "same for the last one",
        "Can I get that one instead?",
        "like you said before?",
    ],
)
def test_follow_ups_are_detected_without_history(question: str) -> None:
    assert is_follow_up(normalize(question), None)


@pytest.mark.parametrize(
    "question", ["Is it free?", "Can I cancel them?", "Why is that?", "When does it arrive?"]
)
def test_short_pronoun_questions_are_follow_ups_only_with_history(question: str) -> None:
    assert is_follow_up(normalize(question), ["I ordered a blue lamp"])
    assert not is_follow_up(normalize(question), None)


@pytest.mark.parametrize(
    "question",
    [
        "How long does delivery take?",
        "Why did my card get declined when I tried to use it at the shop?",
        "How do I change my PIN?",
        "What are the fees for international transfers?",
    ],
)
def test_stand_alone_questions_are_not_follow_ups(question: str) -> None:
    assert not is_follow_up(normalize(question), ["earlier message"])


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("my email is jane.doe@example.com", "email"),
        ("card 4111 1111 1111 1111 was charged twice", "card_number"),
        ("call me on +44 20 7946 0958", "phone"),
        ("IBAN GB82 WEST 1234 5698 7654 32", "iban"),
        ("SSN 123-45-6789", "national_id"),
        ("My name is Jane Doe and I need help", "name"),
        ("I live at 12 Baker Street", "address"),
        ("where is order A12345", "identifier"),
        ("my order 123456 is late", "identifier"),
        ("account number is 12345678", "identifier"),
        ("call me on 555-1234", "phone"),
        ("my dob is 12/03/1985", "date_of_birth"),
        ("I was born on 3 May 1990, can I open an account?", "date_of_birth"),
        ("I am John Smith", "name"),
        ("Hi, I'm Jane, where is my parcel?", "name"),
        ("my name is John", "name"),
    ],
)
def test_personal_data_is_detected(text: str, kind: str) -> None:
    assert kind in personal_data_kinds(text)


@pytest.mark.parametrize(
    "text",
    [
        "How long does delivery take?",
        "Standard delivery takes 3-5 working days.",
        "We ship to 40 countries.",
        "Can I get a refund within 30 days?",
        "Can I transfer 1,000,000 euros?",
        "Can you call me back?",
        "Are you open from 9.00 to 17.30?",
        "I am unable to log in",
        "How do I change my name?",
    ],
)
def test_generic_text_has_no_personal_data(text: str) -> None:
    assert personal_data_kinds(text) == []


def test_a_non_luhn_long_number_is_not_a_card_but_still_personal() -> None:
    kinds = personal_data_kinds("reference 1234 5678 1234 5678")
    assert "card_number" not in kinds
    assert kinds  # a long number identifies something of one customer: never shared
