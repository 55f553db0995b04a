"""The worker's environment settings: defaults, and bad values refused with the variable named."""

from __future__ import annotations

import pytest

from inference.envvars import EnvSettingError, positive_float, positive_int
from inference.service import STALE_AFTER_S
from inference.worker import (
    DEFAULT_VISIBILITY_TIMEOUT_S,
    redelivery_within_s,
    visibility_timeout_from_env,
)


def test_default_visibility_timeout_redelivers_a_dead_workers_task_before_it_is_stale() -> None:
    # the chat layer's answer timeout is 60 s: the model needs time left to answer within it
    assert redelivery_within_s(DEFAULT_VISIBILITY_TIMEOUT_S) <= 30 < STALE_AFTER_S
    assert visibility_timeout_from_env({}) == DEFAULT_VISIBILITY_TIMEOUT_S
    assert visibility_timeout_from_env({"INFERENCE_VISIBILITY_TIMEOUT": "4"}) == 4


def test_visibility_timeout_past_staleness_is_refused_with_the_variable_named() -> None:
    with pytest.raises(EnvSettingError, match="INFERENCE_VISIBILITY_TIMEOUT=3600.*stale"):
        visibility_timeout_from_env({"INFERENCE_VISIBILITY_TIMEOUT": "3600"})


@pytest.mark.parametrize("raw", ["0", "-4", "abc", "2.5"])
def test_positive_int_refuses_bad_values_naming_the_variable(raw: str) -> None:
    with pytest.raises(EnvSettingError, match=f"^INFERENCE_X={raw!r}"):
        positive_int({"INFERENCE_X": raw}, "INFERENCE_X", 3)


def test_positive_int_reads_values_and_defaults_when_unset_or_blank() -> None:
    assert positive_int({"INFERENCE_X": " 7 "}, "INFERENCE_X", 3) == 7
    assert positive_int({}, "INFERENCE_X", 3) == 3
    assert positive_int({"INFERENCE_X": " "}, "INFERENCE_X", 3) == 3


@pytest.mark.parametrize("raw", ["0", "-2", "nan", "inf", "cheap"])
def test_positive_float_refuses_bad_values_naming_the_variable(raw: str) -> None:
    with pytest.raises(EnvSettingError, match=f"^COST={raw!r}"):
        positive_float({"COST": raw}, "COST", 1.0)


def test_positive_float_reads_values() -> None:
    assert positive_float({"COST": "2.5"}, "COST", 1.0) == 2.5
    assert positive_float({}, "COST", 1.0) == 1.0
