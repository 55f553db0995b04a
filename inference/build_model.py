"""Build the small offline chat model of DeepSeek's architecture (no downloads).

`python -m inference.build_model --out var/models/tiny-deepseek` writes, with `save_pretrained`,
a scaled-down DeepSeek-LLM (Llama architecture: MHA, SwiGLU MLP, RoPE theta 10000) with random
weights, a byte-level BPE tokenizer trained here on built-in customer-service text, and
DeepSeek-LLM-chat's chat template. `--arch deepseek_v2` writes a tiny MoE DeepSeek-V2 instead
(DeepSeek-V2-Lite's architecture, served without continuous batching) and `--arch qwen2` a
tiny Qwen2 (DeepSeek-R1-Distill-Qwen's architecture). The folder then loads through the very
same `from_pretrained` path as a real checkpoint. Building is idempotent: an existing complete
folder is left alone.

The weights are random, so generated text is gibberish; what matters is the serving path.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inference.corpus import training_sentences

# DeepSeek's own special tokens, so prompts look exactly like the real model's.
BOS_TOKEN = "<｜begin▁of▁sentence｜>"
EOS_TOKEN = "<｜end▁of▁sentence｜>"

# deepseek-ai/deepseek-llm-7b-chat's template: no system role of its own (a system message is
# just prepended text), turns as "User: ...\n\nAssistant: ...<eos>".
DEEPSEEK_CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}"
    "{% set add_generation_prompt = false %}{% endif %}"
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token }}"
    "{% elif message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# Small enough that one CPU decode step of a 32-request batch takes a few milliseconds, big
# enough that batching effects (matmul cost growing slower than batch size) are visible.
VOCAB_SIZE = 4096
HIDDEN_SIZE = 256
INTERMEDIATE_SIZE = 688  # DeepSeek-7B's 11008/4096 ratio, scaled to hidden 256
NUM_LAYERS = 4
NUM_HEADS = 8  # DeepSeek-LLM-7B uses full multi-head attention (KV heads == heads)
MAX_POSITIONS = 4096  # DeepSeek-LLM-7B's context length
ROPE_THETA = 10000.0
SEED = 1234  # fixed, so every build gives the same weights and tests are reproducible


def train_tokenizer():  # -> PreTrainedTokenizerFast (imported lazily: transformers is slow)
    """Train a byte-level BPE tokenizer on the built-in corpus and wrap it for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[BOS_TOKEN, EOS_TOKEN],
        # Every byte is in the vocabulary, so any text (emoji, other scripts) still encodes.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(training_sentences(), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,  # DeepSeek has no pad token; padding is masked anyway
        model_max_length=MAX_POSITIONS,
    )
    wrapped.chat_template = DEEPSEEK_CHAT_TEMPLATE
    return wrapped


def llama_config(vocab_size: int, bos_id: int, eos_id: int):
    """DeepSeek-LLM-7B's architecture (Llama), scaled down."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_HEADS,
        max_position_embeddings=MAX_POSITIONS,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        rms_norm_eps=1e-6,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        tie_word_embeddings=False,
    )


def deepseek_v2_config(vocab_size: int, bos_id: int, eos_id: int):
    """DeepSeek-V2-Lite's architecture (MLA attention + routed experts), scaled down."""
    from transformers import DeepseekV2Config

    return DeepseekV2Config(
        vocab_size=vocab_size,
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        moe_intermediate_size=128,
        num_hidden_layers=2,
        first_k_dense_replace=1,  # like V2-Lite: first layer dense, the rest MoE
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_HEADS,
        n_routed_experts=8,
        n_shared_experts=1,
        num_experts_per_tok=2,
        kv_lora_rank=64,
        q_lora_rank=None,  # V2-Lite projects queries directly
        qk_nope_head_dim=32,
        qk_rope_head_dim=16,
        v_head_dim=32,
        head_dim=16,
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )


def qwen2_config(vocab_size: int, bos_id: int, eos_id: int):
    """DeepSeek-R1-Distill-Qwen's architecture (Qwen2: GQA, QKV bias), scaled down."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=2,  # grouped-query attention, as in R1-Distill-Qwen-1.5B
        max_position_embeddings=MAX_POSITIONS,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        tie_word_embeddings=False,
    )


ARCHITECTURES = {"llama": llama_config, "deepseek_v2": deepseek_v2_config, "qwen2": qwen2_config}


def is_built(out: Path) -> bool:
    """A folder counts as built once weights, config and tokenizer are all there."""
    return all((out / name).exists() for name in ("config.json", "tokenizer.json")) and any(
        out.glob("*.safetensors")
    )


def build(out: Path, arch: str = "llama") -> Path:
    """Write the offline model to `out` unless it is already there; returns `out`."""
    if is_built(out):
        return out
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    tokenizer = train_tokenizer()
    bos_id = tokenizer.convert_tokens_to_ids(BOS_TOKEN)
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    make_config = ARCHITECTURES[arch]
    config = make_config(len(tokenizer), bos_id, eos_id)
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id, do_sample=False
    )
    # Write to a sibling folder and rename, so a crash never leaves a half-built model that
    # `is_built` would accept (and two workers building at once do not mix files).
    tmp = out.with_name(f".{out.name}.tmp-{torch.randint(0, 1 << 30, (1,)).item()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(out)
    except OSError:
        if not is_built(out):  # someone else finished first: fine; otherwise a real error
            raise
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the model to")
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default="llama")
    args = parser.parse_args(argv)
    path = build(args.out, args.arch)
    print(f"offline model ({args.arch}) ready at {path}")


if __name__ == "__main__":
    main()
