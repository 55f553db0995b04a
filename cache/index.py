"""A process's in-memory view of one site's servable entries.

Lookups never touch Redis: the exact tier is a dict from normalized phrasing to entry, the
semantic tier one matrix product over the site's phrasing embeddings. Writers (the sync
thread, or this process's own writes) change `entries` under a lock and mark the index dirty;
the next lookup builds a fresh immutable `Snapshot` and swaps it in, so a lookup always reads
one consistent snapshot without holding a lock during the search.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cache.decision import Decision, decide
from cache.types import Entry, State

# Above this many rows a lookup first ranks rows in a 64-dimensional projection and computes
# exact cosines only for the best candidates' entries. The exact product over all rows is
# memory-bound: 100k x 384 float32 is 153 MB read per lookup (~20 ms here); the projection
# reads 26 MB. Below it the exact product is fast enough and nothing is approximated.
APPROX_MIN_ROWS = 20_000
# Projection size and candidates kept: on Banking77's training questions (10k real phrasings)
# the exact 32 nearest rows were always among the 1,024 best by the 64-dimensional projection.
COARSE_DIMS = 64
COARSE_CANDIDATES = 1024


@dataclass(frozen=True, slots=True)
class Snapshot:
    entries: list[Entry]  # servable entries; a group index points here
    exact: dict[str, int]  # normalized phrasing -> index into entries
    matrix: np.ndarray  # [R, dim] float32: every phrasing of every entry
    row_groups: np.ndarray  # [R] int32: entry index of each row
    row_phrasing: np.ndarray  # [R] int32: phrasing index within its entry
    group_rows: list[np.ndarray]  # per entry: its row indices
    group_start: np.ndarray  # [E] int64: an entry's rows are group_start .. + group_count
    group_count: np.ndarray  # [E] int64
    # Large snapshots only (see APPROX_MIN_ROWS): top principal directions of the rows and the
    # rows projected on them.
    projection: np.ndarray | None = None  # [dim, COARSE_DIMS] float32
    coarse: np.ndarray | None = None  # [R, COARSE_DIMS] float32
    # [dim] float32: the mean of the rows, the direction every phrasing of the site shares
    # ("my card", "my account" on a bank's site); suggestions rank FAQs with it removed.
    centre: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return int(self.matrix.shape[0])

    def exact_entry(self, normalized: str) -> Entry | None:
        """The entry with this normalized phrasing (the exact tier), if any."""
        group = self.exact.get(normalized)
        return self.entries[group] if group is not None else None


def servable(entry: Entry, now: float) -> bool:
    return entry.state == State.ACTIVE and (entry.expires_at is None or entry.expires_at > now)


def build_snapshot(entries: list[Entry], dim: int, normalize: Callable[[str], str]) -> Snapshot:
    exact: dict[str, int] = {}
    blocks: list[np.ndarray] = []
    groups: list[np.ndarray] = []
    phrasing: list[np.ndarray] = []
    group_rows: list[np.ndarray] = []
    start = 0
    for index, entry in enumerate(entries):
        count = entry.embeddings.shape[0]
        blocks.append(entry.embeddings)
        groups.append(np.full(count, index, dtype=np.int32))
        phrasing.append(np.arange(count, dtype=np.int32))
        group_rows.append(np.arange(start, start + count))
        start += count
        for question in entry.questions:
            # FAQ phrasings win an exact-key clash with generated entries: they are curated.
            key = normalize(question)
            current = exact.get(key)
            if current is None or entries[current].faq_id is None:
                exact[key] = index
    matrix = np.concatenate(blocks) if blocks else np.zeros((0, dim), dtype=np.float32)
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    projection = coarse = None
    if matrix.shape[0] >= APPROX_MIN_ROWS:
        # Principal directions of the (unit) rows: eigenvectors of the [dim, dim] Gram matrix.
        _, vectors = np.linalg.eigh(matrix.T @ matrix)
        projection = np.ascontiguousarray(vectors[:, -COARSE_DIMS:], dtype=np.float32)
        coarse = np.ascontiguousarray(matrix @ projection)
    return Snapshot(
        entries=entries,
        exact=exact,
        matrix=matrix,
        row_groups=np.concatenate(groups) if groups else np.zeros(0, dtype=np.int32),
        row_phrasing=np.concatenate(phrasing) if phrasing else np.zeros(0, dtype=np.int32),
        group_rows=group_rows,
        group_start=np.array([r[0] if r.size else 0 for r in group_rows], dtype=np.int64),
        group_count=np.array([r.size for r in group_rows], dtype=np.int64),
        projection=projection,
        coarse=coarse,
        centre=matrix.mean(axis=0) if matrix.shape[0] else np.zeros(dim, dtype=np.float32),
    )


def similarities(snapshot: Snapshot, vector: np.ndarray) -> np.ndarray:
    """[R] cosine of the vector to every row; on large snapshots exact only for the rows of
    the entries that the projection ranks best, -1 (never chosen) elsewhere."""
    if snapshot.coarse is None or snapshot.projection is None:
        return snapshot.matrix @ vector
    approximate = snapshot.coarse @ (vector @ snapshot.projection)  # [R]
    candidates = np.argpartition(-approximate, COARSE_CANDIDATES - 1)[:COARSE_CANDIDATES]
    groups = np.unique(snapshot.row_groups[candidates])
    # Every row of those entries (contiguous runs), without a Python loop over entries.
    starts, counts = snapshot.group_start[groups], snapshot.group_count[groups]
    offsets = np.repeat(starts - (np.cumsum(counts) - counts), counts)
    rows = np.arange(int(counts.sum())) + offsets
    sims = np.full(snapshot.rows, -1.0, dtype=np.float32)
    sims[rows] = snapshot.matrix[rows] @ vector
    return sims


class SiteIndex:
    def __init__(self, site_id: str, dim: int, normalize: Callable[[str], str]) -> None:
        self.site_id = site_id
        self.dim = dim
        self._normalize = normalize
        self.entries: dict[str, Entry] = {}
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._dirty = True

    def upsert(self, entry: Entry) -> None:
        with self._lock:
            self.entries[entry.entry_id] = entry
            self._dirty = True

    def remove(self, entry_id: str) -> bool:
        with self._lock:
            removed = self.entries.pop(entry_id, None) is not None
            self._dirty = True
            return removed

    def remove_if_same(self, entry: Entry) -> bool:
        """Remove the entry only if the index still holds that version of it (a lookup found
        it expired in an older snapshot: a re-admission of the same id since then is kept)."""
        with self._lock:
            current = self.entries.get(entry.entry_id)
            if current is None or (current is not entry and current.expires_at != entry.expires_at):
                return False
            del self.entries[entry.entry_id]
            self._dirty = True
            return True

    def drop_expired(self, now: float) -> int:
        """Forget entries whose TTL passed (Redis expires their hash without a change).

        Without this an expired entry that nobody asks about again would stay in `entries`
        for the life of the process, holding memory and rows of the process's bound.
        """
        with self._lock:
            expired = [
                entry_id
                for entry_id, entry in self.entries.items()
                if entry.expires_at is not None and entry.expires_at <= now
            ]
            for entry_id in expired:
                del self.entries[entry_id]
            if expired:
                self._dirty = True
            return len(expired)

    @property
    def dirty(self) -> bool:
        return self._dirty

    def row_count(self) -> int:
        return sum(e.embeddings.shape[0] for e in self.entries.values())

    def refresh(self) -> None:
        """Build a new snapshot if entries changed since the last one.

        Called by writers (after applying a change) and by the sync thread, never by lookups:
        at 100k rows a build takes seconds, and lookups keep reading the previous snapshot
        meanwhile instead of waiting for it.
        """
        with self._lock:
            if not self._dirty and self._snapshot is not None:
                return
            now = time.time()
            live = [e for e in self.entries.values() if servable(e, now)]
            self._snapshot = build_snapshot(live, self.dim, self._normalize)
            self._dirty = False

    def snapshot(self) -> Snapshot:
        """The latest built snapshot (built here only if none exists yet)."""
        current = self._snapshot
        if current is None:
            self.refresh()
            current = self._snapshot
            assert current is not None
        return current


def search(snapshot: Snapshot, vector: np.ndarray, rule: str) -> Decision | None:
    """The decision for one question vector, or None when the site has no rows."""
    if snapshot.rows == 0:
        return None
    sims = similarities(snapshot, vector)  # [R]
    return decide(sims, snapshot.row_groups, snapshot.group_rows, rule)


def nearest_entries(snapshot: Snapshot, vector: np.ndarray, k: int) -> list[tuple[int, int, float]]:
    """Up to k distinct entries nearest the vector: (entry index, phrasing row, cosine)."""
    if snapshot.rows == 0 or k <= 0:
        return []
    sims = similarities(snapshot, vector)
    take = min(snapshot.rows, max(k * 8, 32))  # several phrasings per entry may crowd the top
    top = np.argpartition(-sims, take - 1)[:take] if snapshot.rows > take else np.arange(take)
    top = top[np.argsort(-sims[top], kind="stable")]
    found: list[tuple[int, int, float]] = []
    seen: set[int] = set()
    for row in top:
        group = int(snapshot.row_groups[row])
        if group in seen:
            continue
        seen.add(group)
        found.append((group, int(row), float(sims[row])))
        if len(found) == k:
            break
    return found
