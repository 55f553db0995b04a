"""Generated answers and the FAQs they were written from (grounding), on the real Redis.

The model answers a miss with the site's nearest FAQs in its prompt. If one of those FAQs
later changes its answer or goes, an admitted answer may repeat the old facts: it is deleted
in every process, and an answer written from an FAQ version no longer stored is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cache import SemanticCache
from tests.cache.conftest import SHOP_FAQS, load_shop

QUESTION = "Can I return an item I bought on sale?"
ANSWER = "Yes: sale items can be returned within 30 days of delivery, like any item."
RETURNS = SHOP_FAQS[1]  # (2, "How do I return an item?", [...], answer)


def edit_returns_faq(cache: SemanticCache, version: int, answer: str, variants: list[str]) -> None:
    faq_id, question, _, _ = RETURNS
    cache.sync_faq("shop", faq_id, version, question, variants, answer, True)


def wait_for(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not seen in time"
        time.sleep(0.02)


def serves_generated(cache: SemanticCache) -> bool:
    result = cache.lookup("shop", QUESTION)
    return result.hit and result.answer == ANSWER


def offer(cache: SemanticCache, grounding: list[str], visitor: str = "v1") -> str:
    return cache.offer_generated(
        "shop", QUESTION, ANSWER, visitor, first_turn=True, grounding=grounding
    )


def test_suggestions_carry_the_faq_version_shown(cache: SemanticCache) -> None:
    load_shop(cache)
    [first] = cache.nearest_faqs("shop", QUESTION, k=1)
    assert (first.faq_id, first.faq_version) == (2, 1)


def test_an_faq_answer_change_drops_the_answers_grounded_on_it_in_every_process(
    make_cache: Callable[..., SemanticCache],
) -> None:
    writer = make_cache(admission_min_visitors=1)
    other = make_cache(admission_min_visitors=1)
    load_shop(writer)
    assert offer(writer, ["2:1", "3:1"]) == "admitted"
    wait_for(lambda: serves_generated(other))

    edit_returns_faq(writer, 2, "Returns are free within 14 days of delivery.", RETURNS[2])

    wait_for(lambda: not serves_generated(other))
    assert not serves_generated(writer)
    assert writer.list_generated("shop") == []
    # FAQs the answer was not grounded on keep their own answers
    assert other.lookup("shop", "Do you ship internationally?").hit


def test_a_phrasing_only_edit_keeps_the_grounded_answer(
    make_cache: Callable[..., SemanticCache],
) -> None:
    cache = make_cache(admission_min_visitors=1)
    load_shop(cache)
    assert offer(cache, ["2:1"]) == "admitted"
    edit_returns_faq(cache, 2, RETURNS[3], [*RETURNS[2], "How can I send an order back?"])
    assert serves_generated(cache)


def test_removing_the_faq_drops_its_grounded_answers_and_pending_candidates(
    make_cache: Callable[..., SemanticCache],
) -> None:
    cache = make_cache(admission_min_visitors=2)
    load_shop(cache)
    assert offer(cache, ["2:1"], visitor="v1") == "pending"
    cache.remove_faq("shop", 2, version=1)  # deactivated in the admin
    assert cache.list_generated("shop") == []
    # the visitor counted for the dropped candidate does not carry over
    edit_returns_faq(cache, 2, RETURNS[3], RETURNS[2])
    assert offer(cache, ["2:2"], visitor="v2") == "pending"
    [candidate] = cache.list_generated("shop", "pending")
    assert candidate.visitors == 1


def test_an_answer_written_from_an_old_or_missing_faq_version_is_refused(
    make_cache: Callable[..., SemanticCache],
) -> None:
    cache = make_cache(admission_min_visitors=1)
    load_shop(cache)
    edit_returns_faq(cache, 2, "Returns are free within 14 days of delivery.", RETURNS[2])
    assert offer(cache, ["2:1"]) == "rejected_stale_grounding"
    assert offer(cache, ["99:1"]) == "rejected_stale_grounding"  # no such FAQ (any more)
    assert cache.list_generated("shop") == []
    assert offer(cache, ["2:2"]) == "admitted"


def test_malformed_grounding_is_refused_as_invalid(cache: SemanticCache) -> None:
    load_shop(cache)
    for grounding in (["2"], ["two:1"], "2:1", [2], ["1:1"] * 17):
        assert offer(cache, grounding) == "rejected_invalid"  # type: ignore[arg-type]


def test_purging_the_site_forgets_the_grounding_records(
    make_cache: Callable[..., SemanticCache], redis_url: str
) -> None:
    import redis

    cache = make_cache(admission_min_visitors=1)
    load_shop(cache)
    assert offer(cache, ["2:1"]) == "admitted"
    key = cache.store.keys.grounded("shop", 2)
    client = redis.Redis.from_url(redis_url)
    assert client.smembers(key)
    cache.purge_generated("shop")
    assert not client.exists(key)
    client.close()
