"""Unit tests of the decision rule on hand-made similarity vectors."""

from __future__ import annotations

import numpy as np

from cache.decision import (
    RULE_COSINE,
    SHIPPED_MIN_CONFIDENCE,
    calibrated_confidence,
    compute_features,
    decide,
    required_confidence,
)

# Two entries with three phrasings each: rows 0-2 -> entry 0, rows 3-5 -> entry 1.
GROUPS = np.array([0, 0, 0, 1, 1, 1])
GROUP_ROWS = [np.array([0, 1, 2]), np.array([3, 4, 5])]


def test_clear_winner_is_confident() -> None:
    sims = np.array([0.93, 0.88, 0.86, 0.35, 0.30, 0.28])
    decision = decide(sims, GROUPS, GROUP_ROWS, "calibrated")
    assert decision.group == 0 and decision.row == 0
    assert decision.confidence >= SHIPPED_MIN_CONFIDENCE


def test_ambiguous_question_is_not_confident_however_similar() -> None:
    # As close to entry 1 as to entry 0: a single cosine threshold would serve it.
    sims = np.array([0.91, 0.70, 0.68, 0.90, 0.72, 0.69])
    decision = decide(sims, GROUPS, GROUP_ROWS, "calibrated")
    assert decision.features[1] < 0.02  # margin
    assert decision.confidence < SHIPPED_MIN_CONFIDENCE
    assert decide(sims, GROUPS, GROUP_ROWS, RULE_COSINE).confidence > 0.9


def test_confidence_grows_with_margin() -> None:
    base = np.array([0.85, 0.80, 0.78, 0.60, 0.55, 0.50])
    wider = base.copy()
    wider[3:] -= 0.2
    assert (
        decide(wider, GROUPS, GROUP_ROWS, "calibrated").confidence
        > decide(base, GROUPS, GROUP_ROWS, "calibrated").confidence
    )


def test_features_of_a_single_entry_site() -> None:
    sims = np.array([0.9, 0.8])
    _, _, features = compute_features(sims, np.array([0, 0]), [np.array([0, 1])])
    top1, margin, mean, mean_margin, vote = features
    assert top1 == 0.9 and vote == 1.0
    assert np.isclose(mean, 0.85)
    assert margin > 0 and mean_margin > 0


def test_unrelated_question_is_not_confident() -> None:
    sims = np.array([0.32, 0.30, 0.25, 0.31, 0.28, 0.22])
    assert decide(sims, GROUPS, GROUP_ROWS, "calibrated").confidence < 0.1


def test_calibrated_confidence_is_a_probability() -> None:
    for features in (np.zeros(5), np.ones(5), np.full(5, -1.0)):
        assert 0.0 <= calibrated_confidence(features) <= 1.0


def test_demoted_entries_need_more_confidence() -> None:
    assert required_confidence(0.9, demoted=False) == 0.9
    assert 0.9 < required_confidence(0.9, demoted=True) < 1.0
