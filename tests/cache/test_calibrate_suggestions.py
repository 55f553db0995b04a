"""The suggestion floor's calibration command on a tiny labelled set (training split only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cache import calibrate_suggestions
from tests.cache.conftest import ONNX_CACHE
from tests.cache.test_evaluate import write_csv

pytestmark = pytest.mark.slow  # loads the embedding model (once per session)

QUESTIONS = {
    "delivery_time": [
        "How long does delivery take?", "When will my parcel arrive?",
        "How many days until my order is delivered?", "How long is the delivery time?",
        "When does my order get delivered?", "How long will shipping take?",
    ],
    "returns": [
        "How do I return an item?", "Can I send back something I bought?",
        "What is your returns process?", "How can I get a refund for an item?",
        "I want to return my order", "Where do I send returns?",
    ],
    "password": [
        "How do I reset my password?", "I forgot my password", "Can't log in, new password",
        "My password does not work", "Change my password please", "Password reset link?",
    ],
}  # fmt: skip


def test_it_prints_the_floor_curve_and_picks_a_floor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [(text, category) for category, texts in QUESTIONS.items() for text in texts]
    train = write_csv(tmp_path / "train.csv", rows)
    argv = [
        "--train", str(train), "--seeds", "100", "--variants", "3", "--unknown-intents", "1",
        "--onnx-cache", str(ONNX_CACHE),
    ]  # fmt: skip
    assert calibrate_suggestions.main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads(printed.strip().splitlines()[-1])
    # the curve: one row per floor, recall and shown-on-unknown falling as the floor rises
    assert "floor  K=3: recall@3 / shown on unknown" in printed
    assert " 0.00  1.0000 / 1.0000" in printed  # with 2 FAQs, the right one is always shown
    assert result["max_recall_cost"] == 0.01
    assert result["floor"] in [0.0, *calibrate_suggestions.FLOOR_GRID]
