"""Unit tests of the in-memory index: snapshots, the exact-tier map and the large-site search
path (projection first, exact cosines for the best candidates)."""

from __future__ import annotations

import numpy as np

from cache.decision import decide
from cache.index import APPROX_MIN_ROWS, SiteIndex, build_snapshot, nearest_entries, search
from cache.normalize import normalize
from cache.types import Entry, Source, State

DIM = 384


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def entry(entry_id: str, vectors: np.ndarray, questions: list[str] | None = None) -> Entry:
    return Entry(
        entry_id=entry_id,
        site_id="s",
        source=Source.FAQ,
        questions=questions or [f"{entry_id} phrasing {i}" for i in range(len(vectors))],
        answer=f"answer {entry_id}",
        embeddings=vectors,
        faq_id=int(entry_id) if entry_id.isdigit() else None,
    )


def test_large_snapshot_search_matches_the_exact_search() -> None:
    # given: 60 FAQs of 3 phrasings around distinct centres, plus filler entries up to a size
    # where the projection path is used
    rng = np.random.default_rng(0)
    centres = unit(rng.standard_normal((60, DIM)))
    faqs = [
        entry(str(i + 1), unit(centres[i] + 0.03 * rng.standard_normal((3, DIM))))
        for i in range(60)
    ]
    filler = unit(rng.standard_normal((APPROX_MIN_ROWS, DIM)))
    fillers = [entry(f"f{i}", filler[i : i + 1]) for i in range(APPROX_MIN_ROWS)]
    snapshot = build_snapshot(faqs + fillers, DIM, normalize)
    assert snapshot.coarse is not None
    # when: questions near each FAQ are searched both ways
    for i in range(60):
        question = unit(centres[i] + 0.04 * rng.standard_normal(DIM))
        approximate = search(snapshot, question, "calibrated")
        exact = decide(
            snapshot.matrix @ question, snapshot.row_groups, snapshot.group_rows, "calibrated"
        )
        # then: the same entry and nearest phrasing; the confidence may differ slightly where
        # the runner-up is a far-away filler the projection cannot rank (random vectors)
        assert approximate is not None
        assert approximate.group == exact.group == i and approximate.row == exact.row
        assert approximate.features[0] == exact.features[0]
        assert abs(approximate.confidence - exact.confidence) < 0.01
    assert [g for g, _, _ in nearest_entries(snapshot, unit(centres[7]), 1)] == [7]


def test_small_snapshots_use_the_exact_product() -> None:
    rng = np.random.default_rng(1)
    snapshot = build_snapshot([entry("1", unit(rng.standard_normal((3, DIM))))], DIM, normalize)
    assert snapshot.coarse is None and snapshot.rows == 3


def test_exact_map_prefers_faq_phrasings_and_skips_inactive_entries() -> None:
    rng = np.random.default_rng(2)
    generated = entry("g", unit(rng.standard_normal((1, DIM))), ["Do you ship abroad?"])
    generated.faq_id = None
    faq = entry("5", unit(rng.standard_normal((1, DIM))), ["do you ship ABROAD"])
    flagged = entry("6", unit(rng.standard_normal((1, DIM))), ["Is it vegan?"])
    flagged.state = State.FLAGGED
    index = SiteIndex("s", DIM, normalize)
    for e in (generated, faq, flagged):
        index.upsert(e)
    index.refresh()
    snapshot = index.snapshot()
    assert snapshot.entries[snapshot.exact["do you ship abroad"]].entry_id == "5"
    assert "is it vegan" not in snapshot.exact
    # a change is visible only once a writer refreshes: lookups never rebuild
    index.remove("5")
    assert index.snapshot() is snapshot and index.dirty
    index.refresh()
    assert index.snapshot().entries[index.snapshot().exact["do you ship abroad"]].entry_id == "g"
