"""Redis persistence of entries, and the change stream every process follows.

Key layout (prefix `sc1`, one Redis database shared by all processes):

    {p}:e:{entry_id}          hash: one entry (questions JSON, answer, embeddings as float32
                              bytes, state, source, FAQ id/version, counters, times)
    {p}:e:{entry_id}:visitors set: visitors (id or address) that produced a pending generated answer
    {p}:e:{entry_id}:removed  string: FAQ version at which the FAQ's entry was removed (a
                              tombstone, for a day: a late sync of that version or an older
                              one must not bring the entry back)
    {p}:s:{site}:entries      set: ids of all the site's entries (any state)
    {p}:s:{site}:gen          zset: active generated entries by last use (LRU eviction)
    {p}:s:{site}:pending      zset: pending generated entries by creation time
    {p}:s:{site}:rejected     zset: rejected generated entries by rejection time (bound)
    {p}:s:{site}:near         list: recent near misses (JSON), newest first
    {p}:sites                 set: sites that have entries
    {p}:policy                hash: site -> serving threshold override (JSON float)
    {p}:changes               stream: {site, op, ids} per change, capped
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import redis

from cache.types import Entry, Source, State

logger = logging.getLogger(__name__)

LOAD_CHUNK = 500  # entries fetched per pipeline round trip when loading a site
# How long a removed FAQ's version is remembered. Syncs of one edit reach Redis within seconds;
# a day covers any late one, and then the key goes, so an FAQ id that a database reuses (after
# a rollback) is not blocked for long.
FAQ_TOMBSTONE_TTL_S = 24 * 3600


def valid_min_confidence(value: float) -> bool:
    return 0.0 <= value <= 1.0  # also False for NaN


class Keys:
    def __init__(self, prefix: str) -> None:
        self.p = prefix

    def entry(self, entry_id: str) -> str:
        return f"{self.p}:e:{entry_id}"

    def visitors(self, entry_id: str) -> str:
        return f"{self.p}:e:{entry_id}:visitors"

    def removed(self, entry_id: str) -> str:
        return f"{self.p}:e:{entry_id}:removed"

    def site_removed_pattern(self, site_id: str) -> str:
        """SCAN pattern of a site's FAQ tombstones (site ids hold no glob characters)."""
        return f"{self.p}:e:{site_id}:faq:*:removed"

    def grounded(self, site_id: str, faq_id: int) -> str:
        """Set of the generated entries whose answer was written with this FAQ shown."""
        return f"{self.p}:s:{site_id}:grounded:{faq_id}"

    def site_grounded_pattern(self, site_id: str) -> str:
        return f"{self.p}:s:{site_id}:grounded:*"

    def site_entries(self, site_id: str) -> str:
        return f"{self.p}:s:{site_id}:entries"

    def site_generated(self, site_id: str) -> str:
        return f"{self.p}:s:{site_id}:gen"

    def site_pending(self, site_id: str) -> str:
        return f"{self.p}:s:{site_id}:pending"

    def site_rejected(self, site_id: str) -> str:
        return f"{self.p}:s:{site_id}:rejected"

    def near_misses(self, site_id: str) -> str:
        return f"{self.p}:s:{site_id}:near"

    @property
    def sites(self) -> str:
        return f"{self.p}:sites"

    @property
    def policy(self) -> str:
        return f"{self.p}:policy"

    @property
    def changes(self) -> str:
        return f"{self.p}:changes"


def entry_to_mapping(entry: Entry) -> dict[str, str | bytes | float | int]:
    return {
        "site": entry.site_id,
        "source": entry.source.value,
        "questions": json.dumps(entry.questions),
        "answer": entry.answer,
        "emb": np.ascontiguousarray(entry.embeddings, dtype=np.float32).tobytes(),
        "dim": int(entry.embeddings.shape[1]),
        "state": entry.state.value,
        "faq_id": "" if entry.faq_id is None else entry.faq_id,
        "faq_version": "" if entry.faq_version is None else entry.faq_version,
        "created_at": entry.created_at,
        "expires_at": "" if entry.expires_at is None else entry.expires_at,
        "hits": entry.hits,
        "pos": entry.positive,
        "neg": entry.negative,
        "visitors": entry.visitors,
        "note": entry.note,
        "grounding": ",".join(entry.grounding),
    }


def _optional_int(raw: bytes | None) -> int | None:
    return int(raw) if raw else None


def entry_from_mapping(entry_id: str, data: dict[bytes, bytes]) -> Entry | None:
    """The entry of a stored hash, or None when the hash is missing or incomplete."""
    if not data or b"emb" not in data:
        return None
    dim = int(data[b"dim"])
    questions = json.loads(data[b"questions"])
    embeddings = np.frombuffer(data[b"emb"], dtype=np.float32).reshape(-1, dim)
    return Entry(
        entry_id=entry_id,
        site_id=data[b"site"].decode(),
        source=Source(data[b"source"].decode()),
        questions=questions,
        answer=data[b"answer"].decode(),
        embeddings=embeddings,
        state=State(data[b"state"].decode()),
        faq_id=_optional_int(data.get(b"faq_id")),
        faq_version=_optional_int(data.get(b"faq_version")),
        created_at=float(data.get(b"created_at") or 0.0),
        expires_at=float(data[b"expires_at"]) if data.get(b"expires_at") else None,
        hits=int(data.get(b"hits") or 0),
        positive=int(data.get(b"pos") or 0),
        negative=int(data.get(b"neg") or 0),
        visitors=int(data.get(b"visitors") or 0),
        note=(data.get(b"note") or b"").decode(),
        # values: left empty, computed when a lookup needs them (lookup.entry_values): at a
        # cold site's load the regexes over every phrasing cost more than reading it.
        grounding=[g for g in (data.get(b"grounding") or b"").decode().split(",") if g],
    )


def _keep_review_state(entry: Entry, stored: dict[bytes, bytes]) -> None:
    """Carry the stored entry's counters and flag over to a re-sync that changes nothing.

    The same FAQ version is synced again by every variant save and by the rebuild command;
    rewriting it fresh would zero its hits and thumbs and serve a flagged answer again
    without anyone reviewing it. Changed phrasings or answer (a variant edit keeps the FAQ's
    version) make a fresh entry, as any edit does.
    """
    if not stored or stored.get(b"answer", b"").decode() != entry.answer:
        return
    if json.loads(stored.get(b"questions") or b"[]") != entry.questions:
        return
    entry.hits = int(stored.get(b"hits") or 0)
    entry.positive = int(stored.get(b"pos") or 0)
    entry.negative = int(stored.get(b"neg") or 0)
    entry.state = State((stored.get(b"state") or b"active").decode())
    entry.note = (stored.get(b"note") or b"").decode()


class Store:
    def __init__(self, client: redis.Redis, prefix: str, stream_maxlen: int) -> None:
        self.r = client
        self.keys = Keys(prefix)
        self.stream_maxlen = stream_maxlen

    # --- entries ---------------------------------------------------------------------------

    def save(self, entry: Entry, pipe: Any | None = None) -> None:
        """Write the whole entry (and its site memberships); expiry follows entry.expires_at."""
        target = pipe if pipe is not None else self.r.pipeline(transaction=True)
        key = self.keys.entry(entry.entry_id)
        target.delete(key)
        target.hset(key, mapping=entry_to_mapping(entry))
        if entry.expires_at is not None:
            target.expireat(key, int(entry.expires_at) + 1)
        target.sadd(self.keys.site_entries(entry.site_id), entry.entry_id)
        target.sadd(self.keys.sites, entry.site_id)
        if pipe is None:
            target.execute()

    def save_faq_if_newest(self, entry: Entry) -> bool:
        """Write an FAQ entry unless a newer version is stored or this one was removed.

        Compare-and-set under WATCH: a concurrent sync or removal of the same entry between
        the check and the write makes the transaction retry, so two processes syncing
        different versions always end with the newest, and a removal is never undone by a
        late sync of the version it removed (or an older one).
        """
        if entry.faq_version is None:
            raise ValueError("an FAQ entry needs its FAQ's version")
        version = entry.faq_version
        key, removed_key = self.keys.entry(entry.entry_id), self.keys.removed(entry.entry_id)

        def attempt(pipe: Any) -> bool:
            stored = _optional_int(pipe.hget(key, "faq_version")) or 0
            removed = _optional_int(pipe.get(removed_key)) or 0
            if version < stored or version <= removed:
                return False
            if version == stored:
                _keep_review_state(entry, pipe.hgetall(key))
            pipe.multi()
            self.save(entry, pipe)
            self.publish(entry.site_id, "upsert", [entry.entry_id], pipe)
            return True

        return bool(self.r.transaction(attempt, key, removed_key, value_from_callable=True))

    def remove_faq_entry(
        self, site_id: str, entry_id: str, version: int | None
    ) -> Literal["deleted", "absent", "overtaken"]:
        """Delete an FAQ entry and leave a tombstone of the version removed.

        `version`: the FAQ version that was deactivated, moved away or emptied; None when the
        FAQ itself is gone (the stored version is then the one tombstoned). A removal older
        than the stored version is ignored ("overtaken"): a newer edit already won.
        """
        key, removed_key = self.keys.entry(entry_id), self.keys.removed(entry_id)

        def attempt(pipe: Any) -> Literal["deleted", "absent", "overtaken"]:
            stored = _optional_int(pipe.hget(key, "faq_version")) or 0
            removed = _optional_int(pipe.get(removed_key)) or 0
            existed = bool(pipe.exists(key))
            if version is not None and version < stored:
                return "overtaken"
            tombstone = max(version or 0, stored, removed)
            pipe.multi()
            pipe.delete(key)
            pipe.srem(self.keys.site_entries(site_id), entry_id)
            if tombstone:
                pipe.set(removed_key, tombstone, ex=FAQ_TOMBSTONE_TTL_S)
            self.publish(site_id, "delete", [entry_id], pipe)
            return "deleted" if existed else "absent"

        return self.r.transaction(attempt, key, removed_key, value_from_callable=True)

    def add_grounded(
        self, site_id: str, entry_id: str, faq_ids: Iterable[int], ttl_s: int, pipe: Any
    ) -> None:
        """Record (in `pipe`) that the entry's answer was written with these FAQs shown.

        Every add resets the set's life to `ttl_s` from now, which outlives any member added
        so far (an entry lives at most pending + generated TTL from its own add), so a set is
        never gone while an entry it names can still be served."""
        for faq_id in faq_ids:
            key = self.keys.grounded(site_id, faq_id)
            pipe.sadd(key, entry_id)
            pipe.expire(key, ttl_s)

    def pop_grounded(self, site_id: str, faq_id: int) -> list[str]:
        """The entries recorded as written with this FAQ shown; the record is cleared."""
        pipe = self.r.pipeline(transaction=True)
        key = self.keys.grounded(site_id, faq_id)
        pipe.smembers(key)
        pipe.delete(key)
        members, _ = pipe.execute()
        return sorted(member.decode() for member in members)

    def delete_grounded(self, site_id: str) -> None:
        keys = list(self.r.scan_iter(match=self.keys.site_grounded_pattern(site_id), count=1000))
        if keys:
            self.r.delete(*keys)

    def delete_tombstones(self, site_id: str) -> None:
        keys = list(self.r.scan_iter(match=self.keys.site_removed_pattern(site_id), count=1000))
        if keys:
            self.r.delete(*keys)

    def load(self, entry_id: str) -> Entry | None:
        return entry_from_mapping(entry_id, self.r.hgetall(self.keys.entry(entry_id)))

    def load_many(self, entry_ids: list[str]) -> dict[str, Entry | None]:
        found: dict[str, Entry | None] = {}
        for start in range(0, len(entry_ids), LOAD_CHUNK):
            chunk = entry_ids[start : start + LOAD_CHUNK]
            pipe = self.r.pipeline(transaction=False)
            for entry_id in chunk:
                pipe.hgetall(self.keys.entry(entry_id))
            for entry_id, data in zip(chunk, pipe.execute(), strict=True):
                found[entry_id] = entry_from_mapping(entry_id, data)
        return found

    def site_ids(self) -> list[str]:
        return sorted(s.decode() for s in self.r.smembers(self.keys.sites))

    def site_entry_ids(self, site_id: str) -> list[str]:
        return sorted(e.decode() for e in self.r.smembers(self.keys.site_entries(site_id)))

    def load_site(self, site_id: str) -> list[Entry]:
        """Every stored entry of a site; ids whose hash expired are dropped from the set."""
        ids = self.site_entry_ids(site_id)
        found = self.load_many(ids)
        gone = [entry_id for entry_id, entry in found.items() if entry is None]
        if gone:
            self.r.srem(self.keys.site_entries(site_id), *gone)
        return [entry for entry in found.values() if entry is not None]

    def delete(self, site_id: str, entry_ids: Iterable[str]) -> int:
        ids = list(entry_ids)
        if not ids:
            return 0
        pipe = self.r.pipeline(transaction=True)
        for entry_id in ids:
            pipe.delete(self.keys.entry(entry_id), self.keys.visitors(entry_id))
        pipe.srem(self.keys.site_entries(site_id), *ids)
        pipe.zrem(self.keys.site_generated(site_id), *ids)
        pipe.zrem(self.keys.site_pending(site_id), *ids)
        pipe.zrem(self.keys.site_rejected(site_id), *ids)
        results = pipe.execute()
        return sum(1 for deleted in results[: len(ids)] if deleted)

    # --- the change stream -----------------------------------------------------------------

    def publish(
        self, site_id: str, op: str, entry_ids: Iterable[str] = (), pipe: Any = None
    ) -> None:
        target = pipe if pipe is not None else self.r
        target.xadd(
            self.keys.changes,
            {"site": site_id, "op": op, "ids": json.dumps(list(entry_ids))},
            maxlen=self.stream_maxlen,
            approximate=True,
        )

    def last_change_id(self) -> str:
        """Id of the newest change (a process that rebuilt reads only what follows)."""
        newest = self.r.xrevrange(self.keys.changes, count=1)
        return newest[0][0].decode() if newest else "0-0"

    def oldest_change_id(self) -> str | None:
        oldest = self.r.xrange(self.keys.changes, count=1)
        return oldest[0][0].decode() if oldest else None

    def read_changes(self, after: str, block_ms: int) -> list[tuple[str, str, str, list[str]]]:
        """Changes after id `after`: (change id, site, op, entry ids), oldest first."""
        reply = self.r.xread({self.keys.changes: after}, block=block_ms, count=1000)
        changes: list[tuple[str, str, str, list[str]]] = []
        for _stream, messages in reply or []:
            for message_id, fields in messages:
                changes.append(
                    (
                        message_id.decode(),
                        fields[b"site"].decode(),
                        fields[b"op"].decode(),
                        json.loads(fields[b"ids"]),
                    )
                )
        return changes

    # --- per-site policy -------------------------------------------------------------------

    def policies(self) -> dict[str, float]:
        """Per-site thresholds; one outside [0, 1] (written before this check) is skipped, so
        that site falls back to the shipped threshold rather than serving anything."""
        found: dict[str, float] = {}
        for raw_site, raw_value in self.r.hgetall(self.keys.policy).items():
            try:
                value = float(json.loads(raw_value))
            except (ValueError, TypeError):
                # Not a number: a process must still start (and its sync thread follow).
                logger.error("cache: site %s threshold %r ignored", raw_site.decode(), raw_value)
                continue
            if valid_min_confidence(value):
                found[raw_site.decode()] = value
            else:
                logger.error("cache: site %s threshold %r ignored", raw_site.decode(), value)
        return found

    def set_policy(self, site_id: str, min_confidence: float | None) -> None:
        """Set (or with None, clear) a site's threshold. ValueError outside [0, 1]."""
        if min_confidence is not None and not valid_min_confidence(min_confidence):
            raise ValueError(f"min_confidence must be within [0, 1], not {min_confidence!r}")
        if min_confidence is None:
            self.r.hdel(self.keys.policy, site_id)
        else:
            self.r.hset(self.keys.policy, site_id, json.dumps(min_confidence))
