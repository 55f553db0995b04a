"""Did-you-mean suggestions after a miss (SemanticCache.suggest), on the real Redis and
encoder: the right FAQ offered, none after a hit or a guard's miss, the floor, one site only,
FAQs only; and the ranking itself on hand-made vectors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest

from cache import SemanticCache
from cache.index import build_snapshot
from cache.normalize import normalize
from cache.suggestions import above_floor, ranked_faqs
from cache.types import Entry, Source
from tests.cache.conftest import load_shop

pytestmark = pytest.mark.slow  # loads the embedding model (once per session)


def test_a_missed_paraphrase_is_offered_its_faq(cache: SemanticCache) -> None:
    # given
    load_shop(cache)
    question = "parcel timing"
    # when
    result = cache.lookup("shop", question)
    found = cache.suggest("shop", question, result)
    # then: the cache would not answer it, but its FAQ is one click away
    assert not result.hit and result.reason == "low_confidence"
    assert [s.faq_id for s in found][:1] == [1]
    assert found[0].question == "How long does delivery take?"
    assert all(s.score >= cache.config.suggestion_floor for s in found)
    assert asyncio.run(cache.asuggest("shop", question, result)) == found


def test_no_suggestions_after_a_hit(cache: SemanticCache) -> None:
    load_shop(cache)
    result = cache.lookup("shop", "How long does delivery take?")
    assert result.hit
    assert cache.suggest("shop", "How long does delivery take?", result) == []


def test_no_suggestions_when_a_guard_blocked_the_cache(cache: SemanticCache) -> None:
    # given: a follow-up (depends on the conversation) and a question about another value
    load_shop(cache)
    cache.sync_faq("shop", 8, 1, "Where is order A100?", [], "Order A100 shipped today.", True)
    history = ["How long does delivery take?"]
    follow_up = cache.lookup("shop", "and when will it arrive?", history=history)
    other_value = cache.lookup("shop", "Where is order A200?")
    assert follow_up.reason == "follow_up" and other_value.reason == "value_mismatch"
    # then: the FAQ cannot answer either, so none is offered
    assert cache.suggest("shop", "and when will it arrive?", follow_up) == []
    assert cache.suggest("shop", "Where is order A200?", other_value) == []


def test_the_floor_keeps_unrelated_questions_without_suggestions(
    make_cache: Callable[..., SemanticCache],
) -> None:
    # given the same FAQs in a cache with the shipped floor and one with none
    shipped, floorless = make_cache(), make_cache(suggestion_floor=0.0)
    load_shop(shipped)
    question = "What colour is the sky?"
    # when
    result = shipped.lookup("shop", question)
    # then: nothing is near enough to offer; without the floor the 3 nearest would show
    assert not result.hit
    assert shipped.suggest("shop", question, result) == []
    assert len(floorless.suggest("shop", question, result)) == 3


def test_suggestions_come_from_the_asking_site_only(cache: SemanticCache) -> None:
    # given two sites with FAQs about the same thing
    load_shop(cache)
    cache.sync_faq("other", 50, 1, "When does my parcel ship?", [], "Within a day.", True)
    cache.sync_faq("other", 51, 1, "Can I pay by card?", [], "Yes.", True)
    question = "my package is late"
    # when the other site's customer asks
    result = cache.lookup("other", question)
    found = cache.suggest("other", question, result)
    # then only that site's FAQ is offered (the shop's delivery FAQ is as near)
    assert not result.hit
    assert [s.faq_id for s in found] == [50]
    assert cache.suggest("nobody", question, result) == []


def test_generated_answers_are_never_suggested(make_cache: Callable[..., SemanticCache]) -> None:
    # given an admitted model answer next to the FAQs, and no floor
    cache = make_cache(admission_min_visitors=1, suggestion_floor=0.0)
    load_shop(cache)
    admitted = cache.offer_generated(
        "shop", "Do you sell gift cards?", "Yes, in store.", "v1", first_turn=True
    )
    assert admitted == "admitted"
    question = "gift vouchers for birthdays"
    # when a question nearest to that answer misses
    result = cache.lookup("shop", question)
    found = cache.suggest("shop", question, result, k=5)
    # then only the curated FAQs are offered
    assert not result.hit and ":gen:" in (result.candidate_entry_id or "")
    assert sorted(s.faq_id for s in found) == [1, 2, 3, 4]


def _unit(rows: list[list[float]]) -> np.ndarray:
    array = np.array(rows, dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def test_ranking_prefers_an_faq_whose_phrasings_agree() -> None:
    # given: FAQ 1 has one phrasing very near the question and two far from it; FAQ 2 has
    # three phrasings all fairly near; every phrasing shares the site's common direction
    common = [0.0, 0.0, 0.0, 3.0]
    entries = [
        Entry("s:faq:1", "s", Source.FAQ, ["a", "b", "c"], "A",
              _unit([[1, 0.1, 0, 3], [-1, 1, 0, 3], [-1, -1, 0, 3]]), faq_id=1),
        Entry("s:faq:2", "s", Source.FAQ, ["d", "e", "f"], "B",
              _unit([[0.8, 0.5, 0, 3], [0.8, 0.6, 0.1, 3], [0.7, 0.55, -0.1, 3]]), faq_id=2),
    ]  # fmt: skip
    snapshot = build_snapshot(entries, 4, normalize)
    question = _unit([[1.0, 0.3, 0.0, 0.0]])[0] + _unit([common])[0] * 0.5
    question = question / np.linalg.norm(question)
    # when
    ranked = ranked_faqs(snapshot, question, 2)
    # then: FAQ 2 first, though FAQ 1 holds the single nearest phrasing
    nearest_phrasing_faq = entries[int(np.argmax(snapshot.matrix @ question)) // 3].faq_id
    assert nearest_phrasing_faq == 1
    assert [s.faq_id for s in ranked] == [2, 1]
    # and the floor reads each FAQ's plain nearest-phrasing cosine, not the rank: a floor just
    # above FAQ 2's keeps FAQ 1 only
    assert ranked[1].score > ranked[0].score
    assert [s.faq_id for s in above_floor(ranked, ranked[0].score + 1e-6, 3)] == [1]
