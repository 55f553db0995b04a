"""Regression tests of defects an earlier review of the cache found and left unfixed: expired
entries removed by id, unbounded rejected entries, near-miss limits and purges, a Redis that
never answers, and the rebuild command leaving deleted sites' entries behind.

All run against the session's real redis-server (or a real TCP server that never answers).
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from cache import CacheConfig, SemanticCache
from cache.encoder import OnnxEncoder
from cache.ids import generated_entry_id, site_of
from cache.lookup import Prepared, decide
from cache.normalize import CheckedQuestion, check_question
from tests.cache.conftest import load_shop

pytestmark = pytest.mark.slow  # loads the embedding model (once per session)

GIFT = "Do you sell gift cards?"


def wait_for(check: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not true within {timeout} s"
        time.sleep(0.02)


def test_an_expired_lookup_does_not_remove_a_readmitted_entry(
    make_cache: Callable[..., SemanticCache],
) -> None:
    # given: process A holds a generated answer that expires in 1 s, and a lookup of it that
    # read the snapshot holding that version (a lookup in flight)
    a = make_cache(admission_min_visitors=1, generated_ttl_s=1)
    b = make_cache(admission_min_visitors=1)
    assert a.offer_generated("shop", GIFT, "Yes.", "v1", first_turn=True) == "admitted"
    checked = check_question(GIFT)
    assert isinstance(checked, CheckedQuestion)
    in_flight = Prepared("shop", checked, a.replica.index("shop").snapshot(), time.perf_counter())
    time.sleep(1.1)
    # when: process B re-admits the same question (same entry id) with a fresh week-long TTL,
    # A applies it, and only then does A's lookup find its old version expired
    entry_id = generated_entry_id("shop", checked.normalized)
    b.delete_entry(entry_id)
    assert b.offer_generated("shop", GIFT, "Yes, in store.", "v2", first_turn=True) == "admitted"

    def readmitted_in_a() -> bool:
        entry = a.replica.index("shop").entries.get(entry_id)
        return (
            entry is not None and entry.hits == 0 and (entry.expires_at or 0) > time.time() + 3600
        )

    wait_for(readmitted_in_a)
    late = decide(a.replica, in_flight, a.embeddings.embed(checked.text))
    assert late.reason == "expired"
    # then: the fresh version stays served in A (before: removed from A until its next change)
    a.refresh_indexes()
    result = a.lookup("shop", GIFT)
    assert result.hit and result.answer == "Yes, in store."


def test_rejected_generated_entries_are_bounded_per_site(
    make_cache: Callable[..., SemanticCache],
) -> None:
    # given: a site whose rejected candidates are bounded at 3
    cache = make_cache(admission_min_visitors=2, max_rejected_per_site=3)
    questions = [f"Do you sell {item} in your shop?" for item in ("hats", "shoes", "socks", "ties")]
    # when: four questions get answers that disagree (rejected, kept for review), and an admin
    # rejects a fifth candidate
    for question in questions:
        assert cache.offer_generated("shop", question, "Yes, in every store.", "v1",
                                     first_turn=True) == "pending"  # fmt: skip
        assert cache.offer_generated("shop", question, "Our office is closed on Sundays.",
                                     "v2", first_turn=True) == "rejected_inconsistent"  # fmt: skip
        time.sleep(0.01)  # distinct rejection times
    fifth = "Do you sell scarves in your shop?"
    assert cache.offer_generated("shop", fifth, "Yes.", "v1", first_turn=True) == "pending"
    checked = check_question(fifth)
    assert isinstance(checked, CheckedQuestion)
    assert cache.reject_generated(generated_entry_id("shop", checked.normalized))
    # then: only the 3 newest rejected ones are kept (before: all 5, until their expiry)
    kept = {e.question for e in cache.list_generated("shop", "rejected")}
    assert kept == {questions[2], questions[3], fifth}
    # and an approved one leaves the rejected set (it is not dropped as a rejected one later)
    approved = check_question(questions[3])
    assert isinstance(approved, CheckedQuestion)
    assert cache.approve_generated(generated_entry_id("shop", approved.normalized))
    rejected_key = cache.store.keys.site_rejected("shop")
    assert cache.redis.zcard(rejected_key) == 2


def near_misses_of(cache: SemanticCache) -> None:
    """Lookups of loosely related questions (near misses of the shop's FAQs), buffered."""
    for question in (
        "Is delivery free on big orders?",
        "Can I change my delivery address?",
        "Do you deliver on Sundays?",
        "Can I exchange an item for another size?",
        "Is my password stored safely?",
    ):
        cache.lookup("shop", question)


def test_near_miss_limits_of_zero_or_less_return_nothing(cache: SemanticCache) -> None:
    load_shop(cache)
    near_misses_of(cache)
    cache.flush()
    stored = cache.list_near_misses("shop", limit=100)
    assert len(stored) >= 2  # the test needs some
    assert cache.list_near_misses("shop", limit=1) == stored[:1]
    # before: 0 and -1 became LRANGE 0 -1 and 0 -2, the whole list
    assert cache.list_near_misses("shop", limit=0) == []
    assert cache.list_near_misses("shop", limit=-1) == []
    assert cache.list_near_misses("shop", limit=10**9) == stored


def test_a_purged_sites_buffered_near_misses_are_not_flushed_back(
    make_cache: Callable[..., SemanticCache],
) -> None:
    # given: process A buffered near misses and hits of a site (its flush not yet due)
    a = make_cache(flush_interval_s=3600.0)
    b = make_cache()
    load_shop(b)
    wait_for(lambda: a.row_count() == b.row_count() > 0)
    near_misses_of(a)
    assert a.lookup("shop", "How long does delivery take?").hit
    # when: another process purges the site (a deleted site), and A then flushes
    b.purge_site("shop")
    last = b.store.last_change_id()
    wait_for(lambda: a.last_change_id == last)
    a.flush()
    # then: the purged site's near-miss list does not reappear (before: it did, with no expiry)
    assert not b.redis.exists(b.store.keys.near_misses("shop"))
    assert b.list_near_misses("shop") == []
    assert not any(site_of(entry_id) == "shop" for entry_id in a.replica._hits)


def test_the_near_miss_list_expires(cache: SemanticCache) -> None:
    load_shop(cache)
    near_misses_of(cache)
    cache.flush()
    ttl = cache.redis.ttl(cache.store.keys.near_misses("shop"))
    # before: -1 (kept forever, even for a site nobody uses any more)
    assert 0 < ttl <= cache.config.near_miss_ttl_s


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A real TCP server that accepts connections and never answers (a hung Redis)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            held.append(connection)  # kept open, never read nor answered

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    stop.set()
    thread.join(timeout=2)
    for connection in held:
        connection.close()
    server.close()


def test_a_redis_that_never_answers_fails_writes_within_the_timeout(
    silent_server: str, encoder: OnnxEncoder
) -> None:
    # given: a cache whose Redis accepts connections and never answers (its start serves
    # misses, as it does when Redis is down), with a 1.5 s reply timeout
    config = CacheConfig(key_prefix="silent", redis_socket_timeout_s=1.5)
    outcome: list[BaseException | float | None] = []
    caches: list[SemanticCache] = []

    def admin_save() -> None:
        try:
            cache = SemanticCache(silent_server, encoder, config)
            caches.append(cache)
            started = time.monotonic()
            cache.set_site_policy("shop", 0.5)  # when: an admin saves a site's threshold
        except redis.TimeoutError as error:
            outcome.extend([error, time.monotonic() - started])
        except BaseException as error:  # noqa: BLE001 - reported to the test thread
            outcome.append(error)
        else:
            outcome.append(None)

    worker = threading.Thread(target=admin_save, daemon=True)
    worker.start()
    worker.join(timeout=20)
    try:
        # then: the save fails with a Redis timeout after the configured 1.5 s (not redis-py's
        # own 5 s default, which an older redis-py does not even have: it waited forever)
        assert not worker.is_alive(), "the write hung on a Redis that never answers"
        assert isinstance(outcome[0], redis.TimeoutError), outcome
        assert isinstance(outcome[1], float) and outcome[1] < 4.0, outcome
    finally:
        for cache in caches:
            if cache._follower is not None:
                cache._follower.stop()  # its retries would keep hitting the silent server


def test_the_socket_timeout_must_exceed_the_change_streams_block() -> None:
    defaults = CacheConfig()
    assert defaults.redis_socket_timeout_s >= 10 * defaults.sync_block_ms / 1000
    with pytest.raises(ValueError, match="socket timeout"):
        SemanticCache("redis://127.0.0.1:1/0", None, CacheConfig(redis_socket_timeout_s=0.2))  # type: ignore[arg-type]


@pytest.mark.django_db
def test_rebuild_command_purges_cached_sites_no_longer_in_the_database() -> None:
    from django.core.management import call_command

    from chatplatform.semanticcache.service import get_cache
    from chatplatform.tenants.models import Site

    cache = get_cache()
    cache.rebuild()
    kept = Site.objects.create(name="kept")
    gone = Site.objects.create(name="gone")
    gone_id = str(gone.pk)
    Site.objects.filter(pk=gone.pk).delete()  # committed never: its purge never ran
    try:
        # given: the deleted site's entries are still in Redis (its purge failed)
        cache.sync_faq(gone_id, 1, 1, "Do you ship abroad?", [], "Yes.", True)
        assert cache.lookup(gone_id, "Do you ship abroad?").hit
        # when: the operator runs the rebuild
        out = io.StringIO()
        call_command("rebuild_semantic_cache", stdout=out)
        # then: the orphaned site is purged and the output says so (before: left in Redis)
        assert gone_id not in cache.store.site_ids()
        assert not cache.lookup(gone_id, "Do you ship abroad?").hit
        assert f"site {gone_id}: not in the database; purged" in out.getvalue()
        assert f"site {kept.pk} (kept)" in out.getvalue()
    finally:
        cache.purge_site(gone_id)
        cache.purge_site(str(kept.pk))
