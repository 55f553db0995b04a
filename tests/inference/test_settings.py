"""The worker's environment settings: defaults, and bad values refused with the variable named."""

from __future__ import annotations

import pytest

from inference.engine import EngineLimits
from inference.envvars import EnvSettingError, positive_float, positive_int
from inference.loading import (
    ModelSettings,
    ModelSettingsError,
    Quantization,
    default_quantization,
    torchao_config,
)
from inference.runtime import limits_from_env
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


def model_settings(**env: str) -> ModelSettings:
    return ModelSettings.from_env({"CHAT_MODEL": "/models/x", **env})


def test_quantization_defaults_to_int8_on_cpu_and_says_why() -> None:
    settings = model_settings(INFERENCE_DEVICE="cpu")
    assert settings.quantization is Quantization.INT8
    assert "CPU" in settings.quantization_reason


@pytest.mark.parametrize(
    ("kind", "capability", "expected"),
    [
        ("cpu", None, Quantization.INT8),
        ("cuda", (9, 0), Quantization.FP8_DYNAMIC),  # H100 / H200
        ("cuda", (8, 9), Quantization.FP8_DYNAMIC),  # L4 / L40
        ("cuda", (8, 0), Quantization.NONE),  # A100: no FP8 tensor cores
        ("cuda", None, Quantization.NONE),  # capability unknown: the safe choice
    ],
)
def test_default_quantization_per_device_class(
    kind: str, capability: tuple[int, int] | None, expected: Quantization
) -> None:
    mode, reason = default_quantization(kind, capability)
    assert mode is expected
    assert reason


def test_an_explicit_quantization_wins_over_the_device_default() -> None:
    settings = model_settings(INFERENCE_DEVICE="cuda", QUANTIZATION="int8")
    assert settings.quantization is Quantization.INT8
    assert settings.quantization_reason == "set by QUANTIZATION"


def test_fp8_dynamic_is_refused_on_cpu_naming_the_setting() -> None:
    with pytest.raises(ModelSettingsError, match="QUANTIZATION=fp8-dynamic"):
        torchao_config(Quantization.FP8_DYNAMIC, "cpu")


@pytest.mark.parametrize(
    ("device", "on_cuda"), [("cpu", False), ("cuda", True), ("cuda:0", True), ("cuda:1", True)]
)
def test_a_numbered_cuda_device_is_a_cuda_device(device: str, on_cuda: bool) -> None:
    assert model_settings(INFERENCE_DEVICE=device).on_cuda is on_cuda


def test_int4_is_accepted_on_a_numbered_cuda_device_and_refused_on_cpu() -> None:
    assert torchao_config(Quantization.INT4, "cuda:0") is not None
    with pytest.raises(ModelSettingsError, match="QUANTIZATION=int4"):
        torchao_config(Quantization.INT4, "cpu")


def test_unreadable_device_is_refused_naming_the_setting() -> None:
    with pytest.raises(ModelSettingsError, match="INFERENCE_DEVICE='gpu0'"):
        model_settings(INFERENCE_DEVICE="gpu0")


@pytest.mark.parametrize("raw", ["-4", "0", "four"])
def test_bad_torch_threads_are_refused_not_clamped(raw: str) -> None:
    with pytest.raises(EnvSettingError, match=f"INFERENCE_TORCH_THREADS={raw!r}"):
        model_settings(INFERENCE_DEVICE="cpu", INFERENCE_TORCH_THREADS=raw)
    assert model_settings(INFERENCE_DEVICE="cpu", INFERENCE_TORCH_THREADS="3").threads == 3


@pytest.mark.parametrize(
    "name", ["INFERENCE_MAX_RUNNING", "INFERENCE_MAX_NEW_TOKENS", "INFERENCE_MAX_PROMPT_TOKENS"]
)
@pytest.mark.parametrize("raw", ["0", "-1", "many"])
def test_engine_limits_from_env_refuse_bad_values_naming_the_variable(name: str, raw: str) -> None:
    with pytest.raises(EnvSettingError, match=f"^{name}={raw!r}"):
        limits_from_env({name: raw})


def test_engine_limits_from_env_read_values_and_defaults() -> None:
    limits = limits_from_env({"INFERENCE_MAX_RUNNING": "8", "INFERENCE_MAX_NEW_TOKENS": ""})
    assert limits.max_running == 8
    assert limits.max_new_tokens == EngineLimits().max_new_tokens


@pytest.mark.parametrize(
    "field", ["max_running", "max_waiting", "max_new_tokens", "max_prompt_tokens"]
)
def test_engine_limits_refuse_zero(field: str) -> None:
    # max_running=0 used to reach the scheduler's division by it
    with pytest.raises(ValueError, match=f"EngineLimits.{field}"):
        EngineLimits(**{field: 0})


@pytest.mark.parametrize(
    ("raw", "allowed"), [("", False), ("0", False), ("1", True), ("true", True)]
)
def test_static_batching_needs_an_explicit_setting(raw: str, allowed: bool) -> None:
    from inference.runtime import static_batching_allowed

    assert static_batching_allowed({"INFERENCE_ALLOW_STATIC_BATCHING": raw}) is allowed
    with pytest.raises(EnvSettingError, match="INFERENCE_ALLOW_STATIC_BATCHING='maybe'"):
        static_batching_allowed({"INFERENCE_ALLOW_STATIC_BATCHING": "maybe"})


@pytest.mark.parametrize(("raw", "varlen"), [("", True), ("varlen", True), ("DENSE", False)])
def test_cpu_attention_setting(raw: str, varlen: bool) -> None:
    from inference.runtime import batching_options_from_env

    options = batching_options_from_env({"INFERENCE_CPU_ATTENTION": raw})
    assert options.varlen_attention is varlen
    with pytest.raises(EnvSettingError, match="INFERENCE_CPU_ATTENTION='flash'"):
        batching_options_from_env({"INFERENCE_CPU_ATTENTION": "flash"})
