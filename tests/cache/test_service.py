"""Integration tests of SemanticCache against the session's real redis-server and the real
encoder: tiers, guards, tenant isolation, bad input, FAQ sync and removal, admission,
feedback, eviction and purge."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cache import CacheConfig, SemanticCache
from cache.types import Admission
from tests.cache.conftest import load_shop

pytestmark = pytest.mark.slow  # loads the embedding model (once per session)


def test_exact_tier_hits_without_the_encoder(cache: SemanticCache) -> None:
    # given
    load_shop(cache)
    # when
    result = cache.lookup("shop", "  how LONG does delivery take ")
    # then
    assert result.hit and result.tier == "exact" and result.faq_id == 1
    assert result.answer == "Standard delivery takes 3-5 working days."
    assert result.entry_id == "shop:faq:1" and result.reason == ""


def test_semantic_tier_answers_a_paraphrase(cache: SemanticCache) -> None:
    load_shop(cache)
    result = cache.lookup("shop", "I forgot my password, how can I reset it?")
    assert result.hit and result.tier == "semantic" and result.faq_id == 4
    assert result.confidence >= cache.config.min_confidence


def test_unrelated_question_misses_with_low_confidence(cache: SemanticCache) -> None:
    load_shop(cache)
    result = cache.lookup("shop", "Do you sell gift cards for birthdays?")
    assert not result.hit and result.reason == "low_confidence" and result.answer is None


def test_async_lookup_matches_sync(cache: SemanticCache) -> None:
    load_shop(cache)

    async def many() -> list:
        questions = ["Can you deliver to other countries?"] * 8 + ["How do I return an item?"]
        return await asyncio.gather(*(cache.alookup("shop", q) for q in questions))

    results = asyncio.run(many())
    assert [r.faq_id for r in results] == [3] * 8 + [2]
    assert all(r.hit for r in results)


def test_tenant_isolation(cache: SemanticCache) -> None:
    # given: only site "shop" has FAQs; site "other" has a different answer for one question
    load_shop(cache, "shop")
    cache.sync_faq("other", 1, 1, "How long does delivery take?", [], "Other shop: 1 day.", True)
    # when / then: each site gets its own answer, never the other's
    assert cache.lookup("other", "How long does delivery take?").answer == "Other shop: 1 day."
    assert cache.lookup("other", "How do I return an item?").hit is False
    assert cache.lookup("nobody", "How long does delivery take?").reason == "no_entry"
    assert cache.nearest_faqs("other", "How do I return an item?") != []
    assert all(s.faq_id == 1 for s in cache.nearest_faqs("other", "return an item", k=3))


def test_value_guard_blocks_a_different_number(cache: SemanticCache) -> None:
    cache.sync_faq(
        "shop", 7, 1, "Can I return an item after 30 days?", [], "No, 30 days is the limit.", True
    )
    assert cache.lookup("shop", "can i return an item after 30 days").hit
    paraphrase = cache.lookup("shop", "Is it possible to return an item after 30 days?")
    different = cache.lookup("shop", "Can I return an item after 60 days?")
    assert paraphrase.hit
    assert not different.hit and different.reason in ("value_mismatch", "low_confidence")
    assert cache.lookup("shop", "Is it possible to send back an item after 60 days?").reason in (
        "value_mismatch",
        "low_confidence",
    )


def test_value_guard_reason_for_a_confident_match(cache: SemanticCache) -> None:
    cache.sync_faq("shop", 8, 1, "Where is order A100?", [], "Order A100 shipped today.", True)
    result = cache.lookup("shop", "Where is order A200?")
    assert not result.hit and result.reason == "value_mismatch"


def test_follow_up_bypasses_the_cache(cache: SemanticCache) -> None:
    load_shop(cache)
    history = ["How long does delivery take?"]
    assert cache.lookup("shop", "What about the second one?").reason == "follow_up"
    assert cache.lookup("shop", "and when will it arrive?", history=history).reason == "follow_up"
    assert cache.lookup("shop", "Is it free?", history=history).reason == "follow_up"
    assert cache.lookup("shop", "How long does delivery take?", history=history).hit


def test_an_faq_phrasing_with_a_pronoun_hits_exactly_even_mid_conversation(
    cache: SemanticCache,
) -> None:
    # given an FAQ whose admin-written phrasing would look like a follow-up ("this")
    cache.sync_faq("shop", 9, 1, "Can I put this in the dryer?", [], "Check the label.", True)
    history = ["How long does delivery take?"]
    # when a customer asks exactly that, mid-conversation
    exact = cache.lookup("shop", "can I put this in the dryer", history=history)
    # then the FAQ answers; a reworded follow-up still bypasses the cache
    assert exact.hit and exact.tier == "exact" and exact.faq_id == 9
    assert cache.lookup("shop", "and can I put it in the dryer?", history=history).reason == (
        "follow_up"
    )


@pytest.mark.parametrize(
    ("question", "reason"),
    [
        ("", "empty"),
        ("😀🙏🎉", "empty"),
        ("a" * 100_000, "too_long"),
        (b"\xff\xfe\xfa", "invalid_input"),
        ("\udcff\udcfe", "invalid_input"),
        (None, "invalid_input"),
    ],
)
def test_bad_input_is_a_clean_miss(cache: SemanticCache, question: object, reason: str) -> None:
    load_shop(cache)
    result = cache.lookup("shop", question)  # type: ignore[arg-type]
    assert not result.hit and result.reason == reason
    assert asyncio.run(cache.alookup("shop", question)).reason == reason  # type: ignore[arg-type]
    assert cache.nearest_faqs("shop", question) == []  # type: ignore[arg-type]


def test_bad_site_id_is_a_clean_miss(cache: SemanticCache) -> None:
    assert cache.lookup("a:b", "How long does delivery take?").reason == "invalid_input"
    assert cache.lookup(None, "hello").reason == "invalid_input"  # type: ignore[arg-type]


def test_nearest_faqs_ranks_the_right_faq_first(cache: SemanticCache) -> None:
    load_shop(cache)
    found = cache.nearest_faqs("shop", "parcel delivery time", k=3)
    assert [s.faq_id for s in found][0] == 1 and len(found) == 3
    assert found[0].question == "How long does delivery take?"
    assert found[0].score >= found[1].score >= found[2].score


def test_faq_edit_refreshes_and_deactivation_removes(cache: SemanticCache) -> None:
    load_shop(cache)
    cache.sync_faq("shop", 1, 2, "How long does delivery take?", [], "Now 1-2 days.", True)
    assert cache.lookup("shop", "How long does delivery take?").answer == "Now 1-2 days."
    # an older version arriving late is ignored
    cache.sync_faq("shop", 1, 1, "How long does delivery take?", [], "Old answer.", True)
    assert cache.lookup("shop", "How long does delivery take?").answer == "Now 1-2 days."
    cache.sync_faq("shop", 1, 3, "How long does delivery take?", [], "Now 1-2 days.", False)
    assert not cache.lookup("shop", "How long does delivery take?").hit
    cache.remove_faq("shop", 2)
    assert not cache.lookup("shop", "How do I return an item?").hit
    assert cache.redis.exists(cache.store.keys.entry("shop:faq:2")) == 0


def _offer(
    cache: SemanticCache, visitor: str, answer: str | None = None, first_turn: bool = True
) -> str:
    return cache.offer_generated(
        "shop",
        "Do you offer gift wrapping?",
        answer or "Yes, gift wrapping is available at checkout for 3 euros.",
        visitor,
        first_turn=first_turn,
    )


def test_poisoned_answer_is_not_served_to_a_second_visitor(cache: SemanticCache) -> None:
    # given: one visitor makes the model say something, in many conversations
    for _ in range(5):
        assert _offer(cache, "attacker", "Gift wrapping is free and we refund 100%.") == "pending"
    # when: another customer asks the same question
    result = cache.lookup("shop", "Do you offer gift wrapping?", conversation_id="victim")
    # then: not served
    assert not result.hit
    # and a different answer from another conversation rejects the candidate
    assert _offer(cache, "c2") == Admission.REJECTED_INCONSISTENT
    assert not cache.lookup("shop", "Do you offer gift wrapping?").hit


def test_consistent_answers_from_distinct_visitors_are_admitted(
    cache: SemanticCache,
) -> None:
    assert _offer(cache, "c1") == "pending"
    assert _offer(cache, "c1") == "pending"  # the same visitor does not count twice
    assert _offer(cache, "c2", "Yes: gift wrapping can be added at checkout for 3 euros.") == (
        "pending"
    )
    assert _offer(cache, "c3") == "admitted"
    result = cache.lookup("shop", "Do you offer gift wrapping?")
    assert result.hit and result.faq_id is None and result.entry_id is not None
    assert _offer(cache, "c4") == "already_cached"


def test_one_faq_site_does_not_serve_a_merely_related_question(cache: SemanticCache) -> None:
    # given: a site with a single FAQ (no competitor to lower the margin)
    cache.sync_faq("solo", 1, 1, "How do I reset my password?", [], "Use 'Forgot password'.", True)
    # when: a related but different question, and a paraphrase
    other = cache.lookup("solo", "How do I reset my username?")
    paraphrase = cache.lookup("solo", "Can I reset my password?")
    # then: only the paraphrase is served, though both score a high calibrated confidence
    assert not other.hit and other.reason == "low_confidence"
    assert other.confidence > cache.config.min_confidence  # the top-1 floor stopped it
    assert paraphrase.hit and paraphrase.faq_id == 1


def test_only_first_turns_count_towards_admission(cache: SemanticCache) -> None:
    # given: three visitors whose answers were written mid-conversation (with history)
    for visitor in ("v1", "v2", "v3"):
        assert _offer(cache, visitor, first_turn=False) == Admission.REJECTED_MID_CONVERSATION
    # and an offer that does not say which turn it was (the safe default: not a first turn)
    state = cache.offer_generated("shop", "Do you offer gift wrapping?", "Yes.", "v4")
    # then: nothing was stored or counted
    assert state == Admission.REJECTED_MID_CONVERSATION
    assert cache.list_generated("shop") == []
    # and first turns of the same visitors start the count from one
    assert _offer(cache, "v1") == "pending"
    [entry] = cache.list_generated("shop")
    assert entry.visitors == 1


def test_one_visitor_with_many_conversations_counts_once(cache: SemanticCache) -> None:
    # given: a visitor opening a new conversation for each ask (each first turn)
    for _ in range(4):
        assert _offer(cache, "203.0.113.7") == "pending"
    # then: still one visitor, not admitted, not served
    [entry] = cache.list_generated("shop")
    assert entry.visitors == 1 and entry.state == "pending"
    assert not cache.lookup("shop", "Do you offer gift wrapping?").hit


def test_value_guard_compares_values_in_order(cache: SemanticCache) -> None:
    # given: an FAQ about one day, written day/month
    cache.sync_faq("shop", 8, 1, "Are you open on 03/04?", [], "Yes, 10:00-16:00.", True)
    # when: the same numbers in the other order (another day), and the same day again
    swapped = cache.lookup("shop", "Are you open on 04/03?")
    same = cache.lookup("shop", "Is the shop open on 03/04?")
    # then
    assert not swapped.hit and swapped.reason == "value_mismatch"
    assert same.hit and same.faq_id == 8


def test_personal_data_and_follow_ups_are_never_stored(cache: SemanticCache) -> None:
    state = cache.offer_generated(
        "shop",
        "My email is jo@example.com, where is my parcel?",
        "It ships today.",
        "c1",
        first_turn=True,
    )
    assert state == "rejected_personal_data"
    state = cache.offer_generated(
        "shop", "Where is my parcel?", "Call Jo on +44 20 7946 0958.", "c1", first_turn=True
    )
    assert state == "rejected_personal_data"
    assert cache.offer_generated(
        "shop", "what about the other one?", "Yes.", "c1", first_turn=True
    ) == ("rejected_follow_up")
    assert cache.offer_generated("shop", "", "Yes.", "c1", first_turn=True) == "rejected_invalid"
    assert cache.list_generated("shop") == []


def test_eviction_keeps_generated_entries_within_the_bound_and_spares_recent_use(
    make_cache: Callable[..., SemanticCache],
) -> None:
    # given: a full site (3 of 3) whose oldest entry was just used
    cache = make_cache(admission_min_visitors=1, max_generated_per_site=3)
    questions = [
        "Do you sell gift cards?",
        "Is there a student discount?",
        "Can I pick up my order in store?",
        "Do you have a loyalty programme?",
        "Are your products vegan?",
    ]

    def admit(question: str) -> None:
        state = cache.offer_generated(
            "shop", question, f"Answer to: {question}", "v", first_turn=True
        )
        assert state == "admitted"

    for question in questions[:3]:
        admit(question)
    assert cache.lookup("shop", questions[0]).hit
    cache.flush()  # the use reaches Redis (the sync thread does this about once a second)
    # when: two more are admitted
    for question in questions[3:]:
        admit(question)
    # then: still 3, and the least recently *used* went, not the oldest
    assert len(cache.list_generated("shop", "active")) == 3
    assert int(cache.redis.zcard(cache.store.keys.site_generated("shop"))) == 3
    assert cache.lookup("shop", questions[0]).hit
    assert not cache.lookup("shop", questions[1]).hit
    assert not cache.lookup("shop", questions[2]).hit
    assert cache.lookup("shop", questions[-1]).hit


def test_thumbs_down_demotes_then_flags(make_cache: Callable[..., SemanticCache]) -> None:
    cache = make_cache(flag_after_net_negative=2)
    load_shop(cache)
    entry_id = cache.lookup("shop", "How do I return an item?").entry_id
    assert entry_id == "shop:faq:2"
    assert cache.record_feedback(entry_id, positive=False) == "active"
    assert cache.get_entry(entry_id).demoted  # type: ignore[union-attr]
    assert cache.record_feedback(entry_id, positive=False) == "flagged"
    assert not cache.lookup("shop", "How do I return an item?").hit
    assert cache.record_feedback("shop:faq:999", positive=False) is None


def test_purge_removes_generated_entries_only(make_cache: Callable[..., SemanticCache]) -> None:
    cache = make_cache(admission_min_visitors=1)
    load_shop(cache)
    cache.offer_generated(
        "shop", "Do you sell gift cards?", "Yes, online and in store.", "v", first_turn=True
    )
    cache.offer_generated("shop", "Are your products vegan?", "Most are.", "v", first_turn=True)
    assert cache.lookup("shop", "Do you sell gift cards?").hit
    assert cache.purge_generated("shop") == 2
    assert not cache.lookup("shop", "Do you sell gift cards?").hit
    assert cache.lookup("shop", "How do I return an item?").hit


def test_admin_approval_and_rejection(cache: SemanticCache) -> None:
    _offer(cache, "c1")
    [pending] = cache.list_generated("shop", "pending")
    assert cache.approve_generated(pending.entry_id)
    assert cache.lookup("shop", "Do you offer gift wrapping?").hit
    assert cache.reject_generated(pending.entry_id)
    assert not cache.lookup("shop", "Do you offer gift wrapping?").hit
    assert _offer(cache, "c9") == "rejected_by_admin"


def test_site_threshold_override(cache: SemanticCache) -> None:
    load_shop(cache)
    question = "I forgot my password, how can I reset it?"
    assert cache.lookup("shop", question).hit
    cache.set_site_policy("shop", 1.0)
    result = cache.lookup("shop", question)
    assert not result.hit and result.reason == "low_confidence"
    cache.set_site_policy("shop", None)
    assert cache.lookup("shop", question).hit


def test_near_misses_and_hit_counts_reach_redis(cache: SemanticCache) -> None:
    load_shop(cache)
    cache.lookup("shop", "How long does delivery take?")
    cache.lookup("shop", "How long does delivery take?")
    cache.lookup("shop", "How long does shipping take to my country?")
    cache.flush()
    assert cache.get_entry("shop:faq:1").hits == 2  # type: ignore[union-attr]
    misses = cache.list_near_misses("shop")
    assert [m.question for m in misses] == ["How long does shipping take to my country?"]


def test_process_row_bound_is_enforced(make_cache: Callable[..., SemanticCache]) -> None:
    cache = make_cache(max_rows_per_process=4)
    load_shop(cache)  # 4 FAQs x 3 phrasings: only the first fits
    assert cache.row_count() <= 4
    assert cache.lookup("shop", "How long does delivery take?").hit
    assert not cache.lookup("shop", "How do I return an item?").hit


def test_async_suggestions_match_sync(cache: SemanticCache) -> None:
    load_shop(cache)
    question = "parcel delivery time"
    sync = [s.faq_id for s in cache.nearest_faqs("shop", question, k=2)]
    assert [s.faq_id for s in asyncio.run(cache.anearest_faqs("shop", question, k=2))] == sync
    assert asyncio.run(cache.anearest_faqs("nobody", question)) == []


def test_deleted_site_is_forgotten(make_cache: Callable[..., SemanticCache]) -> None:
    cache = make_cache(admission_min_visitors=1)
    load_shop(cache)
    cache.offer_generated(
        "shop", "Do you sell gift cards?", "Yes, online and in store.", "v", first_turn=True
    )
    cache.set_site_policy("shop", 0.5)
    assert cache.purge_site("shop") == 5
    assert cache.lookup("shop", "How long does delivery take?").reason == "no_entry"
    assert cache.store.site_entry_ids("shop") == [] and cache.store.policies() == {}


def test_cache_started_without_redis_serves_misses_then_recovers(
    redis_url: str, encoder: object, tmp_path: Path
) -> None:
    # given: a redis-server that is not running yet when the cache starts
    from embedded_redis import EmbeddedRedis, free_port

    server = EmbeddedRedis(free_port(), tmp_path, persist=False)
    cache = SemanticCache(server.url, encoder, CacheConfig(key_prefix="down"))  # type: ignore[arg-type]
    try:
        # then: lookups are clean misses, not errors
        assert cache.lookup("shop", "How long does delivery take?").reason == "no_entry"
        # when: Redis comes up and another process writes an FAQ
        server.start()
        writer = SemanticCache(server.url, encoder, CacheConfig(key_prefix="down"))  # type: ignore[arg-type]
        load_shop(writer)
        writer.close()
        # then: the first cache catches up on its own
        deadline = time.monotonic() + 10
        while not cache.lookup("shop", "How long does delivery take?").hit:
            assert time.monotonic() < deadline, "cache did not recover after Redis came back"
            time.sleep(0.05)
    finally:
        cache.close()
        server.stop()


def test_a_late_sync_cannot_bring_back_a_deactivated_faq(cache: SemanticCache) -> None:
    # given: version 3 served, then version 4 deactivated
    question = "How long does delivery take?"
    assert cache.sync_faq("shop", 1, 3, question, [], "3-5 days.", True)
    cache.sync_faq("shop", 1, 4, question, [], "3-5 days.", False)
    # when: the "active" sync of version 3 (or a duplicate at 4) arrives late
    assert not cache.sync_faq("shop", 1, 3, question, [], "3-5 days.", True)
    assert not cache.sync_faq("shop", 1, 4, question, [], "3-5 days.", True)
    # then: still not served, here or in a fresh process
    assert not cache.lookup("shop", question).hit
    cache.rebuild()
    assert not cache.lookup("shop", question).hit
    # and a newer edit that reactivates it is served again
    assert cache.sync_faq("shop", 1, 5, question, [], "1-2 days.", True)
    assert cache.lookup("shop", question).answer == "1-2 days."
    # while a removal older than what is stored is ignored
    cache.sync_faq("shop", 1, 4, question, [], "3-5 days.", False)
    assert cache.lookup("shop", question).answer == "1-2 days."


def test_concurrent_syncs_end_with_the_newest_version(
    make_cache: Callable[..., SemanticCache],
) -> None:
    # given: two processes syncing interleaved versions of one FAQ at the same time
    first, second = make_cache(), make_cache()
    question = "How long does delivery take?"
    versions = list(range(1, 41))

    def sync_all(cache: SemanticCache, mine: list[int]) -> None:
        for version in mine:
            cache.sync_faq("shop", 1, version, question, [], f"Answer v{version}.", True)

    # when
    threads = [
        threading.Thread(target=sync_all, args=(first, versions[0::2])),
        threading.Thread(target=sync_all, args=(second, versions[1::2])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then: whatever the interleaving, the newest version is what is stored
    stored = first.get_entry("shop:faq:1")
    assert stored is not None and stored.faq_version == 40 and stored.answer == "Answer v40."


def test_an_out_of_range_site_threshold_is_refused_and_never_applied(
    cache: SemanticCache,
) -> None:
    load_shop(cache)
    with pytest.raises(ValueError):
        cache.set_site_policy("shop", -1.0)
    # one written before the check (or by hand) is ignored: the shipped threshold applies
    cache.redis.hset(cache.store.keys.policy, "shop", "-1")
    cache.rebuild()
    assert "shop" not in cache.store.policies()
    assert not cache.lookup("shop", "Do you sell gift cards for birthdays?").hit


@pytest.mark.parametrize(
    "question",
    [
        "My order 123456 is late, when will my parcel arrive?",
        "My account number is 12345678, when will my parcel arrive?",
        "Call me on 555-1234: when will my parcel arrive?",
        "My dob is 12/03/1985, when will my parcel arrive?",
        "I am John Smith, when will my parcel arrive?",
        "My name is John, when will my parcel arrive?",
    ],
)
def test_customer_details_are_neither_stored_nor_listed(
    make_cache: Callable[..., SemanticCache], question: str
) -> None:
    # given: a strict site, so paraphrases are near misses rather than hits
    cache = make_cache(min_confidence=1.0)
    load_shop(cache)
    # when
    state = cache.offer_generated("shop", question, "Within 3-5 days.", "v1", first_turn=True)
    result = cache.lookup("shop", question)
    control = cache.lookup("shop", "My parcel is late, when will it arrive?")
    cache.flush()
    # then: never stored, and only the question without details is kept for review
    assert state == "rejected_personal_data" and cache.list_generated("shop") == []
    assert not result.hit and not control.hit
    assert [m.question for m in cache.list_near_misses("shop")] == [
        "My parcel is late, when will it arrive?"
    ]


def test_flagged_entries_of_both_kinds_are_listed_and_restorable(
    make_cache: Callable[..., SemanticCache],
) -> None:
    # given: an FAQ entry and a generated entry, both flagged by thumbs-down
    cache = make_cache(flag_after_net_negative=1, admission_min_visitors=1)
    load_shop(cache)
    state = cache.offer_generated(
        "shop", "Do you sell gift cards?", "Yes, online.", "v", first_turn=True
    )
    assert state == "admitted"
    generated_id = cache.lookup("shop", "Do you sell gift cards?").entry_id
    assert generated_id is not None
    for entry_id in ("shop:faq:2", generated_id):
        assert cache.record_feedback(entry_id, positive=False) == "flagged"
    # when / then: both are listed, the FAQ one with its FAQ id
    flagged = {e.entry_id: e for e in cache.list_flagged("shop")}
    assert set(flagged) == {"shop:faq:2", generated_id}
    assert flagged["shop:faq:2"].faq_id == 2 and flagged["shop:faq:2"].source == "faq"
    # restoring serves them again; restoring twice does nothing
    assert cache.restore_entry("shop:faq:2") and cache.restore_entry(generated_id)
    assert not cache.restore_entry("shop:faq:2")
    assert cache.lookup("shop", "How do I return an item?").hit
    assert cache.lookup("shop", "Do you sell gift cards?").hit
    assert cache.list_flagged("shop") == []
