"""Many tenants: memory per process and lookup latency with sites held and with cold sites.

    python -m cache.tenant_benchmark [--sites 1000] [--faqs 500] [--phrasings 5]
        [--max-rows 150000] [--queries 200] [--redis-url URL]

Writes SITES x FAQS entries of PHRASINGS phrasings each to Redis (random unit vectors, as
cache.benchmark's filler: a lookup's cost depends on the row count, not on what the vectors
mean), then starts one cache as a web process does, bounded to MAX_ROWS rows (replica.py:
the sites that fit are held at start, the others load on first lookup in place of the least
recently used). It measures:

- the process's memory (RSS) after start, after every site was looked up once, and what
  holding every site would take (the measured cost per held row times all rows);
- lookup latency, single caller, for a site held ("warm") and a site not held ("cold": the
  lookup first reads the site from Redis and builds its index): an exact phrasing (exact
  tier, no encoder) and a novel question (encoder and semantic search; a miss here).

Prints one line per figure and a JSON object last. Needs ~4.5 GB of Redis memory at the
default size (500k entries of 5 x 384 float32).
"""

from __future__ import annotations

import argparse
import json
import random
import time
import uuid
from pathlib import Path

import numpy as np
import psutil

from cache.benchmark import fill, filler_question, percentiles, run_on_redis
from cache.config import CacheConfig
from cache.encoder import load_encoder
from cache.service import SemanticCache
from cache.store import Store

MIB = 2**20
NOVEL_QUESTIONS = [
    "Do you sell waterproof hiking boots in size 46?",
    "Can I change the delivery address after ordering?",
    "Is there a student discount on annual plans?",
    "My parcel arrived damaged, what now?",
    "Which payment methods do you accept for business accounts?",
]


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / MIB


def populate(store: Store, args: argparse.Namespace, dim: int) -> list[str]:
    rng = np.random.default_rng(0)
    sites = [f"tenant{n:05d}" for n in range(args.sites)]
    began = time.perf_counter()
    for number, site in enumerate(sites, 1):
        fill(store, site, args.faqs, dim, rng, phrasings=args.phrasings)
        if number % 100 == 0:
            print(f"  wrote {number} sites ({time.perf_counter() - began:.0f} s)", flush=True)
    return sites


def timed_lookups(cache: SemanticCache, picks: list[tuple[str, str]]) -> dict[str, float]:
    """p50/p99 latency (ms) of these lookups, one after another, and their hit share."""
    latencies, hits = [], 0
    for site, question in picks:
        began = time.perf_counter()
        hits += cache.lookup(site, question).hit
        latencies.append((time.perf_counter() - began) * 1000.0)
    p50, p99 = percentiles(latencies)
    return {"p50_ms": round(p50, 2), "p99_ms": round(p99, 2), "hit_share": hits / len(picks)}


def exact_question(rng: random.Random, args: argparse.Namespace) -> str:
    return filler_question(1_000_000 + rng.randrange(args.faqs), rng.randrange(args.phrasings))


def run(args: argparse.Namespace, redis_url: str) -> dict[str, object]:
    encoder = load_encoder(args.model, Path(args.onnx_cache))
    prefix = f"tenants-{uuid.uuid4().hex[:8]}"
    config = CacheConfig(
        key_prefix=prefix,
        follow_changes=False,
        embedding_lru_size=0,
        near_miss_min_confidence=1.1,
        max_rows_per_process=args.max_rows,
    )
    writer = SemanticCache(redis_url, encoder, config)
    sites = populate(writer.store, args, encoder.dim)
    used_mib = writer.redis.info("memory")["used_memory"] / MIB
    writer.close()
    total_rows = args.sites * args.faqs * args.phrasings
    print(f"Redis holds {total_rows} rows of {args.sites} sites: {used_mib:.0f} MiB")

    before = rss_mib()
    began = time.perf_counter()
    cache = SemanticCache(redis_url, encoder, config)  # a web process's start
    start_s = time.perf_counter() - began
    held = list(cache.replica._indexes)
    rows = cache.row_count()
    after_start = rss_mib()
    per_row_kib = (after_start - before) * 1024 / rows if rows else float("nan")
    print(
        f"start: {len(held)} sites held, {rows} rows, {start_s:.1f} s; process RSS "
        f"{after_start:.0f} MiB (+{after_start - before:.0f} MiB, {per_row_kib:.2f} KiB/row)"
    )
    rng = random.Random(0)
    figures: dict[str, dict[str, float]] = {}
    kinds = {
        "exact": lambda: exact_question(rng, args),
        "novel": lambda: rng.choice(NOVEL_QUESTIONS),
    }
    for kind, question in kinds.items():
        # warm: sites the process holds (touching one keeps it held)
        warm = [(rng.choice(held[-10:]), question()) for _ in range(args.queries)]
        figures[f"warm_{kind}"] = timed_lookups(cache, warm)
        # cold: a site not held at each lookup (visited once, in order, past the held ones)
        cold_sites = [site for site in sites if cache.replica.is_cold(site)]
        rng.shuffle(cold_sites)
        cold = [(site, question()) for site in cold_sites[: args.queries]]
        figures[f"cold_{kind}"] = timed_lookups(cache, cold)
    for name, figure in figures.items():
        print(
            f"{name:12} p50 {figure['p50_ms']:8.2f} ms  p99 {figure['p99_ms']:8.2f} ms  "
            f"hits {figure['hit_share']:.0%}"
        )

    began = time.perf_counter()
    for site in sites:  # every tenant asks once: the process cycles through all of them
        cache.lookup(site, exact_question(rng, args))
    sweep_s = time.perf_counter() - began
    after_all = rss_mib()
    all_held_mib = per_row_kib * total_rows / 1024
    print(
        f"after one lookup per site ({sweep_s:.0f} s): RSS {after_all:.0f} MiB, "
        f"{cache.row_count()} rows held (bound {args.max_rows}); holding all {total_rows} rows "
        f"would take ~{all_held_mib:.0f} MiB more"
    )
    cache.close()
    load = psutil.getloadavg()
    print(f"load average during the run (1/5/15 min): {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    return {
        "sites": args.sites,
        "faqs_per_site": args.faqs,
        "phrasings": args.phrasings,
        "total_rows": total_rows,
        "redis_used_mib": round(used_mib),
        "max_rows_per_process": args.max_rows,
        "start": {"sites_held": len(held), "rows": rows, "seconds": round(start_s, 1)},
        "rss_mib": {
            "before_cache": round(before),
            "after_start": round(after_start),
            "after_every_site": round(after_all),
        },
        "kib_per_held_row": round(per_row_kib, 2),
        "all_sites_held_estimate_mib": round(all_held_mib),
        "lookups": figures,
        "queries": args.queries,
        "load_average": load,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=1000)
    parser.add_argument("--faqs", type=int, default=500)
    parser.add_argument("--phrasings", type=int, default=5)
    parser.add_argument("--max-rows", type=int, default=CacheConfig().max_rows_per_process)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--model", default="")
    parser.add_argument("--onnx-cache", default="var/cache-models")
    args = parser.parse_args(argv)
    print(json.dumps(run_on_redis(run, args, "tenant-redis-")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
