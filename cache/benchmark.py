"""Lookup latency benchmark: exact hits, semantic hits and misses at 1k/10k/100k entries,
one caller and 32 concurrent callers.

    python -m cache.benchmark --train TRAIN.csv --test TEST.csv [--sizes 1000,10000,100000]
        [--queries 300] [--concurrency 32] [--redis-url URL]

Each site holds the Banking77 FAQs (K=3, U=17, seed 0: real phrasings, encoded) plus filler
entries up to the size. Filler embeddings are random unit vectors written straight to Redis
(encoding 100k sentences would take ~10 minutes on 2 cores); a lookup's cost does not depend
on what the vectors mean (one matrix product over all rows, a top-32 selection, then the
decision over the nearest entries), so the figures hold for real entries of the same count.
The embedding LRU is off, so every semantic lookup runs the encoder. Prints one line per
(size, kind, callers) and a JSON object last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil

from cache.banking import read_labelled, simulate_site
from cache.config import CacheConfig
from cache.encoder import load_encoder
from cache.ids import faq_entry_id
from cache.service import SemanticCache
from cache.store import Store
from cache.types import Entry, Source

FILL_CHUNK = 2_000  # filler entries per Redis pipeline


def filler_question(faq_id: int, phrasing: int) -> str:
    return f"filler question number {faq_id} in wording {phrasing}"


def fill(
    store: Store,
    site: str,
    count: int,
    dim: int,
    rng: np.random.Generator,
    phrasings: int = 1,
) -> None:
    """Write `count` filler FAQ entries (`phrasings` random unit vectors each) to Redis."""
    chunk = max(1, FILL_CHUNK // phrasings)
    for start in range(0, count, chunk):
        size = min(chunk, count - start)
        vectors = rng.standard_normal((size, phrasings, dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=2, keepdims=True)
        pipe = store.r.pipeline(transaction=False)
        for offset in range(size):
            faq_id = 1_000_000 + start + offset
            entry = Entry(
                entry_id=faq_entry_id(site, faq_id),
                site_id=site,
                source=Source.FAQ,
                questions=[filler_question(faq_id, p) for p in range(phrasings)],
                answer="filler",
                embeddings=vectors[offset],
                faq_id=faq_id,
                faq_version=1,
            )
            store.save(entry, pipe)
        pipe.execute()


def percentiles(samples: list[float]) -> tuple[float, float]:
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 99))


def single(
    cache: SemanticCache, site: str, questions: list[str], expect_hit: bool
) -> tuple[list[float], float]:
    """Sequential lookups: their wall-clock latencies, and the process CPU ms per lookup.

    On a shared, overloaded machine wall-clock latency mostly measures waiting for a core;
    CPU time per lookup (all threads: the caller and the encoder thread) is what one lookup
    costs on an idle core.
    """
    latencies = []
    cpu_began = time.process_time()
    for question in questions:
        began = time.perf_counter()
        result = cache.lookup(site, question)
        latencies.append((time.perf_counter() - began) * 1000.0)
        if result.hit != expect_hit:
            raise RuntimeError(f"benchmark query changed outcome: {question!r} {result.reason}")
    return latencies, (time.process_time() - cpu_began) * 1000.0 / len(questions)


async def concurrent(
    cache: SemanticCache, site: str, questions: list[str], callers: int
) -> tuple[list[float], float]:
    """`callers` coroutines issuing lookups back to back, like one busy async web process."""
    latencies: list[float] = []
    queue = list(questions)

    async def caller() -> None:
        while queue:
            question = queue.pop()
            began = time.perf_counter()
            await cache.alookup(site, question)
            latencies.append((time.perf_counter() - began) * 1000.0)

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return latencies, len(questions) / (time.perf_counter() - began)


def run_on_redis(
    run: Callable[[argparse.Namespace, str], dict[str, object]],
    args: argparse.Namespace,
    prefix: str,
) -> dict[str, object]:
    """`run(args, url)` on `--redis-url`, else on a throwaway redis-server of its own."""
    if args.redis_url:
        return run(args, args.redis_url)
    # The project's embedded redis-server helper (plain Python, no Django).
    from embedded_redis import throwaway_redis

    with throwaway_redis(prefix=prefix) as redis_url:
        return run(args, redis_url)


def run(args: argparse.Namespace, redis_url: str) -> dict[str, object]:
    train = read_labelled(Path(args.train))
    test = read_labelled(Path(args.test))
    simulated = simulate_site(train, 3, 17, 0)
    encoder = load_encoder(args.model, Path(args.onnx_cache))
    config = CacheConfig(
        key_prefix=f"bench-{uuid.uuid4().hex[:8]}",
        follow_changes=False,
        embedding_lru_size=0,
        near_miss_min_confidence=1.1,
        max_rows_per_process=10_000_000,
    )
    cache = SemanticCache(redis_url, encoder, config)
    rng = np.random.default_rng(0)
    figures: list[dict[str, object]] = []
    try:
        for size in [int(s) for s in args.sizes.split(",")]:
            site = f"bench{size}"
            for faq in simulated.faqs:
                cache.sync_faq(
                    site, faq.faq_id, 1, faq.phrasings[0], faq.phrasings[1:], faq.answer, True
                )
            fill(cache.store, site, size - len(simulated.faqs), encoder.dim, rng)
            began = time.perf_counter()
            cache.rebuild()  # loads every site and builds its search matrix
            load_s = time.perf_counter() - began
            rss_mb = psutil.Process().memory_info().rss / 2**20
            # Classify test questions once on this site: semantic hits and misses.
            picks = [row.text for row in test]
            rng_q = np.random.default_rng(1)
            rng_q.shuffle(picks)
            semantic, misses = [], []
            for question in picks:
                result = cache.lookup(site, question)
                if not result.hit and len(misses) < args.queries:
                    misses.append(question)
                elif result.tier == "semantic" and len(semantic) < args.queries:
                    semantic.append(question)
                if len(semantic) >= args.queries and len(misses) >= args.queries:
                    break
            exact = [faq.phrasings[0] for faq in simulated.faqs]
            exact = (exact * (args.queries // len(exact) + 1))[: args.queries]
            for kind, questions, expect in (
                ("exact_hit", exact, True),
                ("semantic_hit", semantic, True),
                ("miss", misses, False),
            ):
                latencies, cpu_ms = single(cache, site, questions, expect)
                p50, p99 = percentiles(latencies)
                figures.append(
                    {
                        "size": size,
                        "kind": kind,
                        "callers": 1,
                        "p50_ms": p50,
                        "p99_ms": p99,
                        "cpu_ms_per_lookup": cpu_ms,
                    }
                )
                print(
                    f"{size:>7} {kind:13} callers=1   p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  "
                    f"CPU {cpu_ms:6.2f} ms/lookup"
                )
                latencies, rate = asyncio.run(concurrent(cache, site, questions, args.concurrency))
                p50, p99 = percentiles(latencies)
                figures.append(
                    {
                        "size": size,
                        "kind": kind,
                        "callers": args.concurrency,
                        "p50_ms": p50,
                        "p99_ms": p99,
                        "lookups_per_s": rate,
                    }
                )
                print(
                    f"{size:>7} {kind:13} callers={args.concurrency:<3} p50 {p50:7.2f} ms  "
                    f"p99 {p99:7.2f} ms  {rate:7.0f} lookups/s"
                )
            print(
                f"{size:>7} rows={cache.row_count()} load {load_s:.1f} s  "
                f"process RSS {rss_mb:.0f} MiB"
            )
            cache.purge_generated(site)
            keys = list(cache.redis.scan_iter(match=f"{config.key_prefix}:*", count=5000))
            for start in range(0, len(keys), 5000):
                cache.redis.delete(*keys[start : start + 5000])
            cache.rebuild()
    finally:
        cache.close()
    load = psutil.getloadavg()
    print(f"load average during the run (1/5/15 min): {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    return {
        "figures": figures,
        "concurrency": args.concurrency,
        "queries": args.queries,
        "load_average": load,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--model", default="")
    parser.add_argument("--onnx-cache", default="var/cache-models")
    args = parser.parse_args(argv)
    print(json.dumps(run_on_redis(run, args, "bench-redis-")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
