"""Dashboard query benchmark: generate N messages into a separate database, time each query.

    python -m chatplatform.dashboards.benchmark --database-url sqlite:///var/chatbench.sqlite3
    python -m chatplatform.dashboards.benchmark \\
        --database-url postgres://postgres@127.0.0.1:5432/chatbench

The database given must be a scratch one: the command migrates it and, unless it already holds
the generated data set (same size and seed), empties the conversation tables and fills them.
Data: `--sites` sites, messages spread uniformly over `--days` days, answer sources, latencies,
feedback and cost drawn from fixed distributions (seeded). Each dashboard query is then timed
for a few scopes (one site x 30 days is what a business owner opens; all sites x 90 days is the
worst case) and the figures printed as a table and, last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

TARGET_MS = 500.0  # the bound for each dashboard query
END = datetime(2026, 4, 1, tzinfo=UTC)  # fixed, so runs are comparable
CHUNK = 20_000  # rows per bulk insert: big enough to amortise, small enough for memory
QUESTIONS = [
    "How do I reset my password?",
    "Where is my parcel?",
    "Can I pay with a voucher?",
    "Do you ship to Norway?",
    "What are your opening hours?",
    "How do I return an item?",
    "My card was charged twice",
    "Can I change my delivery address?",
]
# Answer paths of one customer question and how often they happen (sum 1.0).
PATHS = [
    (("faq",), 0.35),
    (("cache",), 0.15),
    (("llm",), 0.40),
    (("fallback", "llm"), 0.07),  # a holding reply, then the model's answer
    (("agent",), 0.03),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="a scratch database")
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--sites", type=int, default=5)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per query")
    return parser.parse_args()


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatplatform.settings.local")
    import django

    django.setup()


def draw_answer(rng: random.Random, source: str) -> dict[str, Any]:
    """Latency, SLA outcome, cost and feedback of one answer, by source."""
    if source in ("faq", "cache"):
        ttft = rng.lognormvariate(2.5, 0.4)  # ~12 ms
        total = ttft
    elif source == "fallback":
        ttft = total = rng.uniform(200, 290)
    elif source == "llm":
        ttft = rng.lognormvariate(5.3, 0.5)  # ~200 ms, some over the 300 ms SLA
        total = ttft + rng.uniform(500, 4000)
    else:  # a human agent
        return {"ttft_ms": None, "total_ms": rng.uniform(30_000, 600_000), "sla_met": None}
    figures: dict[str, Any] = {"ttft_ms": ttft, "total_ms": total, "sla_met": ttft <= 300}
    if source == "llm":
        figures.update(
            gpu_seconds=rng.uniform(0.3, 3.0),
            prompt_tokens=rng.randint(200, 900),
            completion_tokens=rng.randint(20, 300),
        )
    if rng.random() < 0.1:
        figures["feedback"] = 1 if rng.random() < 0.8 else -1
    return figures


def generate(total: int, sites: list[int], days: int, seed: int) -> None:
    """Insert ~`total` messages (questions + answers) in conversations of 3 questions.

    Conversations are generated in time order, as a live system appends them: the physical
    row order then matches production, which matters for range scans.
    """
    rng = random.Random(seed)
    paths, weights = zip(*PATHS, strict=True)
    # ~2.07 messages per question (answers, sometimes two), 3 questions per conversation.
    n_conversations = max(1, round(total / 6.2))
    offsets = sorted((rng.uniform(0, days * 86_400) for _ in range(n_conversations)), reverse=True)
    conversations: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    made = 0
    for offset in offsets:
        if made + len(messages) >= total:
            break
        site_id = rng.choice(sites)
        started = END - timedelta(seconds=offset)
        conv_id = uuid.uuid4()
        conversations.append(
            {
                "id": conv_id,
                "site_id": site_id,
                "visitor_id": "bench",
                "started_at": started,
                "last_activity_at": started,
                "handoff_requested_at": started if rng.random() < 0.02 else None,
            }
        )
        at = started
        for _ in range(3):
            question_id = uuid.uuid4()
            common = {"site_id": site_id, "conversation_id": conv_id, "received_at": at}
            messages.append(
                {"id": question_id, "role": "customer", "text": rng.choice(QUESTIONS), **common}
            )
            for source in rng.choices(paths, weights)[0]:
                messages.append(
                    {
                        "id": uuid.uuid4(),
                        "role": "agent" if source == "agent" else "assistant",
                        "text": "answer",
                        "source": source,
                        "in_reply_to_id": question_id,
                        **common,
                        **draw_answer(rng, source),
                    }
                )
            at += timedelta(seconds=rng.uniform(5, 120))
        if len(messages) >= CHUNK:
            made += _flush(conversations, messages)
    made += _flush(conversations, messages)
    print(f"inserted {made:,} messages")


def _flush(conversations: list[dict[str, Any]], messages: list[dict[str, Any]]) -> int:
    from django.db import transaction

    from chatplatform.conversations.models import Conversation, Message

    count = len(messages)
    with transaction.atomic():
        insert_rows(Conversation, conversations)
        insert_rows(Message, messages)
    conversations.clear()
    messages.clear()
    return count


def insert_rows(model: Any, rows: list[dict[str, Any]]) -> None:
    """Plain executemany of dicts keyed by column attname; missing columns get the field's
    default. Bypasses model instances: Django's per-value preparation is ~20x slower here."""
    from django.db import connection

    fields = model._meta.concrete_fields
    defaults = {
        f.attname: f.get_db_prep_save(f.get_default(), connection)
        for f in fields
        if f.attname not in ("id",)
    }
    sqlite = connection.vendor == "sqlite"
    adapt_dt = connection.ops.adapt_datetimefield_value

    def db_value(value: Any) -> Any:
        if isinstance(value, uuid.UUID):
            return value.hex if sqlite else value  # Django stores UUIDs as char(32) in SQLite
        if isinstance(value, datetime):
            return adapt_dt(value)
        return value

    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {model._meta.db_table} ({columns}) VALUES ({placeholders})"
    values = [
        tuple(db_value(row[f.attname]) if f.attname in row else defaults[f.attname] for f in fields)
        for row in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, values)


def prepare(args: argparse.Namespace) -> tuple[list[Any], float | None]:
    """Migrate, and fill unless the same data set is there. Returns sites and load seconds."""
    from django.core.management import call_command

    from chatplatform.conversations.models import Conversation, Message
    from chatplatform.tenants.models import Site

    call_command("migrate", verbosity=0)
    # The site names record how the data was generated, so a rerun can reuse it.
    names = [f"bench-{args.messages}-{args.days}-{args.seed}-{n}" for n in range(args.sites)]
    sites = list(Site.objects.filter(name__in=names).order_by("name"))
    if len(sites) == args.sites and Message.objects.exists():
        _analyze()  # migrate may just have added indexes
        return sites, None  # already generated: reuse
    Message.objects.all().delete()
    Conversation.objects.all().delete()
    Site.objects.filter(name__startswith="bench-").delete()
    # bulk_create sends no post_save: the cache's site signal needs no Redis for scratch data.
    Site.objects.bulk_create([Site(name=name) for name in names])
    sites = list(Site.objects.filter(name__in=names).order_by("name"))
    started = time.perf_counter()
    generate(args.messages, [site.pk for site in sites], args.days, args.seed)
    _analyze()
    return sites, time.perf_counter() - started


def _analyze() -> None:
    """Fresh planner statistics, as a production database would have after autovacuum."""
    from django.db import connection

    with connection.cursor() as cursor:
        # PostgreSQL's index-only scans also need the visibility map that VACUUM builds.
        cursor.execute("VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE")


def timed(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    fn()  # warm-up: first run pays for cold caches and query planning
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - started) * 1000)
    return {"median_ms": statistics.median(runs), "max_ms": max(runs)}


def run_queries(sites: list[Any], repeat: int) -> list[dict[str, Any]]:
    from django.conf import settings

    from chatplatform.dashboards import gaps, queries, report, rollups
    from chatplatform.dashboards.models import DailySiteRollup, DailySourceRollup

    scopes = {
        "1 site x 30 days": ([sites[0].pk], 30),
        "1 site x 90 days": ([sites[0].pk], 90),
        f"{len(sites)} sites x 30 days": ([s.pk for s in sites], 30),
        f"{len(sites)} sites x 90 days": ([s.pk for s in sites], 90),
    }
    results = []
    for label, (site_ids, days) in scopes.items():
        scope = queries.Scope(site_ids, END - timedelta(days=days), END)
        # What a request would count live if these were the most recent days (today and
        # the SETTLE_DAYS before it).
        recent = queries.Scope(site_ids, END - timedelta(days=rollups.SETTLE_DAYS + 1), END)
        in_scope = queries.messages_in(scope).count()
        DailySiteRollup.objects.all().delete()
        DailySourceRollup.objects.all().delete()
        started = time.perf_counter()
        rollups.ensure(scope)
        cold_ms = (time.perf_counter() - started) * 1000
        results.append(
            {
                "scope": label,
                "messages_in_scope": in_scope,
                "query": "rollups: first computation (once)",
                "median_ms": cold_ms,
                "max_ms": cold_ms,
            }
        )
        checks: dict[str, Callable[[], Any]] = {
            "daily figures from rollups": lambda s=scope: rollups.stored_figures(s),
            "live: message_groups, last 3 days": lambda s=recent: queries.message_groups(s),
            "live: question_outcomes_by_day, last 3 days": lambda s=recent: (
                queries.question_outcomes_by_day(s)
            ),
            "live: conversations_by_day, last 3 d": lambda s=recent: queries.conversations_by_day(
                s
            ),
            "latency values from rollups + live": lambda s=scope: report.latency_values(s),
            "recent_misses (gaps SQL)": lambda s=scope: gaps.recent_misses(s),
            "whole page, rollups warm": lambda s=scope: report.build_dashboard(
                s, settings.GPU_COST_PER_HOUR
            ),
        }
        for name, fn in checks.items():
            figures = timed(fn, repeat)
            row = {"scope": label, "messages_in_scope": in_scope, "query": name}
            results.append({**row, **figures})
    return results


def main() -> None:
    args = parse_args()
    setup_django(args.database_url)
    from django.db import connection

    sites, load_s = prepare(args)
    results = run_queries(sites, args.repeat)
    version = connection.Database.sqlite_version if connection.vendor == "sqlite" else None
    vendor = f"{connection.vendor} {version or connection.pg_version}"
    print(f"database: {vendor}; machine: {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"generated {args.messages:,} messages: " + (f"{load_s:.0f} s" if load_s else "reused"))
    print(f"{'scope':<20} {'in scope':>9}  {'query':<40} {'median ms':>9} {'max ms':>8}")
    for row in results:
        flag = "" if row["max_ms"] < TARGET_MS else "  OVER 500 ms"
        print(
            f"{row['scope']:<20} {row['messages_in_scope']:>9,}  {row['query']:<40} "
            f"{row['median_ms']:>9.1f} {row['max_ms']:>8.1f}{flag}"
        )
    print(
        json.dumps(
            {"database": vendor, "messages": args.messages, "load_s": load_s, "results": results}
        )
    )


if __name__ == "__main__":
    main()
