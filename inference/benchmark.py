"""CPU benchmark of the serving engine against two baselines, with the offline model.

    python -m inference.benchmark [--model DIR] [--quantization int8] [--levels 1 8 32 64]
    python -m inference.benchmark --distinct [--rate 8] [--requests 8] [--rounds 5] [--overload]
                                             [--cold-site] [--steps] [--json]

`--distinct` (see `benchmark_distinct.py`): real, all-different customer questions
(Banking77's test split) against a simulated site, prompts laid out as production lays them
out; continuous batching with prefix sharing on and off and with transformers' batch-wide
attention side by side, and sequential `generate`; `--steps` adds each batching step's shape
and time (`step_timing.py`: the slowest steps, a fit of step time); `--overload`
adds SLA attainment of the late-yield policy against plain EDF at twice the engine's
capacity; `--json` prints one JSON object with every figure as the last line.

For each concurrency level C, C requests arrive as a Poisson process (mean rate C per
`--window` seconds, same seeded schedule for every system) and each asks for
`--new-tokens` tokens. Three systems serve the same schedule:

- `continuous`: the production engine (EDF admission + transformers' continuous batching);
- `static`: the same front with a static padded batch (a batch runs to completion);
- `sequential`: plain `model.generate`, one request at a time, first come first served.

Printed per system and level: time to first token p50/p99 (arrival to first token, queueing
included), output tokens/s (all tokens / span from first arrival to last token), the share of
requests whose first token met a 300 ms SLA; then ratios against the baselines. A second table
gives each quantization mode's decode step time and logit error against the unquantized model.

The GPU counterpart (H200, DeepSeek-LLM-7B config with random weights) is
`python -m inference.benchmark_gpu`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.contracts import InferenceRequest
from inference.engine import Engine, EngineLimits
from inference.loading import DEFAULT_MODEL_DIR, ModelSettings, load_model_and_tokenizer
from inference.prompt import build_messages, render_prompt

SLA_S = 0.300  # the platform's time-to-first-token target
QUESTIONS = [
    "Where is my order?",
    "How do I get a refund for a damaged item?",
    "Can I change the delivery address after ordering?",
    "Why was my card payment declined?",
    "How do I cancel my subscription?",
    "When are you open on weekends?",
    "My password reset link does not work.",
    "Can I return an item without the receipt?",
]
GROUNDING = [
    ("How long does delivery take?", "Orders arrive within three to five working days."),
    ("How do refunds work?", "Refunds reach your card within five to seven working days."),
    ("Can I change my order?", "You can change an order until it ships, from your account."),
]


@dataclass
class Outcome:
    arrival: float  # perf_counter
    first_token: float | None
    finished: float
    tokens: int


@dataclass
class LevelFigures:
    system: str
    level: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    tokens_per_s: float
    sla_share: float


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def summarize(system: str, level: int, outcomes: list[Outcome]) -> LevelFigures:
    ttfts = [(o.first_token or o.finished) - o.arrival for o in outcomes]
    span = max(o.finished for o in outcomes) - min(o.arrival for o in outcomes)
    return LevelFigures(
        system=system,
        level=level,
        ttft_p50_ms=percentile(ttfts, 50) * 1000,
        ttft_p99_ms=percentile(ttfts, 99) * 1000,
        tokens_per_s=sum(o.tokens for o in outcomes) / span,
        sla_share=sum(t <= SLA_S for t in ttfts) / len(ttfts),
    )


def poisson_schedule(count: int, rate_per_s: float, seed: int) -> list[float]:
    """Arrival offsets (seconds from start) of a Poisson process with the given rate."""
    rng = random.Random(seed)
    offsets, now = [], 0.0
    for _ in range(count):
        offsets.append(now)
        now += rng.expovariate(rate_per_s)
    return offsets


def prompts(tokenizer: Any, count: int, max_prompt_tokens: int) -> list[list[int]]:
    result = []
    for index in range(count):
        messages = build_messages(
            "You are the support assistant of an online shop. Answer briefly and politely.",
            GROUNDING,
            [("user", "Hello"), ("assistant", "Hello! How can I help?")],
            QUESTIONS[index % len(QUESTIONS)] + f" (ticket {1000 + index})",
        )
        result.append(render_prompt(tokenizer, messages, max_prompt_tokens))
    return result


def run_engine(
    engine: Engine,
    schedule: list[float],
    inputs: list[list[int]],
    new_tokens: int,
    timeout_s: float = 300.0,
) -> list[Outcome]:
    start = time.perf_counter()
    wall_offset = time.time() - start
    tickets = []
    for offset, prompt_ids in zip(schedule, inputs, strict=True):
        delay = start + offset - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        arrival = start + offset
        request = InferenceRequest(
            conversation_id="bench",
            message_id=f"bench-{len(tickets)}",
            site_id="bench",
            messages=[],
            deadline=wall_offset + arrival + SLA_S,
            max_new_tokens=new_tokens,
            arrival=wall_offset + arrival,
        )
        tickets.append((arrival, engine.submit(request, prompt_ids, emit=lambda event: None)))
    outcomes = []
    for arrival, ticket in tickets:
        if not ticket.done.wait(timeout_s):
            raise TimeoutError(f"{ticket.request.message_id} did not finish in {timeout_s} s")
        result = ticket.result
        assert result is not None and result.finish_reason in {"length", "stop"}, result
        first = None if result.ttft_ms is None else arrival + result.ttft_ms / 1000
        outcomes.append(
            Outcome(arrival, first, arrival + result.total_ms / 1000, result.completion_tokens)
        )
    return outcomes


class _FirstTokenTimer:
    """A `generate` streamer that notes when the first new token appears."""

    def __init__(self) -> None:
        self.calls = 0
        self.first_token: float | None = None

    def put(self, value: Any) -> None:
        self.calls += 1
        if self.calls == 2:  # call 1 is the prompt itself
            self.first_token = time.perf_counter()

    def end(self) -> None:
        pass


def run_sequential(
    model: Any, schedule: list[float], inputs: list[list[int]], new_tokens: int
) -> list[Outcome]:
    """One `generate` at a time, in arrival order; a request waits for all before it."""
    import torch

    start = time.perf_counter()
    outcomes = []
    for offset, prompt_ids in zip(schedule, inputs, strict=True):
        arrival = start + offset
        delay = arrival - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        timer = _FirstTokenTimer()
        with torch.inference_mode():
            output = model.generate(
                torch.tensor([prompt_ids]),
                attention_mask=torch.ones((1, len(prompt_ids)), dtype=torch.long),
                max_new_tokens=new_tokens,
                do_sample=False,
                streamer=timer,
            )
        tokens = output.shape[1] - len(prompt_ids)
        outcomes.append(Outcome(arrival, timer.first_token, time.perf_counter(), tokens))
    return outcomes


def decode_step_ms(model: Any, batch: int, prompt_len: int = 128, steps: int = 16) -> float:
    """Median time of one decode step (batch rows, KV cache of `prompt_len`) with a plain loop."""
    import torch
    from transformers import DynamicCache

    ids = torch.randint(0, model.config.vocab_size, (batch, prompt_len))
    cache = DynamicCache(config=model.config)
    times = []
    with torch.inference_mode():
        logits = model(input_ids=ids, past_key_values=cache, use_cache=True).logits
        for _ in range(steps):
            next_ids = logits[:, -1:].argmax(-1)
            began = time.perf_counter()
            logits = model(input_ids=next_ids, past_key_values=cache, use_cache=True).logits
            times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def quantization_table(model_dir: str) -> list[str]:
    """Each CPU mode's decode step time and relative logit error against `none`."""
    import torch

    from inference.loading import ModelSettingsError

    text = "Where is my order? I want a refund for the damaged item and a new invoice."
    reference = None
    lines = ["| mode | decode step b=1 (ms) | decode step b=32 (ms) | rel. logit error |"]
    lines.append("| --- | --- | --- | --- |")
    for mode in ["none", "int8", "fp8", "int4"]:
        env = {"CHAT_MODEL": model_dir, "QUANTIZATION": mode, "INFERENCE_DEVICE": "cpu"}
        try:
            model, tokenizer = load_model_and_tokenizer(ModelSettings.from_env(env))
        except ModelSettingsError as error:
            lines.append(f"| {mode} | - | - | cannot run here: {error} |")
            continue
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            logits = model(input_ids=ids).logits.float()
        if reference is None:
            reference = logits
        error = ((logits - reference).norm() / reference.norm()).item()
        step1, step32 = decode_step_ms(model, 1), decode_step_ms(model, 32)
        lines.append(f"| {mode} | {step1:.2f} | {step32:.2f} | {error:.4f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="CPU serving benchmark (offline model)")
    parser.add_argument("--distinct", action="store_true", help="distinct real questions")
    parser.add_argument("--questions", type=Path, default=None, help="CSV with a text column")
    parser.add_argument("--rate", type=float, default=8.0, help="--distinct: arrivals per s")
    parser.add_argument("--requests", type=int, default=8, help="--distinct: per round")
    parser.add_argument("--rounds", type=int, default=5, help="--distinct: rounds of arrivals")
    parser.add_argument(
        "--head-chars", type=int, default=100, help="--distinct: CHAT_SITE_FAQ_HEAD_CHARS"
    )
    parser.add_argument("--overload", action="store_true", help="--distinct: YIELD vs EDF")
    parser.add_argument(
        "--cold-site", action="store_true", help="--distinct: no question warms the site head"
    )
    parser.add_argument(
        "--steps", action="store_true", help="--distinct: time each batching step (shape, ms)"
    )
    parser.add_argument("--json", action="store_true", help="last line: figures as JSON")
    parser.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--quantization", default="int8")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--window", type=float, default=1.0, help="seconds over which C arrive")
    parser.add_argument("--max-running", type=int, default=32)
    parser.add_argument("--systems", nargs="+", default=["continuous", "static", "sequential"])
    parser.add_argument("--skip-quantization", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from inference.build_model import build
    from inference.cb_engine import ContinuousBatchingEngine
    from inference.runtime import warmup_prompt
    from inference.static_engine import StaticBatchEngine

    if Path(args.model).resolve() == DEFAULT_MODEL_DIR:
        build(DEFAULT_MODEL_DIR)
    if args.distinct:
        from inference.benchmark_distinct import run_distinct

        run_distinct(args)
        return
    env = {"CHAT_MODEL": args.model, "QUANTIZATION": args.quantization, "INFERENCE_DEVICE": "cpu"}
    model, tokenizer = load_model_and_tokenizer(ModelSettings.from_env(env))
    limits = EngineLimits(max_running=args.max_running, max_new_tokens=args.new_tokens)
    print(f"model {args.model} ({args.quantization}), torch threads {torch.get_num_threads()}")

    # Systems take turns at each level (rather than one system running all levels, then the
    # next) so that load from other processes on a shared machine hits all three alike.
    engines: dict[str, Engine | None] = {}
    for system in args.systems:
        if system == "continuous":
            engines[system] = ContinuousBatchingEngine(model, tokenizer, limits)
        elif system == "static":
            engines[system] = StaticBatchEngine(model, tokenizer, limits)
        else:
            engines[system] = None
            run_sequential(model, [0.0], prompts(tokenizer, 1, 1024), 4)  # warm-up
    for engine in engines.values():
        if engine is not None:
            engine.warmup(warmup_prompt(tokenizer, limits), requests=4)

    figures: list[LevelFigures] = []
    for level in args.levels:
        schedule = poisson_schedule(level, level / args.window, seed=level)
        inputs = prompts(tokenizer, level, limits.max_prompt_tokens)
        for system, engine in engines.items():
            if engine is not None:
                outcomes = run_engine(engine, schedule, inputs, args.new_tokens)
            else:
                outcomes = run_sequential(model, schedule, inputs, args.new_tokens)
            row = summarize(system, level, outcomes)
            figures.append(row)
            print(
                f"{system:>10} C={level:<3} ttft p50 {row.ttft_p50_ms:8.1f} ms  "
                f"p99 {row.ttft_p99_ms:8.1f} ms  {row.tokens_per_s:7.1f} tok/s  "
                f"SLA met {row.sla_share:.0%}",
                flush=True,
            )
    for engine in engines.values():
        if engine is not None:
            engine.close()

    print()
    print("| system | C | TTFT p50 (ms) | TTFT p99 (ms) | tokens/s | first token <= 300 ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in figures:
        print(
            f"| {row.system} | {row.level} | {row.ttft_p50_ms:.0f} | {row.ttft_p99_ms:.0f} | "
            f"{row.tokens_per_s:.0f} | {row.sla_share:.0%} |"
        )
    by_key = {(row.system, row.level): row for row in figures}
    if "continuous" in args.systems:
        print()
        print("| C | baseline | tokens/s ratio (continuous / baseline) | TTFT p99 ratio |")
        print("| --- | --- | --- | --- |")
        for level in args.levels:
            ours = by_key[("continuous", level)]
            for base in ("static", "sequential"):
                if (base, level) in by_key:
                    other = by_key[(base, level)]
                    print(
                        f"| {level} | {base} | {ours.tokens_per_s / other.tokens_per_s:.2f}x | "
                        f"{ours.ttft_p99_ms / other.ttft_p99_ms:.2f}x |"
                    )
    if not args.skip_quantization:
        print()
        print("\n".join(quantization_table(args.model)))


if __name__ == "__main__":
    main()
