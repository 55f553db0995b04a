"""Fit the decision rule's logistic weights and pick the shipped threshold.

    python -m cache.calibrate --train TRAIN.csv [--seeds 100-105] [--variants 3,5,10]
        [--unknown-intents 17] [--target-precision 0.995] [--shipped-weights]

Uses the *training* split only: for each seed and K it simulates a site (cache/banking.py),
takes every training question not used as an FAQ phrasing as a query (unknown categories
included, so false hits on them count as errors), computes the decision features exactly as
lookups do (decision.compute_features over an index.Snapshot), fits a logistic regression of
"the best entry is right", and prints the weights and the lowest threshold whose precision on
these calibration sites reaches the target. The constants in cache/decision.py come from it.

With --shipped-weights it fits nothing: it scores the calibration queries with the shipped
rule (decision.calibrated_confidence and the top-1 cosine floor, as lookups do) and reports
precision per K, so the shipped threshold can be checked against the target for FAQs with few
phrasings and with many, not only pooled over all of them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cache.banking import Labelled, encode_all, read_labelled, simulate_site, site_snapshot
from cache.decision import MIN_TOP1_COSINE, calibrated_confidence, compute_features
from cache.encoder import load_encoder

REPORTED_THRESHOLDS = [0.9, 0.95, 0.97, 0.975, 0.98, 0.985, 0.99, 0.992, 0.995]


def parse_range(text: str) -> list[int]:
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(part) for part in text.split(",")]


def training_sites_parser(description: str) -> argparse.ArgumentParser:
    """The options of the tools that simulate sites on the training split."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--train", required=True)
    parser.add_argument("--seeds", default="100-105")
    parser.add_argument("--variants", default="3,5,10")
    parser.add_argument("--unknown-intents", type=int, default=17)
    parser.add_argument("--model", default="")
    parser.add_argument("--onnx-cache", default="var/cache-models")
    return parser


def encode_training(args: argparse.Namespace) -> tuple[list[Labelled], np.ndarray]:
    """The training questions and their vectors (printing how long encoding took)."""
    train = read_labelled(Path(args.train))
    encoder = load_encoder(args.model, Path(args.onnx_cache))
    started = time.perf_counter()
    vectors = encode_all(encoder, [r.text for r in train])
    print(f"encoded {len(train)} training questions in {time.perf_counter() - started:.0f} s")
    return train, vectors


def main(argv: list[str] | None = None) -> int:
    from sklearn.linear_model import LogisticRegression  # only this tool needs scikit-learn

    parser = training_sites_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--target-precision", type=float, default=0.995)
    parser.add_argument(
        "--shipped-weights", action="store_true", help="check the shipped rule per K; fit nothing"
    )
    args = parser.parse_args(argv)
    train, vectors = encode_training(args)

    features: list[np.ndarray] = []
    labels: list[int] = []
    phrasings_per_faq: list[int] = []
    for seed in parse_range(args.seeds):
        for variants in parse_range(args.variants):
            site = simulate_site(train, variants, args.unknown_intents, seed)
            snapshot = site_snapshot(site, train, vectors)
            categories = [faq.category for faq in site.faqs]
            queries = [i for i in range(len(train)) if i not in site.used]
            sims = vectors[queries] @ snapshot.matrix.T  # [Q, R]
            for row, query in enumerate(queries):
                group, _, f = compute_features(sims[row], snapshot.row_groups, snapshot.group_rows)
                features.append(f)
                labels.append(int(categories[group] == train[query].category))
                phrasings_per_faq.append(variants)
    x = np.stack(features)
    y = np.array(labels)
    if args.shipped_weights:
        report_shipped(x, y, np.array(phrasings_per_faq), args.target_precision)
        return 0
    model = LogisticRegression(C=10.0, max_iter=5000).fit(x, y)
    probability = model.predict_proba(x)[:, 1]
    order = np.argsort(-probability)
    precision = np.cumsum(y[order]) / np.arange(1, len(order) + 1)
    reaching = np.flatnonzero(precision >= args.target_precision)
    cut = int(reaching.max()) if reaching.size else 0
    threshold = float(probability[order[cut]])
    weights = [round(float(w), 3) for w in model.coef_[0]]
    print("threshold  precision  served  (on the calibration queries)")
    for t in REPORTED_THRESHOLDS:
        served = probability >= t
        if served.any():
            print(f"{t:9.3f}  {y[served].mean():9.4f}  {served.mean():6.4f}")
    print(f"{len(y)} calibration queries, {y.mean():.3f} of best entries right")
    print(f"weights [top1, margin, group_mean, group_mean_margin, vote] = {weights}")
    print(f"bias = {float(model.intercept_[0]):.3f}")
    print(
        f"threshold for precision >= {args.target_precision}: {threshold:.4f} "
        f"(serves {(cut + 1) / len(y):.3f} of calibration queries)"
    )
    print(
        json.dumps(
            {
                "weights": weights,
                "bias": round(float(model.intercept_[0]), 3),
                "threshold": round(threshold, 4),
            }
        )
    )
    return 0


def report_shipped(x: np.ndarray, y: np.ndarray, k: np.ndarray, target: float) -> None:
    """Precision of the shipped rule per K at each reported threshold, and the lowest one that
    reaches the target for every K (pooled over the seeds of that K)."""
    confidence = np.array([calibrated_confidence(f) for f in x])
    confidence[x[:, 0] < MIN_TOP1_COSINE] = 0.0  # the floor lookups apply before the threshold
    ks = sorted({int(v) for v in k})
    print("threshold  " + "  ".join(f"K={v}: precision / served" for v in ks))
    lowest_for_all: float | None = None
    for t in REPORTED_THRESHOLDS:
        cells, reached = [], True
        for v in ks:
            served = (confidence >= t) & (k == v)
            precision = float(y[served].mean()) if served.any() else 1.0
            reached &= precision >= target
            cells.append(f"{precision:.4f} / {served.sum() / (k == v).sum():.4f}")
        print(f"{t:9.3f}  " + "  ".join(cells))
        if reached and lowest_for_all is None:
            lowest_for_all = t
    print(f"{len(y)} calibration queries")
    print(json.dumps({"target_precision": target, "lowest_threshold_for_every_k": lowest_for_all}))


if __name__ == "__main__":
    raise SystemExit(main())
