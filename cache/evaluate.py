"""Evaluation of the cache's decision rule on a labelled question set (e.g. Banking77).

    python -m cache.evaluate --train TRAIN.csv --test TEST.csv --variants K \
        --unknown-intents U --seed S [--rule calibrated|cosine] [--threshold T] [--audit]

Builds one FAQ per category (cache/banking.py), syncs them into a real SemanticCache on a
real Redis (a throwaway redis-server unless --redis-url is given), looks up every test
question through `SemanticCache.lookup` (the consumer's code path, one caller), and prints
the precision of hits, the hit rate on known categories, the false-hit rate on unknown ones,
lookup latency p50/p99 and the precision/hit-rate curve over thresholds. The last line is
one JSON object.

"Did you mean" suggestions are measured on the same lookups, through `SemanticCache.suggest`
(what the chat shows after a miss):
- `suggestion_recall_at_3`: of the known questions that missed, the share whose right FAQ is
  among the suggestions shown (a miss the guards blocked shows none and counts as not found);
- `suggestions_shown_on_unknown`: the share of unknown questions shown any suggestion;
- `resolved_with_one_click`: the share of known questions answered right automatically, or
  missed with the right FAQ among the suggestions;
- `plain_top3_recall` and `plain_top3_shown_on_unknown`: the same for the 3 nearest FAQs by
  their nearest phrasing, with no floor and no guard (the baseline).
It also prints the floor's trade-off curve: those figures had the floor been f.

With --audit it also lists every wrong hit with what the labelled training set says about it:
the categories of the question's 10 nearest training questions (all of them, not only the
site's phrasings). A wrong hit whose neighbours mostly carry the served FAQ's category is one
where the data set labels near-identical questions the way the cache answered (Banking77 has
overlapping intents and some mislabelled questions). `precision` is never adjusted for it; the
count is printed beside it as `wrong_hits_agreeing_with_training_labels`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cache.banking import Labelled, encode_all, read_labelled, simulate_site
from cache.config import CacheConfig
from cache.decision import RULE_CALIBRATED, RULE_COSINE, SHIPPED_MIN_CONFIDENCE
from cache.encoder import Encoder, load_encoder
from cache.service import SemanticCache
from cache.suggestions import RERANK_CANDIDATES, SUGGESTIBLE_MISSES, above_floor, ranked_faqs
from cache.types import Suggestion

SITE = "eval"
DEFAULT_ONNX_CACHE = Path("var/cache-models")
# Nearest training questions the audit reads per wrong hit; "agreeing" means more than half.
AUDIT_NEIGHBOURS = 10
SUGGESTIONS_SHOWN = 3  # what the chat shows (chatplatform.chat.config.SUGGESTION_COUNT)
FLOOR_GRID = [0.0, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7]


@dataclass(frozen=True, slots=True)
class Outcome:
    question: str
    category: str
    served_category: str | None  # the FAQ served on a hit (None on a miss)
    known: bool
    hit: bool
    correct: bool  # the served (or, on a miss, the candidate) FAQ has the question's category
    confidence: float
    curve_eligible: bool  # a semantic-tier decision or an exact hit (not a guard/gate miss)
    suggested: tuple[str, ...] = ()  # categories of the suggestions shown (SemanticCache.suggest)
    # Every FAQ the suggestions could show, best first, as (category, cosine of its nearest
    # phrasing): empty when the lookup's outcome shows none. For the floor's curve.
    ranked: tuple[tuple[str, float], ...] = ()
    plain_top3: tuple[str, ...] = ()  # categories of the 3 nearest FAQs, no floor, no guard


def summarize(outcomes: list[Outcome], latencies_ms: list[float]) -> dict[str, float]:
    hits = [o for o in outcomes if o.hit]
    known = [o for o in outcomes if o.known]
    unknown = [o for o in outcomes if not o.known]
    return {
        "precision": sum(o.correct for o in hits) / len(hits) if hits else 1.0,
        "hit_rate": sum(o.hit for o in known) / len(known) if known else 0.0,
        "correct_hit_rate": sum(o.hit and o.correct for o in known) / len(known) if known else 0.0,
        "unknown_false_hit_rate": sum(o.hit for o in unknown) / len(unknown) if unknown else 0.0,
        "lookup_p50_ms": float(np.percentile(latencies_ms, 50)),
        "lookup_p99_ms": float(np.percentile(latencies_ms, 99)),
        "hits": len(hits),
        "questions": len(outcomes),
    }


def suggestion_summary(outcomes: list[Outcome]) -> dict[str, float]:
    known = [o for o in outcomes if o.known]
    missed = [o for o in known if not o.hit]
    unknown = [o for o in outcomes if not o.known]
    return {
        "suggestion_recall_at_3": _share(missed, lambda o: o.category in o.suggested),
        "suggestions_shown_on_unknown": _share(unknown, lambda o: bool(o.suggested)),
        "resolved_with_one_click": _share(
            known, lambda o: (o.hit and o.correct) or (not o.hit and o.category in o.suggested)
        ),
        "plain_top3_recall": _share(missed, lambda o: o.category in o.plain_top3),
        "plain_top3_shown_on_unknown": _share(unknown, lambda o: bool(o.plain_top3)),
        "known_misses": len(missed),
    }


def floor_curve(outcomes: list[Outcome], floors: list[float]) -> list[tuple[float, float, float]]:
    """(floor, recall at 3 on known misses, share of unknown questions shown any) had the
    suggestion floor been f, the ranking and the guards kept."""
    missed = [o for o in outcomes if o.known and not o.hit]
    unknown = [o for o in outcomes if not o.known]
    points = []
    for floor in floors:

        def shown(o: Outcome, floor: float = floor) -> list[str]:
            return [c for c, score in o.ranked if score >= floor][:SUGGESTIONS_SHOWN]

        recall = _share(missed, lambda o: o.category in shown(o))
        points.append((floor, recall, _share(unknown, lambda o: bool(shown(o)))))
    return points


def _share(outcomes: list[Outcome], test: Callable[[Outcome], bool]) -> float:
    return sum(test(o) for o in outcomes) / len(outcomes) if outcomes else 0.0


def curve(outcomes: list[Outcome], thresholds: list[float]) -> list[tuple[float, float, float]]:
    """(threshold, precision, hit rate on known) had the threshold been t, guards kept."""
    eligible = [o for o in outcomes if o.curve_eligible]
    known_total = sum(o.known for o in outcomes) or 1
    points = []
    for t in thresholds:
        served = [o for o in eligible if o.confidence >= t]
        precision = sum(o.correct for o in served) / len(served) if served else 1.0
        points.append((t, precision, sum(o.known for o in served) / known_total))
    return points


def outcome_of(
    cache: SemanticCache, row: Labelled, faq_category: dict[int, str], known: bool
) -> tuple[Outcome, float]:
    """The question's lookup and suggestions, and the lookup's wall-clock milliseconds."""
    began = time.perf_counter()
    result = cache.lookup(SITE, row.text)
    latency_ms = (time.perf_counter() - began) * 1000.0
    faq_id = result.faq_id if result.hit else result.candidate_faq_id
    correct = faq_id is not None and faq_category.get(faq_id) == row.category
    eligible = result.hit or result.reason == "low_confidence"
    served = faq_category.get(result.faq_id) if result.hit and result.faq_id is not None else None
    shown = cache.suggest(SITE, row.text, result, k=SUGGESTIONS_SHOWN)
    ranked: list[Suggestion] = []
    index = cache.replica.find_index(SITE)
    if not result.hit and result.reason in SUGGESTIBLE_MISSES and index is not None:
        vector = cache.embeddings.embed(row.text)  # the lookup's, from the encoder's LRU
        ranked = ranked_faqs(index.snapshot(), vector, RERANK_CANDIDATES)
        if above_floor(ranked, cache.config.suggestion_floor, SUGGESTIONS_SHOWN) != shown:
            # The curve would then describe something other than what the chat shows.
            raise RuntimeError(f"suggestions of {row.text!r} differ from the ranking's")
    plain = [] if result.hit else cache.nearest_faqs(SITE, row.text, k=SUGGESTIONS_SHOWN)
    outcome = Outcome(
        row.text,
        row.category,
        served,
        known,
        result.hit,
        correct,
        result.confidence,
        eligible,
        suggested=tuple(faq_category[s.faq_id] for s in shown),
        ranked=tuple((faq_category[s.faq_id], s.score) for s in ranked),
        plain_top3=tuple(faq_category[s.faq_id] for s in plain),
    )
    return outcome, latency_ms


def audit_wrong_hits(outcomes: list[Outcome], train: list[Labelled], encoder: Encoder) -> int:
    """Print each wrong hit with the categories of its nearest training questions; return how
    many of them the training labels side with (most neighbours carry the served category)."""
    wrong = [o for o in outcomes if o.hit and not o.correct]
    print(f"wrong hits: {len(wrong)}")
    if not wrong:
        return 0
    train_vectors = encode_all(encoder, [r.text for r in train])
    sims = encoder.encode([o.question for o in wrong]) @ train_vectors.T
    agreeing = 0
    for outcome, row in zip(wrong, sims, strict=True):
        nearest = np.argsort(-row)[:AUDIT_NEIGHBOURS]
        counts = Counter(train[i].category for i in nearest)
        agrees = counts[outcome.served_category or ""] * 2 > AUDIT_NEIGHBOURS
        agreeing += agrees
        label = outcome.category + ("" if outcome.known else ", no FAQ")
        print(
            f"  {outcome.question!r} [{label}] served {outcome.served_category} "
            f"(confidence {outcome.confidence:.4f}); {AUDIT_NEIGHBOURS} nearest training "
            f"questions: {dict(counts.most_common())}"
            + ("  <- training labels agree with the answer served" if agrees else "")
        )
    return agreeing


def run(args: argparse.Namespace, redis_url: str) -> dict[str, object]:
    train = read_labelled(Path(args.train))
    test = read_labelled(Path(args.test))
    site = simulate_site(train, args.variants, args.unknown_intents, args.seed)
    threshold = args.threshold
    if threshold is None:
        threshold = SHIPPED_MIN_CONFIDENCE if args.rule == RULE_CALIBRATED else 0.8
    config = CacheConfig(
        min_confidence=threshold,
        rule=args.rule,
        key_prefix=f"eval-{uuid.uuid4().hex[:8]}",
        follow_changes=False,
        near_miss_min_confidence=1.1,  # keep the evaluation from filling near-miss lists
    )
    encoder = load_encoder(args.model, Path(args.onnx_cache))
    cache = SemanticCache(redis_url, encoder, config)
    try:
        started = time.perf_counter()
        for faq in site.faqs:
            cache.sync_faq(
                SITE, faq.faq_id, 1, faq.phrasings[0], faq.phrasings[1:], faq.answer, True
            )
        sync_s = time.perf_counter() - started
        faq_category = {faq.faq_id: faq.category for faq in site.faqs}
        outcomes: list[Outcome] = []
        latencies: list[float] = []
        for row in test:
            outcome, latency_ms = outcome_of(
                cache, row, faq_category, row.category not in site.unknown
            )
            outcomes.append(outcome)
            latencies.append(latency_ms)
    finally:
        keys = list(cache.redis.scan_iter(match=f"{config.key_prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            cache.redis.delete(*keys[start : start + 1000])
        cache.close()

    summary = summarize(outcomes, latencies)
    suggested = suggestion_summary(outcomes)
    print(
        f"rule={args.rule} threshold={threshold} K={args.variants} U={args.unknown_intents} "
        f"seed={args.seed}: {len(site.faqs)} FAQs synced in {sync_s:.1f} s, "
        f"{len(test)} test questions"
    )
    print(
        f"precision {summary['precision']:.4f}  hit rate (known) {summary['hit_rate']:.4f}  "
        f"correct hit rate {summary['correct_hit_rate']:.4f}  "
        f"unknown false-hit rate {summary['unknown_false_hit_rate']:.4f}"
    )
    print(f"lookup p50 {summary['lookup_p50_ms']:.2f} ms  p99 {summary['lookup_p99_ms']:.2f} ms")
    floor = config.suggestion_floor
    print(
        f"suggestions (floor {floor}): recall at 3 {suggested['suggestion_recall_at_3']:.4f} "
        f"of {suggested['known_misses']} known misses, shown on unknown "
        f"{suggested['suggestions_shown_on_unknown']:.4f}, resolved with one click "
        f"{suggested['resolved_with_one_click']:.4f}; plain top-3: recall "
        f"{suggested['plain_top3_recall']:.4f}, shown on unknown "
        f"{suggested['plain_top3_shown_on_unknown']:.4f}"
    )
    print("suggestion floor  recall_at_3  shown_on_unknown")
    for f, recall, on_unknown in floor_curve(outcomes, FLOOR_GRID):
        print(f"{f:16.2f}  {recall:11.4f}  {on_unknown:16.4f}")
    grid = (
        [0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995]
        if args.rule == RULE_CALIBRATED
        else [0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    )
    print("threshold  precision  hit_rate")
    for t, precision, hit_rate in curve(outcomes, grid):
        print(f"{t:9.3f}  {precision:9.4f}  {hit_rate:8.4f}")
    audit: dict[str, int] = {}
    if args.audit:
        agreeing = audit_wrong_hits(outcomes, train, encoder)
        audit = {"wrong_hits_agreeing_with_training_labels": agreeing}
    return {
        **summary,
        **suggested,
        "suggestion_floor": floor,
        **audit,
        "rule": args.rule,
        "threshold": threshold,
        "variants": args.variants,
        "unknown_intents": args.unknown_intents,
        "seed": args.seed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--variants", type=int, required=True, help="phrasings per FAQ (K)")
    parser.add_argument("--unknown-intents", type=int, required=True, help="categories left out")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--rule", choices=[RULE_CALIBRATED, RULE_COSINE], default=RULE_CALIBRATED)
    parser.add_argument("--threshold", type=float, default=None, help="default: shipped")
    parser.add_argument("--redis-url", default=None, help="default: a throwaway redis-server")
    parser.add_argument("--model", default="", help="model directory; default: bundled MiniLM")
    parser.add_argument("--onnx-cache", default=str(DEFAULT_ONNX_CACHE))
    parser.add_argument(
        "--audit", action="store_true", help="list wrong hits with their training-set neighbours"
    )
    args = parser.parse_args(argv)
    if args.redis_url:
        result = run(args, args.redis_url)
    else:
        # The project's embedded redis-server helper (plain Python, no Django).
        from embedded_redis import throwaway_redis

        with throwaway_redis(prefix="eval-redis-") as redis_url:
            result = run(args, redis_url)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
