"""Fixtures for the inference tests: the offline models, built once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from celery import Celery


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inference.build_model import build

    return build(tmp_path_factory.mktemp("models") / "tiny-deepseek")


@pytest.fixture(scope="session")
def tiny_moe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inference.build_model import build

    return build(tmp_path_factory.mktemp("models") / "tiny-deepseek-v2", arch="deepseek_v2")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inference.build_model import build

    return build(tmp_path_factory.mktemp("models") / "tiny-qwen2", arch="qwen2")


# For the modules that run real workers: each defines `url`, its own Redis database.
@pytest.fixture(scope="module")
def client(url: str) -> Celery:
    """A Celery client that sends tasks to the module's workers."""
    return Celery("inference-tests", broker=url)


@pytest.fixture(scope="module")
def redis(url: str) -> redis_lib.Redis:
    """A Redis client on the module's database."""
    return redis_lib.Redis.from_url(url)
