"""Load the chat model and tokenizer named by the settings, quantized as configured.

`CHAT_MODEL` is a hub id or a local checkpoint folder; empty means the offline model in
`var/models/tiny-deepseek`, built on demand. `QUANTIZATION` picks a torchao weight format via
transformers' `TorchAoConfig`; `int8` when unset, on every device (the documented default;
the worker logs the effective mode and device at start). `INFERENCE_DEVICE` is any torch
device string (`cpu`, `cuda`, `cuda:1`); unset means the first GPU if there is one. Real
checkpoints and the offline model go through the same `from_pretrained` call: nothing here
knows which one it is loading.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from inference.envvars import EnvSettingError, positive_int

# Anchored at the repository root so the worker finds it whatever its working directory.
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "var" / "models" / "tiny-deepseek"


def cpu_threads(env: dict[str, str]) -> int:
    """Intra-op threads for CPU inference (`INFERENCE_TORCH_THREADS`).

    Default: all cores but one. The worker shares its box with the web process, Redis and the
    CPU-queue worker; when torch's thread pool claims every core, its threads spin-wait on
    each other whenever one is descheduled: measured on this 2-core machine under load, a
    250-token prefill took 3.2 s with 2 threads and 0.3 s with 1.
    """
    return positive_int(env, "INFERENCE_TORCH_THREADS", max(1, (os.cpu_count() or 2) - 1))


class Quantization(StrEnum):
    NONE = "none"
    INT8 = "int8"  # weight-only int8: runs on CPU and GPU; the default
    INT4 = "int4"  # weight-only int4 (tinygemm tile layout): CUDA only
    FP8 = "fp8"  # weight-only float8 e4m3: native on Hopper; emulated (slow but correct) on CPU


DEFAULT_QUANTIZATION = Quantization.INT8


class ModelSettingsError(EnvSettingError):
    """A model setting names something that cannot run here; the message names the setting."""


@dataclass(frozen=True)
class ModelSettings:
    model: str  # hub id or local folder
    quantization: Quantization
    device: str  # a torch device string: "cpu", "cuda", "cuda:1"
    threads: int = 1  # torch intra-op threads (CPU inference)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ModelSettings:
        env = dict(os.environ) if env is None else env
        device = (env.get("INFERENCE_DEVICE") or "").strip() or _default_device()
        device_type(device)  # refuses a device string torch cannot read, naming the setting
        raw_quant = (env.get("QUANTIZATION") or DEFAULT_QUANTIZATION).strip().lower()
        try:
            quantization = Quantization(raw_quant)
        except ValueError:
            choices = ", ".join(q.value for q in Quantization)
            raise ModelSettingsError(
                f"QUANTIZATION={raw_quant!r} is not one of: {choices}"
            ) from None
        model = (env.get("CHAT_MODEL") or "").strip() or str(DEFAULT_MODEL_DIR)
        return cls(model=model, quantization=quantization, device=device, threads=cpu_threads(env))

    @property
    def on_cuda(self) -> bool:
        return device_type(self.device) == "cuda"


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_type(device: str) -> str:
    """ "cpu", "cuda", ... for a torch device string ("cuda:0" is a CUDA device)."""
    import torch

    try:
        return torch.device(device).type
    except (RuntimeError, ValueError):
        raise ModelSettingsError(
            f"INFERENCE_DEVICE={device!r} is not a torch device (e.g. cpu, cuda, cuda:1)"
        ) from None


def torchao_config(quantization: Quantization, device: str) -> Any | None:
    """transformers' TorchAoConfig for a mode, or None for `none`.

    Raises ModelSettingsError (naming QUANTIZATION) when the mode cannot run on `device`,
    rather than loading something slower or different from what was asked for.
    """
    if quantization is Quantization.NONE:
        return None
    from torchao.quantization import (
        Float8WeightOnlyConfig,
        Int4WeightOnlyConfig,
        Int8WeightOnlyConfig,
    )
    from transformers import TorchAoConfig

    if quantization is Quantization.INT8:
        return TorchAoConfig(Int8WeightOnlyConfig())
    if quantization is Quantization.INT4:
        if device_type(device) != "cuda":
            raise ModelSettingsError(
                "QUANTIZATION=int4 needs a CUDA GPU (torchao's int4 weight-only kernels have no "
                f"CPU implementation in this build); this worker runs on {device!r}: use int8"
            )
        # The tile-packed layout runs on torch's own tinygemm kernel (no extra package needed).
        return TorchAoConfig(
            Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d")
        )
    return TorchAoConfig(Float8WeightOnlyConfig())


def resolve_model_path(model: str) -> str:
    """The folder or hub id to load; builds the offline model when the default is missing."""
    if Path(model).resolve() == DEFAULT_MODEL_DIR:
        from inference.build_model import build

        return str(build(DEFAULT_MODEL_DIR))
    return model


def load_model_and_tokenizer(settings: ModelSettings) -> tuple[Any, Any]:
    """(model in eval mode on its device, tokenizer) for the settings."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not settings.on_cuda:
        torch.set_num_threads(settings.threads)
    path = resolve_model_path(settings.model)
    quant_config = torchao_config(settings.quantization, settings.device)
    # bf16 on GPU (what DeepSeek ships); fp32 on CPU, where bf16 matmuls are slower.
    dtype = torch.bfloat16 if settings.on_cuda else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(
        path,
        dtype=dtype,
        # CPU is transformers' default placement; on a GPU the weights load straight onto it
        # (a device map, through `accelerate`) instead of through host memory.
        device_map=settings.device if settings.on_cuda else None,
        quantization_config=quant_config,
        attn_implementation="sdpa",
    )
    model.eval()
    return model, tokenizer
