"""What the admin pages read and do: review generated and flagged entries, near misses,
purges and per-site serving thresholds."""

from __future__ import annotations

import json
from collections.abc import Iterable

from cache import admission
from cache.ids import check_site_id, is_generated, site_of
from cache.normalize import CheckedQuestion, Rejection, check_question
from cache.replica import Replica
from cache.types import Entry, EntrySummary, NearMiss, Source, State

# --- generated entries ------------------------------------------------------------------------


def approve_generated(replica: Replica, entry_id: str) -> bool:
    """An admin's approval: the entry is served from now on (fresh TTL)."""
    return admission.set_state(replica, entry_id, State.ACTIVE, note="admin")


def reject_generated(replica: Replica, entry_id: str) -> bool:
    return admission.set_state(replica, entry_id, State.REJECTED, note="admin")


def list_generated(replica: Replica, site_id: str, state: str | None = None) -> list[EntrySummary]:
    """The site's generated entries (optionally one state), most hit first."""
    return _summaries(
        e
        for e in replica.store.load_site(site_id)
        if e.source == Source.GENERATED and (state is None or e.state.value == state)
    )


def purge_generated(replica: Replica, site_id: str) -> int:
    """Delete all the site's generated entries (any state). Returns how many."""
    check_site_id(site_id)
    ids = [e for e in replica.store.site_entry_ids(site_id) if is_generated(e)]
    count = replica.store.delete(site_id, ids)
    replica.store.delete_grounded(site_id)
    replica.redis.delete(replica.store.keys.site_rejected(site_id))
    if ids:
        replica.changed(site_id, "delete", ids)
    return count


# --- any entry --------------------------------------------------------------------------------


def list_flagged(replica: Replica, site_id: str) -> list[EntrySummary]:
    """The site's flagged entries of both kinds (FAQ and generated), most hit first.

    A flagged entry is not served until an admin restores it (`restore_entry`), approves it
    (generated) or edits its FAQ (which rewrites the entry), so it must be listed.
    """
    return _summaries(e for e in replica.store.load_site(site_id) if e.state == State.FLAGGED)


def restore_entry(replica: Replica, entry_id: str) -> bool:
    """An admin's "this answer is fine": a flagged entry is served again, its thumbs reset.

    False when the entry is gone or not flagged (nothing to restore).
    """
    entry = replica.store.load(entry_id)
    if entry is None or entry.state != State.FLAGGED:
        return False
    if entry.source == Source.GENERATED:
        return admission.set_state(replica, entry_id, State.ACTIVE, note="admin")
    # Only while still flagged: an FAQ edit or removal since the load wins (and a removed
    # entry's hash must not be recreated half-empty).
    restored = replica.redis.eval(
        "if redis.call('HGET', KEYS[1], 'state') ~= ARGV[1] then return 0 end "
        "redis.call('HSET', KEYS[1], 'state', ARGV[2], 'note', 'admin', 'pos', 0, 'neg', 0) "
        "return 1",
        1, replica.store.keys.entry(entry_id), State.FLAGGED.value, State.ACTIVE.value,
    )  # fmt: skip
    if not restored:
        return False
    replica.changed(entry.site_id, "upsert", [entry_id])
    return True


def delete_entry(replica: Replica, entry_id: str) -> bool:
    site_id = site_of(entry_id)
    removed = replica.store.delete(site_id, [entry_id]) > 0
    replica.changed(site_id, "delete", [entry_id])
    return removed


# --- near misses ------------------------------------------------------------------------------


def list_near_misses(replica: Replica, site_id: str, limit: int = 100) -> list[NearMiss]:
    """The site's newest near misses, at most `limit` (none for a limit of 0 or less)."""
    # LRANGE 0 -1 (limit 0) or 0 -2 would return the whole list.
    limit = min(limit, replica.config.max_near_misses_per_site)
    if limit <= 0:
        return []
    raw = replica.redis.lrange(replica.store.keys.near_misses(site_id), 0, limit - 1)
    return [NearMiss(**json.loads(item)) for item in raw]


def dismiss_near_misses(replica: Replica, site_id: str, question: str) -> int:
    """Remove the site's near misses of this question (same normalized text), e.g. once an
    admin made it a phrasing of an FAQ. Returns how many were removed."""
    check_site_id(site_id)
    checked = check_question(question)
    if isinstance(checked, Rejection):
        return 0
    key = replica.store.keys.near_misses(site_id)
    removed = 0
    for raw in set(replica.redis.lrange(key, 0, -1)):
        stored = check_question(json.loads(raw).get("question"))
        if isinstance(stored, CheckedQuestion) and stored.normalized == checked.normalized:
            removed += int(replica.redis.lrem(key, 0, raw))
    return removed


# --- sites ------------------------------------------------------------------------------------


def set_site_policy(replica: Replica, site_id: str, min_confidence: float | None) -> None:
    """Override the serving threshold for one site (None = the shipped default)."""
    check_site_id(site_id)
    replica.store.set_policy(site_id, min_confidence)  # ValueError outside [0, 1]
    replica.changed(site_id, "policy", [])


def purge_site(replica: Replica, site_id: str) -> int:
    """Forget everything about a site (a deleted site): entries, near misses, policy."""
    check_site_id(site_id)
    ids = replica.store.site_entry_ids(site_id)
    count = replica.store.delete(site_id, ids)
    replica.redis.delete(
        replica.store.keys.near_misses(site_id), replica.store.keys.site_rejected(site_id)
    )
    replica.store.delete_tombstones(site_id)
    replica.store.delete_grounded(site_id)
    replica.redis.srem(replica.store.keys.sites, site_id)
    replica.store.set_policy(site_id, None)
    replica.changed(site_id, "delete", ids)
    replica.changed(site_id, "policy", [])
    # Every process drops the site's buffered near misses and hit counts (processes of an
    # older version log this op as unknown and ignore it; the near-miss TTL bounds theirs).
    replica.changed(site_id, "purge", [])
    return count


def _summaries(entries: Iterable[Entry]) -> list[EntrySummary]:
    ordered = sorted(entries, key=lambda e: (-e.hits, -e.created_at))
    return [
        EntrySummary(
            entry_id=e.entry_id,
            site_id=e.site_id,
            question=e.questions[0],
            answer=e.answer,
            state=e.state.value,
            hits=e.hits,
            positive=e.positive,
            negative=e.negative,
            visitors=e.visitors,
            created_at=e.created_at,
            expires_at=e.expires_at,
            source=e.source.value,
            faq_id=e.faq_id,
        )
        for e in ordered
    ]
