"""Per-request attention for continuous batching on CPU (inference/paged_attention.py).

The function against the dense block-diagonal SDPA it replaces (decode, fresh prompts, prompts
whose first pages are cached, grouped-query heads), and the real engine: the same greedy
answers with it as with transformers' own batch-wide attention, prefix hits and chunked
prefills included, for a multi-head and a grouped-query model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from inference.benchmark import run_engine
from inference.cb_engine import BatchingOptions, ContinuousBatchingEngine
from inference.engine import EngineLimits
from inference.loading import ModelSettings, load_model_and_tokenizer
from inference.paged_attention import varlen_attention
from inference.prompt import FaqEntry, build_messages, render_prompt
from tests.inference.test_engine import Recorder
from tests.inference.test_engine import request as engine_request


def dense_reference(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_q: list[int],
    cu_k: list[int],
    scaling: float,
) -> torch.Tensor:
    """One SDPA over the whole batch with a block-diagonal, end-aligned causal mask: what
    transformers' continuous batching computes with SDPA."""
    mask = torch.zeros(cu_q[-1], cu_k[-1], dtype=torch.bool)
    for i in range(len(cu_q) - 1):
        q_len, k_len = cu_q[i + 1] - cu_q[i], cu_k[i + 1] - cu_k[i]
        block = torch.ones(q_len, k_len, dtype=torch.bool).tril(k_len - q_len)
        mask[cu_q[i] : cu_q[i + 1], cu_k[i] : cu_k[i + 1]] = block
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, scale=scaling
    )
    return out.transpose(1, 2)


@pytest.mark.parametrize(
    "lengths",
    [
        [(1, 40), (1, 7), (1, 1)],  # decoding only
        [(12, 12), (5, 5)],  # whole prompts, nothing cached
        [(9, 73), (1, 30), (16, 16), (1, 5)],  # cached prefix + decoding + fresh prompt
    ],
)
def test_each_request_attends_to_its_own_keys_as_the_dense_mask_does(
    lengths: list[tuple[int, int]],
) -> None:
    # given packed requests of (query tokens, keys) with random states
    torch.manual_seed(0)
    heads, dim = 4, 16
    cu_q, cu_k = [0], [0]
    for q_len, k_len in lengths:
        cu_q.append(cu_q[-1] + q_len)
        cu_k.append(cu_k[-1] + k_len)
    query = torch.randn(1, heads, cu_q[-1], dim)
    key, value = torch.randn(2, 1, heads, cu_k[-1], dim).unbind(0)
    # when attention runs per request
    out = varlen_attention(query, key, value, cu_q, cu_k, scaling=0.25)
    # then it equals the batch-wide SDPA with the block-diagonal mask
    assert out.shape == (1, cu_q[-1], heads, dim)
    expected = dense_reference(query, key, value, cu_q, cu_k, 0.25)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_padding_entries_without_queries_are_skipped() -> None:
    query = torch.randn(1, 2, 3, 8)
    key, value = torch.randn(2, 1, 2, 10, 8).unbind(0)
    # a padded batch repeats the last cumulative length (an empty request)
    out = varlen_attention(query, key, value, [0, 3, 3], [0, 10, 10], scaling=None)
    expected = dense_reference(query, key, value, [0, 3], [0, 10], 8**-0.5)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


LIMITS = EngineLimits(max_running=8, max_new_tokens=12, max_prompt_tokens=512)
QUESTIONS = [
    "Where is my order?",
    "Can I pay by card?",
    "How do I change my delivery address after ordering?",
    "My parcel arrived damaged, what now?",
    "Do you ship abroad?",
    "How long does a refund take?",
    "Can I cancel my subscription online?",
    "Why was I charged twice?",
    "Is there a student discount?",
]


def site_prompts(tokenizer: Any) -> list[list[int]]:
    """Prompts sharing a site head of several cache pages, each with its own question."""
    head = [FaqEntry(f"Question {i}?", f"Answer number {i}. " * 4, f"{i}:1") for i in range(8)]
    return [
        render_prompt(tokenizer, build_messages("RULES", [], [], q, site_faqs=head), 512)
        for q in QUESTIONS
    ]


def greedy_answers(model_dir: Path, varlen: bool) -> tuple[list[str], str]:
    """The engine's answers to a burst of site questions, and the attention it reported."""
    env = {"CHAT_MODEL": str(model_dir), "QUANTIZATION": "none", "INFERENCE_DEVICE": "cpu"}
    model, tokenizer = load_model_and_tokenizer(ModelSettings.from_env(env))
    prompts = site_prompts(tokenizer)
    engine = ContinuousBatchingEngine(
        model, tokenizer, LIMITS, BatchingOptions(varlen_attention=varlen)
    )
    try:
        run_engine(engine, [0.0], prompts[:1], 12)  # the site head enters the prefix cache
        # A burst: prompts prefill beside others decoding, in chunks (a step holds at most
        # 512 tokens), with the head's pages served from the cache.
        tickets = [
            engine.submit(engine_request(f"m{index}", max_new_tokens=12), prompt_ids, Recorder())
            for index, prompt_ids in enumerate(prompts[1:])
        ]
        for ticket in tickets:
            assert ticket.done.wait(60)
        assert engine.prefix_hit_share and engine.prefix_hit_share > 0.3
        return [ticket.result.text for ticket in tickets], engine.attention
    finally:
        engine.close()


@pytest.mark.slow
@pytest.mark.parametrize("model_fixture", ["tiny_model_dir", "tiny_qwen2_dir"])
def test_engine_answers_the_same_with_per_request_attention(
    model_fixture: str, request: pytest.FixtureRequest
) -> None:
    model_dir = request.getfixturevalue(model_fixture)
    # given the same burst answered with transformers' batch-wide SDPA and per request
    dense, dense_attention = greedy_answers(model_dir, varlen=False)
    varlen, varlen_attention = greedy_answers(model_dir, varlen=True)
    # then each engine says which attention it ran, and the greedy answers are the same
    assert varlen_attention.startswith("per-request"), varlen_attention
    assert "transformers' own" in dense_attention, dense_attention
    assert all(dense) and varlen == dense


@pytest.mark.slow
def test_calls_outside_an_enabled_paged_cache_reach_transformers_unchanged(
    tiny_model_dir: Path,
) -> None:
    from inference import paged_attention

    env = {"CHAT_MODEL": str(tiny_model_dir), "QUANTIZATION": "none", "INFERENCE_DEVICE": "cpu"}
    model, tokenizer = load_model_and_tokenizer(ModelSettings.from_env(env))
    ids = torch.tensor([site_prompts(tokenizer)[0]])
    with torch.inference_mode():
        before = model(input_ids=ids).logits
        # given the wrapper installed over the SDPA entry (as every CPU engine does)
        assert paged_attention.install(model.config._attn_implementation)
        # then a plain forward (sequential generate, the static batcher) is what it was
        after = model(input_ids=ids).logits
    assert torch.equal(before, after)
    # and attention kernels other than transformers' SDPA are left alone
    assert not paged_attention.install("flash_attention_2")
