"""The evaluation command end to end on a tiny labelled set, against the real Redis."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from cache import evaluate
from tests.cache.conftest import ONNX_CACHE

TRAIN = [
    ("How long does delivery take?", "delivery_time"),
    ("When will my parcel arrive?", "delivery_time"),
    ("How many days until my order is delivered?", "delivery_time"),
    # More delivery questions than the FAQ takes (K=3), so that most of the 10 nearest
    # training questions of a delivery question are labelled delivery_time.
    ("How long is the delivery time?", "delivery_time"),
    ("When does my order get delivered?", "delivery_time"),
    ("How long will shipping take?", "delivery_time"),
    ("How quickly do orders arrive?", "delivery_time"),
    ("How long until my package arrives?", "delivery_time"),
    ("How do I return an item?", "returns"),
    ("Can I send back something I bought?", "returns"),
    ("What is your returns process?", "returns"),
    ("Do you ship internationally?", "international"),
    ("Can you deliver abroad?", "international"),
    ("Do you send orders to other countries?", "international"),
]
TEST = [
    ("How long does the delivery take?", "delivery_time"),  # right hit
    ("What is the process for returns?", "returns"),  # right hit
    # Labelled "returns" but worded like the delivery FAQ: the cache serves delivery_time,
    # which the metric counts wrong and the training labels side with.
    ("How long does delivery take?", "returns"),
    ("What colour is the sky?", "international"),  # unrelated: a miss
]


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "category"])
        writer.writerows(rows)
    return path


def test_evaluate_reports_precision_and_audits_wrong_hits(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    train = write_csv(tmp_path / "train.csv", TRAIN)
    test = write_csv(tmp_path / "test.csv", TEST)
    argv = [
        "--train", str(train), "--test", str(test), "--variants", "3", "--unknown-intents",
        "0", "--seed", "0", "--threshold", "0.5", "--redis-url", redis_url,
        "--onnx-cache", str(ONNX_CACHE), "--audit",
    ]  # fmt: skip
    assert evaluate.main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads(printed.strip().splitlines()[-1])

    assert result["hits"] == 3
    assert result["precision"] == pytest.approx(2 / 3)
    assert result["hit_rate"] == pytest.approx(3 / 4)
    assert result["wrong_hits_agreeing_with_training_labels"] == 1
    assert {"unknown_false_hit_rate", "lookup_p50_ms", "lookup_p99_ms"} <= result.keys()
    # "did you mean": the one miss (unrelated to every FAQ) is under the floor, so it gets no
    # suggestion, while plain top-3 (3 FAQs in all) would have listed its FAQ
    assert result["plain_top3_recall"] == 1.0
    assert result["suggestion_recall_at_3"] == 0.0
    assert result["resolved_with_one_click"] == pytest.approx(2 / 4)
    assert result["suggestions_shown_on_unknown"] == 0.0
    assert result["suggestion_floor"] == 0.4
    assert "            0.00       1.0000" in printed  # the floor curve: no floor, recall 1
    assert "wrong hits: 1" in printed
    assert "'How long does delivery take?' [returns] served delivery_time" in printed
    assert "training labels agree with the answer served" in printed
