"""The engine benchmark with distinct real questions (`python -m inference.benchmark --distinct`).

Every prompt is different, as in production: real customer questions (Banking77's test split)
against a simulated bank site whose FAQ has one entry per Banking77 category. Prompts are laid
out as the chat layer lays them out (`inference.prompt`): instructions, rules and the site's
FAQ head first (the same for every question), then the question's nearest FAQ entries (its
own category's and two neighbours') and the question. So prefix sharing can serve only what a
real deployment would share, never a whole identical prompt.

Before the measured rounds each engine answers one other question of the same site (not among
the measured ones), so the site head is in the prefix cache as in steady state, where a site's
questions keep coming; `--cold-site` skips that and measures the first burst of a site whose
head nothing has cached yet.

Systems on one seeded schedule, each on its own copy of the model: continuous batching with
prefix sharing and per-request attention (production), the same with sharing off, the same
with transformers' own batch-wide SDPA (`continuous_dense_attention`), and sequential
`generate`. The
schedule is `--rounds` rounds of `--requests` Poisson arrivals at `--rate` per second, each
round starting once the previous one is answered: "8 arrivals per second" as in the level
benchmark (a one-second burst), with enough samples for a p99. (Sustained, 8 arrivals/s x 32
tokens is more than this 2-core CPU decodes: about 150 tokens/s at best.)

`--overload` then runs twice the engine's capacity through the late-yield policy and plain
earliest-deadline-first side by side, with `OVERLOAD_MAX_RUNNING` slots so that a waiting
line forms: capacity is measured from a burst of twice the slots, and the share of first
tokens within the 300 ms SLA is what the policy is for.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from inference.benchmark import (
    SLA_S,
    LevelFigures,
    Outcome,
    poisson_schedule,
    run_engine,
    run_sequential,
    summarize,
)
from inference.engine import Engine, EngineLimits
from inference.loading import ModelSettings, load_model_and_tokenizer
from inference.prompt import FaqEntry, build_messages, faq_head, render_prompt
from inference.scheduling import LatePolicy
from inference.step_timing import StepTimer

REPO = Path(__file__).resolve().parents[1]
# Where the shared data set lies next to a checkout (or next to the worktrees' folder).
QUESTION_FILES = [
    REPO.parent / "shared" / "data" / "banking77" / "banking77_test.csv",
    REPO.parents[1] / "shared" / "data" / "banking77" / "banking77_test.csv",
]
INSTRUCTIONS = "You are the support assistant of an online bank. Answer briefly and politely."
# The chat layer's head limits (chatplatform/chat/config.py), repeated here because the
# inference package does not import the chat layer.
HEAD_ENTRIES = 10
HEAD_CHARS = 100
NEAREST = 3  # suggestions per question (chat config SUGGESTION_COUNT)
SEED = 7
# Slots of the overload run's engines: few enough that twice the capacity builds a waiting
# line within seconds on this CPU (with 32 slots the line forms only after ~30 s).
OVERLOAD_MAX_RUNNING = 8
OVERLOAD_REQUESTS = 64
OVERLOAD_TURNS = 2
# (name, prefix sharing, per-request attention): production, sharing off, and transformers'
# own batch-wide SDPA (every query against the whole batch's KV behind a block-diagonal mask).
CONTINUOUS_SYSTEMS = [
    ("continuous", True, True),
    ("continuous_no_sharing", False, True),
    ("continuous_dense_attention", True, False),
]


def question_file(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    for path in QUESTION_FILES:
        if path.exists():
            return path
    raise SystemExit(
        "no questions: pass --questions CSV (a `text` column, optionally `category`); looked "
        f"in {', '.join(str(p) for p in QUESTION_FILES)}"
    )


def load_questions(path: Path, count: int) -> list[tuple[str, str]]:
    """`count` distinct (question, category) rows, sampled with a fixed seed."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = {(r["text"].strip(), r.get("category") or "general") for r in csv.DictReader(handle)}
    ordered = sorted(rows)
    random.Random(SEED).shuffle(ordered)
    if len(ordered) < count:
        raise SystemExit(f"{path} has only {len(ordered)} distinct questions; {count} asked")
    return ordered[:count]


def simulated_faq(categories: list[str]) -> dict[str, FaqEntry]:
    """One FAQ entry per category, in a fixed order, with an answer of realistic length."""
    faq = {}
    for index, category in enumerate(sorted(set(categories))):
        topic = category.replace("_", " ")
        faq[category] = FaqEntry(
            question=f"{topic.capitalize()}?",
            answer=f"Open Help, then {topic}, in the app.",
            ref=f"{index + 1}:1",
        )
    return faq


def distinct_prompts(
    tokenizer: Any, rows: list[tuple[str, str]], budget: int, head_chars: int = HEAD_CHARS
) -> tuple[list[list[int]], int]:
    """Token ids of each question's prompt, and the length of the shared site head in tokens."""
    faq = simulated_faq([category for _, category in rows])
    order = list(faq)
    head = faq_head([faq[c] for c in order], HEAD_ENTRIES, head_chars)
    prompts = []
    for question, category in rows:
        at = order.index(category)
        nearest = [faq[order[(at + k) % len(order)]] for k in range(NEAREST)]
        messages = build_messages(INSTRUCTIONS, nearest, [], question, site_faqs=head)
        prompts.append(render_prompt(tokenizer, messages, budget))
    head_only = render_prompt(tokenizer, build_messages(INSTRUCTIONS, [], [], "", head), budget)
    return prompts, len(head_only)


def site_head_state(cold_site: bool) -> str:
    return "cold" if cold_site else "warmed by one other question"


def load(args: argparse.Namespace) -> tuple[Any, Any]:
    env = {"CHAT_MODEL": args.model, "QUANTIZATION": args.quantization, "INFERENCE_DEVICE": "cpu"}
    return load_model_and_tokenizer(ModelSettings.from_env(env))


def continuous_engine(
    args: argparse.Namespace,
    limits: EngineLimits,
    sharing: bool,
    policy: LatePolicy,
    varlen_attention: bool = True,
) -> Engine:
    from inference.cb_engine import BatchingOptions, ContinuousBatchingEngine
    from inference.runtime import warmup_prompt

    model, tokenizer = load(args)  # its own copy: a manager switches the model's attention
    options = BatchingOptions(prefix_sharing=sharing, varlen_attention=varlen_attention)
    engine = ContinuousBatchingEngine(model, tokenizer, limits, options, late_policy=policy)
    engine.warmup(warmup_prompt(tokenizer, limits), requests=4)
    return engine


def figures(row: LevelFigures, engine: Engine | None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ttft_p50_ms": round(row.ttft_p50_ms, 1),
        "ttft_p99_ms": round(row.ttft_p99_ms, 1),
        "tokens_per_s": round(row.tokens_per_s, 1),
        "sla_share": round(row.sla_share, 3),
    }
    if engine is not None:
        share = engine.prefix_hit_share
        result["prefix_hit_share"] = None if share is None else round(share, 3)
    return result


def measure_capacity(engine: Engine, prompts: list[list[int]], new_tokens: int) -> float:
    """Requests per second the engine completes when it always has work (one burst)."""
    burst = prompts[: 2 * engine.limits.max_running]
    began = time.perf_counter()
    run_engine(engine, [0.0] * len(burst), burst, new_tokens)
    return len(burst) / (time.perf_counter() - began)


def run_distinct(args: argparse.Namespace) -> None:
    path = question_file(args.questions)
    limits = EngineLimits(max_running=args.max_running, max_new_tokens=args.new_tokens)
    _, tokenizer = load(args)
    count = args.requests * args.rounds
    # One question more than measured: it warms the site head (see the module docstring).
    rows = load_questions(path, max(count + 1, OVERLOAD_REQUESTS))
    prompts, head_tokens = distinct_prompts(
        tokenizer, rows, limits.max_prompt_tokens, args.head_chars
    )
    site_warmup = prompts[count]
    mean_tokens = sum(map(len, prompts)) / len(prompts)
    print(
        f"{count} distinct questions from {path.name}; prompts {mean_tokens:.0f} tokens on "
        f"average, {head_tokens} of them the site head; {args.rounds} rounds of "
        f"{args.requests} at {args.rate}/s, {args.new_tokens} new tokens; load average "
        f"{os.getloadavg()[0]:.1f}; site head {site_head_state(args.cold_site)}",
        flush=True,
    )
    rounds = [
        (
            poisson_schedule(args.requests, args.rate, seed=SEED + r),
            prompts[r * args.requests : (r + 1) * args.requests],
        )
        for r in range(args.rounds)
    ]
    report: dict[str, Any] = {
        "questions": path.name,
        "requests": count,
        "rounds": args.rounds,
        "rate_per_s": args.rate,
        "new_tokens": args.new_tokens,
        "prompt_tokens_mean": round(mean_tokens, 1),
        "site_head_tokens": head_tokens,
        "head_chars": args.head_chars,
        "site_head": "cold" if args.cold_site else "warm",
        "load_average_1m": round(os.getloadavg()[0], 2),
        "systems": {},
    }
    for name, sharing, varlen in CONTINUOUS_SYSTEMS:
        engine = continuous_engine(args, limits, sharing, LatePolicy.YIELD, varlen)
        timer = StepTimer(engine.batch_processor) if args.steps else None
        try:
            if not args.cold_site:
                run_engine(engine, [0.0], [site_warmup], args.new_tokens)
            if timer is not None:
                timer.clear()  # the measured rounds only
            outcomes = [
                outcome
                for schedule, batch in rounds
                for outcome in run_engine(engine, schedule, batch, args.new_tokens)
            ]
            result = figures(summarize(name, count, outcomes), engine)
            result["attention"] = engine.attention
            if timer is not None:
                result["steps"] = timer.summary()
            report["systems"][name] = result
        finally:
            engine.close()
        print(f"{name:>22}: {report['systems'][name]}", flush=True)
    model, _ = load(args)
    run_sequential(model, [0.0], prompts[:1], 4)  # warm-up
    outcomes = [
        outcome
        for schedule, batch in rounds
        for outcome in run_sequential(model, schedule, batch, args.new_tokens)
    ]
    report["systems"]["sequential"] = figures(summarize("sequential", count, outcomes), None)
    print(f"{'sequential':>22}: {report['systems']['sequential']}", flush=True)
    if args.overload:
        report["overload"] = overload(args, prompts[:OVERLOAD_REQUESTS])
    print()
    print("| system | TTFT p50 (ms) | TTFT p99 (ms) | tokens/s | TTFT <= 300 ms | prefix hits |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, f in report["systems"].items():
        hits = f.get("prefix_hit_share")
        print(f"| {name} | {f['ttft_p50_ms']:.0f} | {f['ttft_p99_ms']:.0f} | "
              f"{f['tokens_per_s']:.0f} | {f['sla_share']:.0%} | "
              f"{'-' if hits is None else f'{hits:.0%}'} |")  # fmt: skip
    if args.json:
        print(json.dumps(report))


def overload(args: argparse.Namespace, prompts: list[list[int]]) -> dict:
    """SLA attainment of the late-yield policy and plain EDF at twice the measured capacity."""
    limits = EngineLimits(max_running=OVERLOAD_MAX_RUNNING, max_new_tokens=args.new_tokens)
    engines = {
        policy: continuous_engine(args, limits, True, policy)
        for policy in (LatePolicy.YIELD, LatePolicy.EDF)
    }
    try:
        # One burst per engine, averaged: a single burst on a shared machine is noisy, and a
        # rate that is not really twice the capacity compares nothing.
        capacity = sum(
            measure_capacity(engine, prompts, args.new_tokens) for engine in engines.values()
        ) / len(engines)
        rate = 2 * capacity
        schedule = poisson_schedule(len(prompts), rate, seed=SEED + 100)
        result: dict[str, Any] = {
            "max_running": OVERLOAD_MAX_RUNNING,
            "requests": len(prompts),
            "capacity_per_s": round(capacity, 2),
            "rate_per_s": round(rate, 2),
        }
        print(f"overload: capacity {capacity:.1f} requests/s, running {rate:.1f}/s", flush=True)
        # The policies take turns, twice, so that load from other processes hits both alike.
        outcomes: dict[LatePolicy, list[Outcome]] = {policy: [] for policy in engines}
        for _ in range(OVERLOAD_TURNS):
            for policy, engine in engines.items():
                outcomes[policy] += run_engine(
                    engine, schedule, prompts, args.new_tokens, timeout_s=600
                )
        for policy, runs in outcomes.items():
            result[policy.value] = figures(summarize(policy.value, len(runs), runs), None)
            print(f"  {policy.value:>5}: {result[policy.value]}", flush=True)
    finally:
        for engine in engines.values():
            engine.close()
    yield_share, edf_share = result["yield"]["sla_share"], result["edf"]["sla_share"]
    print(f"SLA attainment at 2x capacity (first token <= {SLA_S * 1000:.0f} ms): "
          f"yield {yield_share:.0%}, plain EDF {edf_share:.0%}")  # fmt: skip
    return result
