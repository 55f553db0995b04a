"""Regression tests of defects found reviewing the cache core: the encoder thread, the sync
thread, TTL and the per-process row bound, hit counters, and a writer/sync-thread race.

All run against the session's real redis-server (or one of their own) and the real encoder.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from cache import CacheConfig, SemanticCache
from cache.store import Store
from tests.cache.conftest import load_shop

pytestmark = pytest.mark.slow  # loads the embedding model (once per session)


def wait_for(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not true within {timeout} s"
        time.sleep(0.02)


def test_a_cancelled_async_lookup_does_not_stop_the_encoder(cache: SemanticCache) -> None:
    # given: the encoder thread busy with a batch, and an async lookup queued behind it
    load_shop(cache)
    busy = [cache.embeddings.submit(f"warm-up question number {i} " * 40) for i in range(32)]

    async def cancelled_lookup() -> None:
        task = asyncio.ensure_future(cache.alookup("shop", "Is delivery free on big orders?"))
        await asyncio.sleep(0)  # the question is queued for the encoder
        task.cancel()  # the customer closed the chat (the consumer's task is cancelled)
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancelled_lookup())
    for future in busy:
        future.result(timeout=30)
    # when / then: later questions still get encoded (the thread did not die on the
    # cancelled future), in this thread and in async callers
    vector = cache.embeddings.submit("Do you have a shop in Paris?").result(timeout=10)
    assert vector.shape == (cache.embeddings.dim,)
    result = asyncio.run(asyncio.wait_for(cache.alookup("shop", "parcel delivery time?"), 10))
    assert result.reason in ("", "low_confidence")


def test_expired_generated_entries_leave_the_index_and_free_their_rows(
    make_cache: Callable[..., SemanticCache],
) -> None:
    # given: a process with room for one row, holding a generated entry with a 1 s TTL
    cache = make_cache(admission_min_visitors=1, generated_ttl_s=1, max_rows_per_process=1)
    offer = "Do you sell gift cards?"
    assert cache.offer_generated("shop", offer, "Yes.", "v", first_turn=True) == "admitted"
    assert cache.row_count() == 1
    # when: it expires, and nobody asks its question again
    time.sleep(1.2)
    # then: the sync thread drops it within about a second, and the room it held is usable
    wait_for(lambda: cache.row_count() == 0, 3.0)
    later = "Are your products vegan?"
    assert cache.offer_generated("shop", later, "Most are.", "v", first_turn=True) == "admitted"
    assert cache.lookup("shop", later).answer == "Most are."


def test_an_faq_edit_adding_phrasings_stays_within_the_row_bound(
    make_cache: Callable[..., SemanticCache],
) -> None:
    # given: a process with room for three rows, holding a one-phrasing FAQ
    cache = make_cache(max_rows_per_process=3)
    question = "How long does delivery take?"
    cache.sync_faq("shop", 1, 1, question, [], "3-5 days.", True)
    assert cache.row_count() == 1
    # when: an edit gives it five phrasings (and a new answer)
    variants = [
        "When will my parcel arrive?",
        "How many days until my order is delivered?",
        "Delivery time?",
        "How fast do you deliver?",
    ]
    cache.sync_faq("shop", 1, 2, question, variants, "1-2 days.", True)
    # then: the bound holds, and the old answer is not served in place of the edit
    assert cache.row_count() <= 3
    assert cache.lookup("shop", question).answer != "3-5 days."


def test_a_delete_applied_while_an_upsert_is_loading_is_not_undone(
    make_cache: Callable[..., SemanticCache],
) -> None:
    # given: this process writes an FAQ edit while another process removes the FAQ; the
    # removal lands in Redis (and the change stream) just after this process loaded the edit
    here, other = make_cache(), make_cache()
    question = "How long does delivery take?"
    here.sync_faq("shop", 1, 1, question, [], "3-5 days.", True)
    real_load_many = here.store.load_many
    index = here.replica.index("shop")

    def load_then_race(entry_ids: list[str]) -> dict:
        loaded = real_load_many(entry_ids)
        if threading.current_thread() is threading.main_thread():
            other.remove_faq("shop", 1)
            # give this process's sync thread the chance to apply the removal now
            deadline = time.monotonic() + 1.5
            while "shop:faq:1" in index.entries and time.monotonic() < deadline:
                time.sleep(0.01)
        return loaded

    here.store.load_many = load_then_race  # type: ignore[method-assign]
    try:
        here.sync_faq("shop", 1, 2, question, [], "1-2 days.", True)
    finally:
        here.store.load_many = real_load_many  # type: ignore[method-assign]
    # then: once the stream is caught up, the removed FAQ is served by neither process
    time.sleep(1.0)
    assert here.get_entry("shop:faq:1") is None
    assert not other.lookup("shop", question).hit
    assert not here.lookup("shop", question).hit


def test_a_malformed_change_does_not_stop_a_process_following_the_stream(
    make_cache: Callable[..., SemanticCache],
) -> None:
    # given: two processes serving an FAQ, and a change in the stream that cannot be parsed
    # (another version of the code, a hand-made XADD)
    here, other = make_cache(), make_cache()
    question = "How long does delivery take?"
    other.sync_faq("shop", 1, 1, question, [], "3-5 days.", True)
    wait_for(lambda: here.lookup("shop", question).hit, 2.0)
    here.redis.xadd(here.store.keys.changes, {"site": "shop", "op": "upsert", "ids": "not json"})
    # when: the other process removes the FAQ
    other.remove_faq("shop", 1)
    # then: this process still follows the stream and stops serving it (within ~1 s; 2 s
    # here for a loaded test machine)
    wait_for(lambda: not here.lookup("shop", question).hit, 2.0)


def test_hit_counts_survive_a_failed_flush(encoder: object, tmp_path: Path) -> None:
    from embedded_redis import EmbeddedRedis, free_port

    # given: a cache on a Redis of its own that counted two hits not yet flushed
    server = EmbeddedRedis(free_port(), tmp_path, persist=True)
    server.start()
    config = CacheConfig(key_prefix="hits", follow_changes=False)
    cache = SemanticCache(server.url, encoder, config)  # type: ignore[arg-type]
    try:
        load_shop(cache)
        assert cache.lookup("shop", "How long does delivery take?").hit
        assert cache.lookup("shop", "How long does delivery take?").hit
        # when: Redis is away at the flush, then back
        server.stop()
        with pytest.raises(redis.RedisError):
            cache.flush()
        server.start()
        cache.flush()
        # then: both hits reached Redis
        entry = Store(cache.redis, "hits", 1000).load("shop:faq:1")
        assert entry is not None and entry.hits == 2
    finally:
        cache.close()
        server.stop()


GIFT = "Do you offer gift wrapping?"
GIFT_ANSWER = "Yes, gift wrapping is available at checkout for 3 euros."


def _offer_racing(cache: SemanticCache, visitor: str, meanwhile: Callable[[], object]) -> str:
    """Offer GIFT_ANSWER, running `meanwhile` (another process's admin action) after the offer
    loaded the candidate and before it writes (while it compares the two answers)."""
    real_embed_many = cache.embeddings.embed_many
    ran = False

    def embed_then_race(texts: list[str]) -> object:
        nonlocal ran
        if len(texts) == 2 and not ran:
            ran = True
            meanwhile()
        return real_embed_many(texts)

    cache.embeddings.embed_many = embed_then_race  # type: ignore[method-assign]
    try:
        return cache.offer_generated("shop", GIFT, GIFT_ANSWER, visitor, first_turn=True)
    finally:
        cache.embeddings.embed_many = real_embed_many  # type: ignore[method-assign]


def test_an_offer_racing_a_purge_starts_a_fresh_candidate_without_orphan_keys(
    make_cache: Callable[..., SemanticCache],
) -> None:
    # given: a candidate one visitor away from admission
    here, admin = make_cache(), make_cache()
    for visitor in ("v1", "v2"):
        assert here.offer_generated("shop", GIFT, GIFT_ANSWER, visitor, first_turn=True) == (
            "pending"
        )
    # when: the third visitor's offer runs while an admin purges the site's generated answers
    state = _offer_racing(here, "v3", lambda: admin.purge_generated("shop"))
    # then: the purge wins: not served, and the offer starts a new, listed candidate (not a
    # half-written hash that no listing shows and no TTL ever removes)
    assert state == "pending"
    assert not here.lookup("shop", GIFT).hit and not admin.lookup("shop", GIFT).hit
    [entry] = here.list_generated("shop")
    assert entry.visitors == 1 and entry.state == "pending"
    keys = here.store.keys
    for key in (keys.entry(entry.entry_id), keys.visitors(entry.entry_id)):
        assert here.redis.ttl(key) > 0, key


def test_an_offer_racing_an_admin_rejection_does_not_admit(
    make_cache: Callable[..., SemanticCache],
) -> None:
    here, admin = make_cache(), make_cache()
    for visitor in ("v1", "v2"):
        here.offer_generated("shop", GIFT, GIFT_ANSWER, visitor, first_turn=True)
    [pending] = here.list_generated("shop")
    # when: an admin rejects the candidate while the third visitor's offer is being processed
    state = _offer_racing(here, "v3", lambda: admin.reject_generated(pending.entry_id))
    # then: the admin's decision stands
    assert state == "rejected_by_admin"
    assert not here.lookup("shop", GIFT).hit
    [entry] = here.list_generated("shop")
    assert entry.state == "rejected"


def test_a_repeated_sync_of_an_unchanged_faq_keeps_its_flag_and_counters(
    make_cache: Callable[..., SemanticCache],
) -> None:
    # given: an FAQ customers flagged (thumbs-down), after it had been served twice
    from cache import FaqRecord

    cache = make_cache(flag_after_net_negative=1)
    record = FaqRecord(2, 1, "How do I return an item?", [], "Within 30 days.", True)
    cache.rebuild_site_faqs("shop", [record])
    assert cache.lookup("shop", "How do I return an item?").hit
    assert cache.lookup("shop", "How do I return an item?").hit
    cache.flush()
    assert cache.record_feedback("shop:faq:2", positive=False) == "flagged"
    # when: the operator runs the rebuild command (or a variant save re-syncs the same
    # version) with nothing changed
    cache.rebuild_site_faqs("shop", [record])
    # then: still flagged and not served, with its counts
    assert not cache.lookup("shop", "How do I return an item?").hit
    entry = cache.get_entry("shop:faq:2")
    assert entry is not None and entry.state == "flagged"
    assert (entry.hits, entry.negative) == (2, 1)
    assert [e.entry_id for e in cache.list_flagged("shop")] == ["shop:faq:2"]
    # while an edit of its content (same version: a variant added) is a fresh entry, served
    edited = FaqRecord(2, 1, "How do I return an item?", ["Returns?"], "Within 30 days.", True)
    cache.rebuild_site_faqs("shop", [edited])
    assert cache.lookup("shop", "How do I return an item?").hit


def test_a_flagged_generated_answer_is_not_evicted_before_review(
    make_cache: Callable[..., SemanticCache],
) -> None:
    # given: a full site (2 of 2 generated answers) whose oldest answer customers flagged
    cache = make_cache(
        admission_min_visitors=1, max_generated_per_site=2, flag_after_net_negative=1
    )

    def admit(question: str) -> str:
        state = cache.offer_generated("shop", question, f"About {question}", "v", first_turn=True)
        assert state == "admitted"
        entry_id = cache.lookup("shop", question).entry_id
        assert entry_id is not None
        return entry_id

    flagged = admit("Do you sell gift cards?")
    admit("Is there a student discount?")
    assert cache.record_feedback(flagged, positive=False) == "flagged"
    # when: more answers are admitted
    admit("Can I pick up my order in store?")
    admit("Do you have a loyalty programme?")
    # then: the flagged one is still listed for review (it no longer takes a served slot),
    # and the served ones stay within the bound
    assert [e.entry_id for e in cache.list_flagged("shop")] == [flagged]
    assert len(cache.list_generated("shop", "active")) == 2


@pytest.mark.parametrize("site_id", [None, 7, b"shop", "a:b", ""])
def test_writers_refuse_a_bad_site_id_with_a_clear_error(
    cache: SemanticCache, site_id: object
) -> None:
    # given: a site id that is not a safe string (a caller passing a Site object's pk as int)
    bad: Any = site_id
    # then: each writer says so (ValueError naming it), rather than a TypeError from deep inside
    with pytest.raises(ValueError, match="invalid site id"):
        cache.sync_faq(bad, 1, 1, "How long does delivery take?", [], "3-5 days.", True)
    with pytest.raises(ValueError, match="invalid site id"):
        cache.offer_generated(bad, "Do you sell gift cards?", "Yes.", "v", first_turn=True)
    with pytest.raises(ValueError, match="invalid site id"):
        cache.purge_generated(bad)
    with pytest.raises(ValueError, match="invalid site id"):
        cache.set_site_policy(bad, 0.5)
    assert cache.store.site_ids() == []


def test_an_unreadable_site_threshold_is_ignored_not_fatal(
    make_cache: Callable[..., SemanticCache],
) -> None:
    # given: a threshold written by hand (or another version) that is not a number
    cache = make_cache()
    load_shop(cache)
    cache.redis.hset(cache.store.keys.policy, "shop", "high")
    # when: a process starts (or rebuilds) and reads the thresholds
    started = make_cache()
    cache.rebuild()
    # then: it starts, the site falls back to the shipped threshold, and it serves
    assert "shop" not in started.store.policies()
    assert started.lookup("shop", "I forgot my password, how can I reset it?").hit


def test_entries_of_another_embedding_model_are_skipped_not_fatal(
    make_cache: Callable[..., SemanticCache],
) -> None:
    # given: Redis holds entries written under another EMBEDDING_MODEL (another dimension)
    import numpy as np

    from cache.types import Entry, Source

    writer = make_cache()
    load_shop(writer)
    old = np.ones((1, 8), dtype=np.float32) / np.sqrt(8)
    stale = Entry("shop:faq:99", "shop", Source.FAQ, ["Do you sell gift cards?"], "Yes.", old)
    stale.faq_id, stale.faq_version = 99, 1
    writer.store.save(stale)
    writer.store.publish("shop", "upsert", [stale.entry_id])
    # when: a process starts, and one already running applies the change
    started = make_cache()
    # then: both serve the site's other entries, and the stale one is a clean miss
    for cache in (started, writer):
        assert cache.lookup("shop", "I forgot my password, how can I reset it?").hit
        assert not cache.lookup("shop", "Do you sell gift cards?").hit
        assert not cache.lookup("shop", "Can I buy a gift card?").hit
