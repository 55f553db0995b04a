"""Simulated FAQ sites from a labelled question set (Banking77's `text,category` CSVs).

Shared by the evaluation and the calibration so both build sites the same way: one FAQ per
category from K random training phrasings (the first is the canonical question; the answer
names the category), with U random categories left out of the FAQ entirely.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cache.encoder import Encoder
from cache.index import Snapshot, build_snapshot
from cache.normalize import normalize
from cache.types import Entry, Source

ENCODE_BATCH = 64  # questions per encoder call when encoding a whole data set


@dataclass(frozen=True, slots=True)
class Labelled:
    text: str
    category: str


@dataclass(frozen=True, slots=True)
class SimulatedFaq:
    faq_id: int
    category: str
    phrasings: list[str]  # first = canonical question
    answer: str


@dataclass(frozen=True, slots=True)
class SimulatedSite:
    faqs: list[SimulatedFaq]
    unknown: frozenset[str]  # categories with no FAQ
    used: frozenset[int]  # indices of the training rows the FAQs use


def read_labelled(path: Path) -> list[Labelled]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [Labelled(row["text"], row["category"]) for row in csv.DictReader(handle)]


def simulate_site(train: list[Labelled], variants: int, unknown: int, seed: int) -> SimulatedSite:
    rng = np.random.default_rng(seed)
    categories = sorted({row.category for row in train})
    left_out = {categories[i] for i in rng.choice(len(categories), unknown, replace=False)}
    faqs: list[SimulatedFaq] = []
    used: set[int] = set()
    for category in categories:
        if category in left_out:
            continue
        pool = [i for i, row in enumerate(train) if row.category == category]
        picked = [int(i) for i in rng.choice(pool, min(variants, len(pool)), replace=False)]
        used.update(picked)
        faqs.append(
            SimulatedFaq(
                faq_id=len(faqs) + 1,
                category=category,
                phrasings=[train[i].text for i in picked],
                answer=f"Answer about {category.replace('_', ' ')}.",
            )
        )
    return SimulatedSite(faqs=faqs, unknown=frozenset(left_out), used=frozenset(used))


def encode_all(encoder: Encoder, texts: list[str]) -> np.ndarray:
    """[len(texts), dim] unit vectors, encoded in batches."""
    return np.concatenate(
        [encoder.encode(texts[i : i + ENCODE_BATCH]) for i in range(0, len(texts), ENCODE_BATCH)]
    )


def site_snapshot(site: SimulatedSite, train: list[Labelled], vectors: np.ndarray) -> Snapshot:
    """The site's FAQs as a lookup would search them, from the training questions' vectors
    (`vectors[i]` is `train[i]`'s), without Redis or an encoder call."""
    row_of = {row.text: i for i, row in enumerate(train)}
    entries = [
        Entry(
            entry_id=str(faq.faq_id),
            site_id="simulated",
            source=Source.FAQ,
            questions=faq.phrasings,
            answer=faq.answer,
            embeddings=vectors[[row_of[p] for p in faq.phrasings]],
            faq_id=faq.faq_id,
        )
        for faq in site.faqs
    ]
    return build_snapshot(entries, vectors.shape[1], normalize)
