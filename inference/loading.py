"""Load the chat model and tokenizer named by the settings, quantized as configured.

`CHAT_MODEL` is a hub id or a local checkpoint folder; empty means the offline model in
`var/models/tiny-deepseek`, built on demand. `QUANTIZATION` picks a torchao format via
transformers' `TorchAoConfig`; when unset, a default per device class (`default_quantization`:
int8 weight-only on CPU, FP8 with dynamic activation quantization on GPUs with FP8 tensor
cores, bf16 on other GPUs; the worker logs the mode, the device and why). `INFERENCE_DEVICE`
is any torch device string (`cpu`, `cuda`, `cuda:1`); unset means the first GPU if any. Real
checkpoints and the offline model go through the same `from_pretrained` call: nothing here
knows which one it is loading.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from inference.envvars import EnvSettingError, positive_int

logger = logging.getLogger(__name__)

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
    NONE = "none"  # bf16 on a GPU, fp32 on CPU
    INT8 = "int8"  # weight-only int8: runs on CPU and GPU; the CPU default
    INT4 = "int4"  # weight-only int4 (tinygemm tile layout): CUDA only
    FP8 = "fp8"  # weight-only float8 e4m3: native on Hopper; emulated (slow but correct) on CPU
    # Weights and activations both quantized (activations per token at run time), so the
    # matmuls run on int8 / FP8 tensor cores instead of dequantizing weights to bf16 first.
    INT8_DYNAMIC = "int8-dynamic"
    FP8_DYNAMIC = "fp8-dynamic"  # CUDA compute capability 8.9+ (Ada, Hopper)


DEFAULT_QUANTIZATION = Quantization.INT8  # CPU
# FP8 tensor cores (torch._scaled_mm): Ada (8.9) and Hopper (9.0) on.
FP8_MIN_CAPABILITY = (8, 9)


def default_quantization(
    device_kind: str, capability: tuple[int, int] | None
) -> tuple[Quantization, str]:
    """The default mode for a device class, and why (logged at start).

    CPU: int8 weight-only (docs/benchmarks.md, CPU quantization table). GPUs with FP8 tensor
    cores: FP8 weights and dynamically quantized FP8 activations, which halves the weight
    bytes a decode step reads (decode is bound by memory bandwidth) and runs the matmuls on
    FP8 tensor cores; weight-only int8/fp8 dequantize every weight to bf16 on each matmul in
    eager mode, which spends what they save. Other GPUs: bf16. The GPU choices follow
    torchao's published figures until `python -m inference.benchmark_gpu` has measured them
    on the H200 (its JSON names the fastest mode that keeps the logits right).
    """
    if device_kind != "cuda":
        return DEFAULT_QUANTIZATION, "CPU default: int8 weight-only"
    if capability is not None and capability >= FP8_MIN_CAPABILITY:
        return (
            Quantization.FP8_DYNAMIC,
            f"GPU with FP8 tensor cores (sm{capability[0]}{capability[1]})",
        )
    return Quantization.NONE, "GPU without FP8 tensor cores (or capability unknown): bf16"


def cuda_capability(device: str) -> tuple[int, int] | None:
    """(major, minor) compute capability of a CUDA device, or None when none is visible."""
    import torch

    if not torch.cuda.is_available():
        return None
    return tuple(torch.cuda.get_device_capability(torch.device(device)))  # type: ignore[return-value]


class ModelSettingsError(EnvSettingError):
    """A model setting names something that cannot run here; the message names the setting."""


@dataclass(frozen=True)
class ModelSettings:
    model: str  # hub id or local folder
    quantization: Quantization
    device: str  # a torch device string: "cpu", "cuda", "cuda:1"
    threads: int = 1  # torch intra-op threads (CPU inference)
    quantization_reason: str = "set by QUANTIZATION"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> ModelSettings:
        env = dict(os.environ) if env is None else env
        device = (env.get("INFERENCE_DEVICE") or "").strip() or _default_device()
        kind = device_type(device)  # refuses a string torch cannot read, naming the setting
        raw_quant = (env.get("QUANTIZATION") or "").strip().lower()
        reason = "set by QUANTIZATION"
        if not raw_quant:
            capability = cuda_capability(device) if kind == "cuda" else None
            quantization, reason = default_quantization(kind, capability)
            raw_quant = quantization.value
        try:
            quantization = Quantization(raw_quant)
        except ValueError:
            choices = ", ".join(q.value for q in Quantization)
            raise ModelSettingsError(
                f"QUANTIZATION={raw_quant!r} is not one of: {choices}"
            ) from None
        model = (env.get("CHAT_MODEL") or "").strip() or str(DEFAULT_MODEL_DIR)
        return cls(
            model=model,
            quantization=quantization,
            device=device,
            threads=cpu_threads(env),
            quantization_reason=reason,
        )

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


def ao_config(quantization: Quantization, device: str) -> Any | None:
    """The torchao config object of a mode, or None for `none`.

    Raises ModelSettingsError (naming QUANTIZATION) when the mode cannot run on `device`,
    rather than loading something slower or different from what was asked for.
    """
    if quantization is Quantization.NONE:
        return None
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Float8WeightOnlyConfig,
        Int4WeightOnlyConfig,
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
        PerRow,
    )

    on_cuda = device_type(device) == "cuda"
    if quantization is Quantization.INT8:
        return Int8WeightOnlyConfig()
    if quantization is Quantization.INT8_DYNAMIC:
        return Int8DynamicActivationInt8WeightConfig()
    if quantization is Quantization.INT4:
        if not on_cuda:
            raise ModelSettingsError(
                "QUANTIZATION=int4 needs a CUDA GPU (torchao's int4 weight-only kernels have no "
                f"CPU implementation in this build); this worker runs on {device!r}: use int8"
            )
        # The tile-packed layout runs on torch's own tinygemm kernel (no extra package needed).
        return Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d")
    if quantization is Quantization.FP8_DYNAMIC:
        capability = cuda_capability(device) if on_cuda else None
        if not on_cuda or (capability is not None and capability < FP8_MIN_CAPABILITY):
            raise ModelSettingsError(
                "QUANTIZATION=fp8-dynamic needs a CUDA GPU with FP8 tensor cores (compute "
                f"capability 8.9+, e.g. H100/H200/L4); this worker runs on {device!r}: use "
                "int8 on CPU or none (bf16) on older GPUs"
            )
        # One scale per weight row and per activation token: the accurate FP8 recipe.
        return Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())
    return Float8WeightOnlyConfig()


def torchao_config(quantization: Quantization, device: str) -> Any | None:
    """transformers' TorchAoConfig for a mode, or None for `none` (see `ao_config`)."""
    config = ao_config(quantization, device)
    if config is None:
        return None
    from transformers import TorchAoConfig

    return TorchAoConfig(config)


def attention_implementation(device: str) -> tuple[str, str]:
    """The fastest attention kernel installed here, and why; nothing is ever downloaded.

    Continuous batching runs attention over the whole batch's variable-length sequences:
    flash-attention's varlen kernels do that per sequence, while SDPA needs one block mask
    over every token of the batch (cost growing with the batch squared). FA3 is Hopper's;
    FA2 runs on Ampere on. Without either package, SDPA (always available).
    """
    import importlib.util

    import torch

    if device_type(device) != "cuda" or not torch.cuda.is_available():
        return "sdpa", "CPU: SDPA"
    capability = cuda_capability(device) or (0, 0)
    if capability >= (9, 0) and importlib.util.find_spec("flash_attn_interface") is not None:
        return "flash_attention_3", "flash-attn 3 installed, Hopper GPU"
    if capability >= (8, 0) and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2", "flash-attn 2 installed"
    return "sdpa", "no flash-attention package installed: SDPA"


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
    attention, attention_reason = attention_implementation(settings.device)
    logger.info(
        "quantization %s (%s); attention %s (%s)",
        settings.quantization.value,
        settings.quantization_reason,
        attention,
        attention_reason,
    )
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
        attn_implementation=attention,
    )
    model.eval()
    return model, tokenizer
