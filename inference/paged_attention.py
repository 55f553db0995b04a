"""Per-request ("varlen") attention for transformers' continuous batching on CPU.

Why: without a flash-attention kernel (CPU, or a GPU without the package), transformers'
continuous batching runs one SDPA call per layer over the whole step: every query token of
the step against the keys of every request in the batch, with a block-diagonal mask that
throws most of the products away. A step's attention then costs (query tokens in the step)
x (KV of all requests in the batch), so a prompt prefilled while other requests decode pays
for their whole KV too. Measured with the offline model on this 2-core CPU (docs/benchmarks.md,
"per-request attention"): a step with 469 query tokens beside 7 requests' 3,329 KV tokens took
168 ms instead of ~50, and the distinct-question TTFT p99 at 8 arrivals/s was ~315-370 ms.

Here each request's queries attend only to that request's own keys (causal, aligned to the
end of its keys: earlier pages may come from the prefix cache or an earlier prefill chunk),
which is what flash-attention's varlen kernels do on a GPU. Same arithmetic as the dense
path, minus the masked-out products; tested equal to it (tests/inference/test_paged_attention.py).

How it plugs in: transformers looks attention functions up by name in its `AttentionInterface`
(the documented extension point). `install` wraps the function registered under the name the
batching manager runs ("sdpa" from transformers 5.23, "paged|sdpa" in 5.17). The wrapper takes
the per-request path only for a paged cache that `enable` was called for (the CPU engines';
continuous_batching_config is otherwise untouched) and passes every other call, including all
ordinary `generate` calls, to the original function unchanged. Layers it cannot serve exactly
(sliding windows, attention sinks, soft-capping, position bias, dropout) use the original too.

Not used on GPUs: there the manager prefers flash-attention when installed, and a Python loop
per request would defeat CUDA graphs. transformers still fills its block mask for every step
(the name stays "sdpa"); the per-request path ignores it (that preparation took 0.5 ms per step
at the median, 2.5 ms at most, in the distinct-question benchmark).
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# The names under which transformers registers the SDPA function its batching manager calls.
PAGED_SDPA_NAMES = ("sdpa", "paged|sdpa")
# Keyword arguments whose presence means the layer needs more than plain causal attention.
UNSUPPORTED_KWARGS = ("position_bias", "softcap", "s_aux", "sinks")

_lock = threading.Lock()
_originals: dict[str, Callable[..., Any]] = {}
_enabled_caches: weakref.WeakSet[Any] = weakref.WeakSet()


def varlen_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seq_lens_q: list[int],
    cu_seq_lens_k: list[int],
    scaling: float | None,
) -> torch.Tensor:
    """Attention of packed requests, each over its own keys only.

    query (1, heads, total query tokens, dim); key/value (1, heads, total key tokens, dim),
    request i's queries at cu_seq_lens_q[i]:cu_seq_lens_q[i+1] and its keys (cached first,
    then its new tokens) at cu_seq_lens_k[i]:cu_seq_lens_k[i+1]. A request's last query is
    its last key, so query j may see every key up to j + (keys - queries).
    Returns (1, total query tokens, heads, dim), as transformers' attention functions do.
    """
    import torch

    sdpa = torch.nn.functional.scaled_dot_product_attention
    out = torch.empty_like(query)
    for index in range(len(cu_seq_lens_q) - 1):
        q_start, q_end = cu_seq_lens_q[index], cu_seq_lens_q[index + 1]
        k_start, k_end = cu_seq_lens_k[index], cu_seq_lens_k[index + 1]
        q_len, k_len = q_end - q_start, k_end - k_start
        if q_len == 0:
            continue  # a padding entry
        q = query[:, :, q_start:q_end]
        k = key[:, :, k_start:k_end]
        v = value[:, :, k_start:k_end]
        if q_len == 1:  # decoding: the one new token sees all of its request's keys
            result = sdpa(q, k, v, scale=scaling)
        elif q_len == k_len:  # a whole prompt, nothing cached: plain causal
            result = sdpa(q, k, v, scale=scaling, is_causal=True)
        else:  # the rest of a prompt whose first pages are cached (or prefilled earlier)
            visible = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device)
            result = sdpa(q, k, v, attn_mask=visible.tril(k_len - q_len), scale=scaling)
        out[:, :, q_start:q_end] = result
    return out.transpose(1, 2).contiguous()


def _repeat_kv(states: torch.Tensor, groups: int) -> torch.Tensor:
    """(1, kv heads, T, dim) -> (1, kv heads * groups, T, dim) for grouped-query attention."""
    if groups == 1:
        return states
    return states.repeat_interleave(groups, dim=1)


def _as_list(cu_seq_lens: Any) -> list[int] | None:
    return cu_seq_lens.tolist() if hasattr(cu_seq_lens, "tolist") else None


@functools.cache
def _update_takes_kwargs(cache_type: type) -> bool:
    """transformers 5.23's `update(..., kwargs)` (5.17: `update(..., read_index, write_index)`)."""
    return "kwargs" in inspect.signature(cache_type.update).parameters


def _paged_keys_values(
    cache: Any, module: Any, key: torch.Tensor, value: torch.Tensor, kwargs: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Writes this step's keys/values into the paged cache and reads back every scheduled
    request's keys/values, (1, kv heads, T, dim), under either transformers' signature."""
    if _update_takes_kwargs(type(cache)):  # 5.23: also sets this layer's cu_seq_lens_k
        return cache.update(
            key_states=key, value_states=value, layer_idx=module.layer_idx, kwargs=kwargs
        )
    keys, values = cache.update(  # 5.17: (T, kv heads, dim)
        key_states=key,
        value_states=value,
        layer_idx=module.layer_idx,
        read_index=kwargs["read_index"],
        write_index=kwargs["write_index"],
    )
    return keys.transpose(0, 1).unsqueeze(0), values.transpose(0, 1).unsqueeze(0)


def _serves(module: Any, cache: Any, dropout: float, kwargs: dict[str, Any]) -> bool:
    """Whether the per-request path computes exactly what this layer needs."""
    if cache is None or cache not in _enabled_caches or dropout:
        return False
    if kwargs.get("block_table") is not None:  # a fused-kernel decode step
        return False
    if getattr(module, "sliding_window", None) is not None or hasattr(module, "sinks"):
        return False
    if any(kwargs.get(name) is not None for name in UNSUPPORTED_KWARGS):
        return False
    # 5.17 passes per-layer-type key lengths as a dict only for hybrid (sliding) models.
    cu_k = kwargs.get("cu_seq_lens_k")
    hybrid = isinstance(cu_k, dict) and len(cu_k) != 1 and not _update_takes_kwargs(type(cache))
    return hasattr(kwargs.get("cu_seq_lens_q"), "tolist") and not hybrid


def _wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def attention(
        module: Any,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        dropout: float = 0.0,
        scaling: float | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        cache = kwargs.get("cache")
        if not _serves(module, cache, dropout, kwargs):
            return original(
                module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                **kwargs,
            )  # fmt: skip
        kwargs.pop("cache")
        cu_k = kwargs.get("cu_seq_lens_k")
        if isinstance(cu_k, dict) and not _update_takes_kwargs(type(cache)):
            kwargs["cu_seq_lens_k"] = next(iter(cu_k.values()))  # 5.17, one layer type
        keys, values = _paged_keys_values(cache, module, key, value, kwargs)
        cu_q, cu_k = _as_list(kwargs["cu_seq_lens_q"]), _as_list(kwargs["cu_seq_lens_k"])
        if cu_q is None or cu_k is None or cu_k[-1] != keys.shape[2] or cu_q[-1] > query.shape[2]:
            # The cache was already updated, so the dense path cannot be replayed; this means
            # a transformers version laid the batch out differently. Fail loudly.
            raise RuntimeError(
                f"per-request attention ({name}): the batch layout does not match its lengths "
                f"(query {tuple(query.shape)}, keys {tuple(keys.shape)}); set "
                "INFERENCE_CPU_ATTENTION=dense"
            )
        groups = getattr(module, "num_key_value_groups", 1)
        keys, values = _repeat_kv(keys, groups), _repeat_kv(values, groups)
        return varlen_attention(query, keys, values, cu_q, cu_k, scaling), None

    attention.wrapped_name = name  # type: ignore[attr-defined]
    return attention


def install(attn_implementation: str) -> bool:
    """Wrap the attention function registered as `attn_implementation` (once per process).
    False when it is not transformers' SDPA (flash-attention, eager): nothing to gain there."""
    from transformers import AttentionInterface

    if attn_implementation not in PAGED_SDPA_NAMES:
        return False
    with _lock:
        if attn_implementation in _originals:
            return True
        original = AttentionInterface._global_mapping[attn_implementation]
        _originals[attn_implementation] = original
        AttentionInterface.register(attn_implementation, _wrap(attn_implementation, original))
    return True


def enable(cache: Any, attn_implementation: str) -> bool:
    """Per-request attention for the batching manager whose paged cache this is."""
    if not install(attn_implementation):
        return False
    _enabled_caches.add(cache)
    return True
