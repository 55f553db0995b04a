"""Pick the "did you mean" floor on the training split, and print its trade-off curve.

    python -m cache.calibrate_suggestions --train TRAIN.csv [--seeds 100-105]
        [--variants 3,5,10] [--unknown-intents 17] [--max-recall-cost 0.01]

Uses the *training* split only, like cache.calibrate: for each seed and K it simulates a site
(cache/banking.py) and takes every training question not used as an FAQ phrasing as a query.
Questions the shipped rule would answer are set aside (a hit shows no suggestions). For the
others it ranks the site's FAQs exactly as suggestions do (suggestions.ranked_faqs over an
index.Snapshot), and prints, per floor and K, the recall at 3 (known questions whose right FAQ
is among the suggestions shown) and the share of unknown questions shown any suggestion. The
floor chosen is the highest of the grid whose recall at 3 is within --max-recall-cost of no
floor at every K. It also prints, for comparison, the recall at 3 of the 3 nearest FAQs by
their nearest phrasing (what the prompt grounding uses).
"""

from __future__ import annotations

import json

import numpy as np

from cache.banking import simulate_site, site_snapshot
from cache.calibrate import encode_training, parse_range, training_sites_parser
from cache.decision import RULE_CALIBRATED, SHIPPED_MIN_CONFIDENCE, decide, servable
from cache.index import nearest_entries
from cache.suggestions import RERANK_CANDIDATES, ranked_faqs

SHOWN = 3
FLOOR_GRID = [round(0.30 + 0.02 * i, 2) for i in range(16)]  # 0.30 .. 0.60


def main(argv: list[str] | None = None) -> int:
    parser = training_sites_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--max-recall-cost", type=float, default=0.01)
    args = parser.parse_args(argv)
    train, vectors = encode_training(args)

    ks = parse_range(args.variants)
    # Per K: for each known miss, (right FAQ in plain top 3, [(is right, cosine)] ranked);
    # for each unknown query, the ranked cosines.
    plain: dict[int, list[bool]] = {k: [] for k in ks}
    known: dict[int, list[list[tuple[bool, float]]]] = {k: [] for k in ks}
    unknown: dict[int, list[list[float]]] = {k: [] for k in ks}
    for seed in parse_range(args.seeds):
        for k in ks:
            site = simulate_site(train, k, args.unknown_intents, seed)
            snapshot = site_snapshot(site, train, vectors)
            categories = [faq.category for faq in site.faqs]
            for query in (i for i in range(len(train)) if i not in site.used):
                vector = vectors[query]
                sims = snapshot.matrix @ vector
                decision = decide(sims, snapshot.row_groups, snapshot.group_rows, RULE_CALIBRATED)
                if servable(decision, SHIPPED_MIN_CONFIDENCE, demoted=False):
                    continue  # a hit: no suggestions
                ranked = ranked_faqs(snapshot, vector, RERANK_CANDIDATES)
                truth = train[query].category
                if truth in site.unknown:
                    unknown[k].append([s.score for s in ranked])
                    continue
                known[k].append([(categories[s.faq_id - 1] == truth, s.score) for s in ranked])
                nearest = nearest_entries(snapshot, vector, SHOWN)
                plain[k].append(any(categories[group] == truth for group, _, _ in nearest))

    print("floor  " + "  ".join(f"K={k}: recall@3 / shown on unknown" for k in ks))
    baseline = {k: _recall(known[k], 0.0) for k in ks}
    chosen = 0.0
    for floor in [0.0, *FLOOR_GRID]:
        cells, within = [], True
        for k in ks:
            recall = _recall(known[k], floor)
            within &= baseline[k] - recall <= args.max_recall_cost
            cells.append(f"{recall:.4f} / {_shown(unknown[k], floor):.4f}")
        print(f"{floor:5.2f}  " + "  ".join(cells))
        if within:
            chosen = floor
    for k in ks:
        print(
            f"K={k}: {len(known[k])} known misses, {len(unknown[k])} unknown; recall at 3 with no"
            f" floor: shipped ranking {baseline[k]:.4f}, nearest phrasing {np.mean(plain[k]):.4f}"
        )
    print(json.dumps({"max_recall_cost": args.max_recall_cost, "floor": chosen}))
    return 0


def _recall(known: list[list[tuple[bool, float]]], floor: float) -> float:
    """Share of known misses whose right FAQ is among the first SHOWN at or above the floor."""
    found = [any(right for right, _ in _above(ranked, floor)) for ranked in known]
    return float(np.mean(found)) if found else 0.0


def _shown(unknown: list[list[float]], floor: float) -> float:
    """Share of unknown queries shown any suggestion."""
    return float(np.mean([any(score >= floor for score in ranked) for ranked in unknown]))


def _above(ranked: list[tuple[bool, float]], floor: float) -> list[tuple[bool, float]]:
    return [(right, score) for right, score in ranked if score >= floor][:SHOWN]


if __name__ == "__main__":
    raise SystemExit(main())
