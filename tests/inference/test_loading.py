"""Loading the offline model through `from_pretrained`, and each quantization mode on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.build_model import build
from inference.loading import (
    DEFAULT_MODEL_DIR,
    ModelSettings,
    ModelSettingsError,
    Quantization,
    load_model_and_tokenizer,
)

pytestmark = pytest.mark.slow

# Relative L2 error of the logits against the unquantized model, measured on the offline
# model: int8 ~0.02, fp8 (e4m3, 3 mantissa bits) ~0.07. The bounds leave 2.5x headroom and
# still catch a mode that silently did nothing useful or broke the weights.
MAX_RELATIVE_LOGIT_ERROR = {
    Quantization.INT8: 0.05,
    Quantization.INT8_DYNAMIC: 0.08,
    Quantization.FP8: 0.18,
}


def settings_for(model_dir: Path, quantization: str) -> ModelSettings:
    env = {"CHAT_MODEL": str(model_dir), "QUANTIZATION": quantization, "INFERENCE_DEVICE": "cpu"}
    return ModelSettings.from_env(env)


@pytest.fixture(scope="module")
def reference_logits(tiny_model_dir: Path):
    import torch

    model, tokenizer = load_model_and_tokenizer(settings_for(tiny_model_dir, "none"))
    ids = tokenizer("Where is my order? I need a refund for the damaged item.", return_tensors="pt")
    with torch.inference_mode():
        return ids["input_ids"], model(**ids).logits


def test_offline_model_loads_from_disk_as_a_deepseek_llama(tiny_model_dir: Path) -> None:
    model, tokenizer = load_model_and_tokenizer(settings_for(tiny_model_dir, "none"))
    assert model.config.model_type == "llama"
    assert model.config.rope_parameters["rope_theta"] == 10000.0
    assert "Assistant:" in tokenizer.chat_template
    assert tokenizer.eos_token == "<｜end▁of▁sentence｜>"
    # every byte is encodable (byte-level BPE): unseen scripts round-trip
    assert tokenizer.decode(tokenizer("naïve 日本 🙂")["input_ids"]) == "naïve 日本 🙂"


def test_building_twice_leaves_the_model_untouched(tiny_model_dir: Path) -> None:
    weights = next(tiny_model_dir.glob("*.safetensors"))
    before = weights.stat().st_mtime_ns
    build(tiny_model_dir)
    assert weights.stat().st_mtime_ns == before


@pytest.mark.parametrize("mode", [Quantization.INT8, Quantization.INT8_DYNAMIC, Quantization.FP8])
def test_quantized_modes_run_on_cpu_close_to_the_unquantized_model(
    tiny_model_dir: Path, reference_logits, mode: Quantization
) -> None:
    import torch

    input_ids, reference = reference_logits
    model, _ = load_model_and_tokenizer(settings_for(tiny_model_dir, mode.value))
    weight = model.model.layers[0].mlp.up_proj.weight
    assert type(weight) is not torch.nn.Parameter and type(weight) is not torch.Tensor
    with torch.inference_mode():
        logits = model(input_ids=input_ids).logits
    relative_error = ((logits.float() - reference).norm() / reference.norm()).item()
    assert 0 < relative_error < MAX_RELATIVE_LOGIT_ERROR[mode]


def test_int4_on_cpu_fails_with_a_message_naming_the_setting(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelSettingsError, match="QUANTIZATION=int4"):
        load_model_and_tokenizer(settings_for(tiny_model_dir, "int4"))


def test_unknown_quantization_is_rejected() -> None:
    with pytest.raises(ModelSettingsError, match="QUANTIZATION='int3'"):
        ModelSettings.from_env({"QUANTIZATION": "int3", "INFERENCE_DEVICE": "cpu"})


def test_defaults_are_the_offline_model_and_int8_on_cpu() -> None:
    settings = ModelSettings.from_env({"CHAT_MODEL": "", "INFERENCE_DEVICE": "cpu"})
    assert Path(settings.model) == DEFAULT_MODEL_DIR
    assert settings.quantization is Quantization.INT8
