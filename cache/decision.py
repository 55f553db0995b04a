"""The decision rule: is the nearest entry's answer right for this question?

One cosine threshold ignores what we know: each FAQ has several phrasings, and a question that
sits as close to a second FAQ as to the first is ambiguous however similar it is. The rule looks
at the question's neighbourhood, grouped by entry (one entry = one answer), and computes

- `top1`: cosine to the nearest phrasing;
- `margin`: top1 minus the nearest phrasing of any *other* entry;
- `group_mean`: mean cosine to all phrasings of the best entry (agreement of the phrasings);
- `group_mean_margin`: that mean minus the best mean of the other entries nearby;
- `vote`: softmax-weighted share of the best entry among the VOTE_K nearest phrasings;

and maps them through a logistic model to a calibrated probability that the best entry is the
right answer (`confidence`). The weights were fitted by `python -m cache.calibrate` on the
Banking77 *training* split only (simulated sites: K phrasings per FAQ, other training
questions as queries, 17 intents left unknown), never on the test split the evaluation reports.
Pure numpy; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Neighbours examined per lookup. Competing entries beyond the 32 nearest phrasings are far
# enough that they no longer change the margins.
TOP_N = 32
VOTE_K = 5
# Softmax temperature of the vote: cosines differ by a few hundredths between near phrasings,
# so a temperature of 0.1 lets a 0.05 lead weigh ~1.6x.
VOTE_TEMPERATURE = 0.1
# Stand-in similarity of "the best competing entry" when there is none nearby (a site with a
# single entry): unrelated MiniLM sentences score about 0.1-0.2.
NO_COMPETITOR_SIM = 0.2

# Logistic weights over [top1, margin, group_mean, group_mean_margin, vote] and the bias, from
# `python -m cache.calibrate` (see docs/benchmarks.md, "Semantic cache", for the run).
CALIBRATED_WEIGHTS = np.array([5.47, 6.91, 1.25, 4.57, 1.65], dtype=np.float64)
CALIBRATED_BIAS = -6.19
# Shipped serving threshold on the calibrated confidence: the lowest one at which precision
# reaches 0.99 for FAQs with 2, 3, 4, 5 and 10 phrasings alike, on training-split calibration
# sites (`python -m cache.calibrate --shipped-weights --seeds 100-119 --variants 2,3,4,5,10
# --target-precision 0.99`, 971,500 queries): at 0.992 precision is 0.9935 / 0.9931 / 0.9909 /
# 0.9959 / 0.9985. The earlier 0.98 reached 0.99 only pooled over K=3, 5 and 10 (0.9917); per
# K it gives 0.9847 for three phrasings, the commonest FAQ shape.
SHIPPED_MIN_CONFIDENCE = 0.992
# A demoted entry (net thumbs-down) must clear a threshold halfway between the normal one
# and certainty.
DEMOTION_SHARE = 0.5
# Whatever the confidence, the nearest phrasing must be at least this similar. The margin
# features assume competitors: on a site with one or two FAQs there are none, NO_COMPETITOR_SIM
# stands in, and an unrelated question scores a margin of 0.5 ("How do I reset my username?"
# got 0.997 for the only FAQ, "How do I reset my password?", at cosine 0.702). On the Banking77
# evaluation sites (K=3, U=17, seeds 0/1/2) the shipped rule's hits have top-1 cosines of at
# least 0.737 / 0.762 / 0.627, and a floor of 0.72 drops 0 / 0 / 3 of 195 / 205 / 245 hits
# (all three correct): the lowest round value that stops that example, at little cost.
MIN_TOP1_COSINE = 0.72

RULE_CALIBRATED = "calibrated"
RULE_COSINE = "cosine"


@dataclass(frozen=True, slots=True)
class Decision:
    group: int  # index of the best entry in the caller's group list
    row: int  # index of the nearest phrasing of that entry in the caller's row list
    confidence: float
    features: np.ndarray  # [5] float64: top1, margin, group_mean, group_mean_margin, vote


def servable(decision: Decision, min_confidence: float, demoted: bool) -> bool:
    """True when the decision's entry may be served: confident enough, and near enough."""
    if float(decision.features[0]) < MIN_TOP1_COSINE:
        return False
    return decision.confidence >= required_confidence(min_confidence, demoted)


def required_confidence(min_confidence: float, demoted: bool) -> float:
    """The threshold an entry must clear; demoted entries need more."""
    if not demoted:
        return min_confidence
    return min_confidence + (1.0 - min_confidence) * DEMOTION_SHARE


def compute_features(
    sims: np.ndarray, row_groups: np.ndarray, group_rows: list[np.ndarray]
) -> tuple[int, int, np.ndarray]:
    """Features of the best entry for one question.

    sims: [R] cosine of the question to every phrasing row; row_groups: [R] entry index per row;
    group_rows: per entry, the indices of its rows. Returns (best group, best row, features).
    """
    n = sims.shape[0]
    take = min(TOP_N, n)
    top = np.argpartition(-sims, take - 1)[:take] if n > take else np.arange(n)
    top = top[np.argsort(-sims[top], kind="stable")]
    best_row = int(top[0])
    best_group = int(row_groups[best_row])
    top1 = float(sims[best_row])

    top_groups = row_groups[top]
    others = top[top_groups != best_group]
    if others.size:
        second = float(sims[others[0]])
    elif n > take:
        second = float(sims[top[-1]])  # every competitor is below the last examined row
    else:
        second = NO_COMPETITOR_SIM
    group_mean = float(sims[group_rows[best_group]].mean())
    other_groups = {int(g) for g in top_groups} - {best_group}
    if other_groups:
        second_mean = max(float(sims[group_rows[g]].mean()) for g in other_groups)
    else:
        second_mean = min(second, NO_COMPETITOR_SIM)

    k = min(VOTE_K, take)
    weights = np.exp((sims[top[:k]] - top1) / VOTE_TEMPERATURE)
    vote = float(weights[top_groups[:k] == best_group].sum() / weights.sum())
    features = np.array(
        [top1, top1 - second, group_mean, group_mean - second_mean, vote], dtype=np.float64
    )
    return best_group, best_row, features


def calibrated_confidence(features: np.ndarray) -> float:
    logit = float(features @ CALIBRATED_WEIGHTS) + CALIBRATED_BIAS
    return float(1.0 / (1.0 + np.exp(-logit)))


def decide(
    sims: np.ndarray, row_groups: np.ndarray, group_rows: list[np.ndarray], rule: str
) -> Decision:
    """The best entry and the confidence that it answers the question.

    `rule` is RULE_CALIBRATED (shipped) or RULE_COSINE (the plain top-1 cosine baseline).
    Precondition: at least one row.
    """
    group, row, features = compute_features(sims, row_groups, group_rows)
    if rule == RULE_COSINE:
        return Decision(group, row, float(features[0]), features)
    if rule != RULE_CALIBRATED:
        raise ValueError(f"unknown decision rule {rule!r}")
    return Decision(group, row, calibrated_confidence(features), features)
