"""Many tenants: a process holds only the sites it served recently, within its row bound.

Sites past the bound are loaded from Redis on their first lookup (cold) in place of the least
recently used ones; a site changed while not held is read as Redis has it; only a site
larger than the whole bound is never held. Real Redis, real encoder; each shop has 12 rows
(4 FAQs of 3 phrasings)."""

from __future__ import annotations

from collections.abc import Callable

from cache import SemanticCache
from tests.cache.conftest import SHOP_FAQS, load_shop

SHOP_ROWS = 12
QUESTION = "How long does delivery take?"
PARAPHRASE = "when is my parcel going to arrive"


def writer_with_shops(make_cache: Callable[..., SemanticCache], sites: list[str]) -> None:
    writer = make_cache(follow_changes=False)
    for site in sites:
        load_shop(writer, site)


def held_sites(cache: SemanticCache) -> list[str]:
    return list(cache.replica._indexes)  # least recently used first


def test_a_process_holds_what_fits_and_loads_the_other_sites_on_first_use(
    make_cache: Callable[..., SemanticCache],
) -> None:
    # given: three shops in Redis, and a process with room for two
    writer_with_shops(make_cache, ["a", "b", "c"])
    cache = make_cache(max_rows_per_process=2 * SHOP_ROWS)
    assert len(held_sites(cache)) == 2 and cache.row_count() == 2 * SHOP_ROWS
    cold = next(site for site in "abc" if site not in held_sites(cache))
    # when: a customer of the site it does not hold asks, exactly and in other words
    exact = cache.lookup(cold, QUESTION)
    semantic = cache.lookup(cold, PARAPHRASE)
    # then: answered, and the least recently used site made room
    assert exact.hit and semantic.hit
    assert semantic.answer == SHOP_FAQS[0][3]
    assert held_sites(cache)[-1] == cold and len(held_sites(cache)) == 2
    assert cache.row_count() <= 2 * SHOP_ROWS


def test_every_site_is_served_while_memory_stays_bounded(
    make_cache: Callable[..., SemanticCache],
) -> None:
    sites = [f"s{n}" for n in range(6)]
    writer_with_shops(make_cache, sites)
    cache = make_cache(max_rows_per_process=2 * SHOP_ROWS)
    for _ in range(2):  # round-robin over more sites than fit: every lookup a cold load
        for site in sites:
            assert cache.lookup(site, PARAPHRASE).hit, site
            assert cache.row_count() <= 2 * SHOP_ROWS


def test_the_most_recently_used_site_stays(make_cache: Callable[..., SemanticCache]) -> None:
    writer_with_shops(make_cache, ["a", "b", "c"])
    cache = make_cache(max_rows_per_process=2 * SHOP_ROWS)
    cache.lookup("a", QUESTION)
    cache.lookup("b", QUESTION)
    cache.lookup("a", QUESTION)  # a is now the most recent
    cache.lookup("c", QUESTION)  # evicts b, the least recent
    assert held_sites(cache) == ["a", "c"]


def test_a_site_edited_while_not_held_is_served_as_edited(
    make_cache: Callable[..., SemanticCache],
) -> None:
    # given: a process that served shop "a" and then dropped it for "b" and "c"
    writer_with_shops(make_cache, ["a", "b", "c"])
    cache = make_cache(max_rows_per_process=2 * SHOP_ROWS)
    assert cache.lookup("a", QUESTION).hit
    cache.lookup("b", QUESTION)
    cache.lookup("c", QUESTION)
    assert "a" not in held_sites(cache)
    # when: another process edits one of a's answers and removes another FAQ
    other = make_cache()
    faq_id, question, variants, _ = SHOP_FAQS[0]
    other.sync_faq("a", faq_id, 2, question, variants, "Now 1-2 working days.", True)
    other.remove_faq("a", SHOP_FAQS[1][0])
    other.close()
    # then: the next lookups of "a" read it from Redis as it is now
    assert cache.lookup("a", QUESTION).answer == "Now 1-2 working days."
    assert not cache.lookup("a", SHOP_FAQS[1][1]).hit


def test_a_site_larger_than_the_bound_misses_until_it_fits(
    make_cache: Callable[..., SemanticCache],
) -> None:
    # given: a shop of 12 rows and a process bound of 10
    writer_with_shops(make_cache, ["big"])
    cache = make_cache(max_rows_per_process=10)
    # then: never held, its lookups miss instead of evicting everything
    assert not cache.lookup("big", QUESTION).hit
    assert cache.row_count() == 0
    # when: it shrinks under the bound (an FAQ removed elsewhere)
    other = make_cache()
    other.remove_faq("big", SHOP_FAQS[3][0])
    other.close()
    # then: held and served
    assert cache.lookup("big", QUESTION).hit
    assert cache.row_count() == 9


def test_a_bound_on_the_number_of_sites(make_cache: Callable[..., SemanticCache]) -> None:
    writer_with_shops(make_cache, ["a", "b", "c", "d"])
    cache = make_cache(max_sites_per_process=2)
    for site in "abcd":
        assert cache.lookup(site, QUESTION).hit
        assert len(held_sites(cache)) <= 2


async def test_an_async_lookup_of_a_cold_site_loads_it_off_the_event_loop(
    make_cache: Callable[..., SemanticCache],
) -> None:
    writer_with_shops(make_cache, ["a", "b", "c"])
    cache = make_cache(max_rows_per_process=SHOP_ROWS)
    cold = next(site for site in "abc" if site not in held_sites(cache))
    assert cache.replica.is_cold(cold)
    result = await cache.alookup(cold, PARAPHRASE)
    assert result.hit and not cache.replica.is_cold(cold)


async def test_a_prefetch_holds_a_cold_site_before_its_first_lookup(
    make_cache: Callable[..., SemanticCache],
) -> None:
    writer_with_shops(make_cache, ["a", "b"])
    cache = make_cache(max_rows_per_process=SHOP_ROWS)
    cold = next(site for site in "ab" if site not in held_sites(cache))
    await cache.aprefetch(cold)
    assert not cache.replica.is_cold(cold) and held_sites(cache) == [cold]
    await cache.aprefetch("not a site id!")  # ignored, like a lookup's bad input
