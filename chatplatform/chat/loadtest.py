"""Load benchmark of the realtime chat over real websockets.

    python -m chatplatform.chat.loadtest --start                 # start a private platform too
    python -m chatplatform.chat.loadtest --url ws://127.0.0.1:8000/ws/chat/   # a running one
    python -m chatplatform.chat.loadtest --start --web-processes 2   # scale-out on one machine
    python -m chatplatform.chat.loadtest --url ws://HOST:8001/ws/chat/,ws://HOST:8002/ws/chat/

With several URLs (several web processes of one deployment) the customers are split over them
in turn, as a load balancer would; the report counts the customers each URL got.

Two phases, both client-side timings (message sent -> frame received), run in this order:

1. Miss-rate sweep: novel questions only, sent open-loop (Poisson arrivals) at increasing
   rates on an otherwise idle platform; reports the model's time to first token as the client
   sees it per rate, and the highest rate whose p99 stays within the SLA with no errors.
2. Concurrency: N simulated customers, each on its own socket and conversation, ask M questions
   one after another with a think time, from a realistic mix: frequent FAQ phrasings (canonical
   questions and their stored variants), paraphrases not stored anywhere (held out: the FAQ
   question reworded by fixed templates) and novel questions no FAQ answers. Reports per
   source p50/p95/p99 of time to first text and total time, SLA compliance, hit rate, errors
   and lost messages (no ack, or no final frame within 90 s).

The questions come from the site's FAQs in the platform's database (the demo site by default).
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

# Per-address limits protect a real site; the benchmark's customers all come from 127.0.0.1.
BENCH_LIMITS_ENV = {
    "CHAT_CONNECTIONS_PER_IP": "100000",
    "CHAT_MESSAGES_PER_MINUTE_PER_IP": "1000000",
    "CHAT_MESSAGES_PER_MINUTE_PER_CONV": "1000",
    "CHAT_FRAMES_PER_MINUTE_PER_IP": "1000000",  # every socket's hello counts here
}
# Past this a message counts as lost: longer than the server's own answer timeout (60 s), after
# which the server reports `answer_timeout` (an answer, of sorts: the customer is told).
MESSAGE_TIMEOUT_S = 90.0
CONNECT_BATCH = 50  # sockets opened at once: a burst of 200 SYNs overflows a small backlog
PARAPHRASE_TEMPLATES = (
    "hi there, {q}",
    "quick question: {q}",
    "{q} thanks in advance",
    "could you tell me: {q}",
    "hello! {q} cheers",
)
NOVEL_TEMPLATES = (
    "Do you sell {item} in {color}?",
    "Can I get a {item} engraved with my {thing}?",
    "Is the {color} {item} suitable for {activity}?",
    "Will the {item} survive {activity} in {place}?",
    "Can you recommend a {item} for {activity} with my {thing}?",
)
NOVEL_WORDS = {
    "item": ["kayak paddle", "headlamp", "sleeping bag", "trekking pole", "camp stove", "bivvy"],
    "color": ["teal", "burgundy", "olive", "mustard", "charcoal", "coral"],
    "thing": ["dog's name", "initials", "club logo", "wedding date", "team motto"],
    "activity": ["ice climbing", "desert trekking", "canyoning", "winter camping", "packrafting"],
    "place": ["Patagonia", "the Alps", "Iceland", "Scotland", "the Atacama"],
}


@dataclass
class Sample:
    kind: str  # what we asked: faq | paraphrase | novel
    source: str = ""  # what answered: faq | cache | llm | error | lost
    first_ms: float | None = None  # first text of any kind (answer, holding reply or token)
    model_ttft_ms: float | None = None  # first model token (llm answers only)
    total_ms: float | None = None
    holding: bool = False
    error: str = ""
    server_ms: float | None = None  # the server's own figure for a whole answer (ttft_ms)


@dataclass
class Questions:
    faq: list[str]
    paraphrase: list[str]
    counter: itertools.count = field(default_factory=itertools.count)

    def novel(self, rng: random.Random) -> str:
        template = rng.choice(NOVEL_TEMPLATES)
        words = {key: rng.choice(values) for key, values in NOVEL_WORDS.items()}
        # A serial number keeps each novel question unique: none can hit the cache.
        return f"{template.format(**words)} (order {next(self.counter)})"

    def pick(self, kind: str, rng: random.Random) -> str:
        if kind == "faq":
            return rng.choice(self.faq)
        if kind == "paraphrase":
            return rng.choice(self.paraphrase)
        return self.novel(rng)


def load_questions(site_key: str | None) -> tuple[str, Questions, int, str | None]:
    """The site's widget key, question pools from its FAQs, its SLA (ms) and first origin."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatplatform.settings.local")
    django.setup()
    from chatplatform.faq.demo_data import DEMO_SITE_NAME
    from chatplatform.faq.models import FAQ
    from chatplatform.tenants.models import Site

    sites = Site.objects.filter(is_active=True)
    site = sites.get(widget_key=site_key) if site_key else sites.get(name=DEMO_SITE_NAME)
    faq_phrasings: list[str] = []
    paraphrases: list[str] = []
    for faq in FAQ.objects.filter(site=site, is_active=True).prefetch_related("variants"):
        faq_phrasings.extend(faq.phrasings())
        question = faq.question[0].lower() + faq.question[1:]
        paraphrases.extend(t.format(q=question) for t in PARAPHRASE_TEMPLATES)
    if not faq_phrasings:
        raise SystemExit(f"site {site.name!r} has no active FAQs to ask about")
    questions = Questions(faq=faq_phrasings, paraphrase=paraphrases)
    origin = site.allowed_origins[0] if site.allowed_origins else None
    return site.widget_key, questions, site.sla_ms, origin


class Customer:
    """One simulated customer: a socket, a conversation, one question at a time."""

    def __init__(self, url: str, origin: str, site_key: str) -> None:
        self.url, self.origin, self.site_key = url, origin, site_key
        self.socket: Any = None
        self.serial = itertools.count()

    async def connect(self) -> None:
        from websockets.asyncio.client import connect

        self.socket = await connect(self.url, origin=self.origin, open_timeout=30, max_queue=None)
        await self.socket.send(json.dumps({"type": "hello", "v": 1, "site_key": self.site_key}))
        frame = json.loads(await asyncio.wait_for(self.socket.recv(), 30))
        if frame["type"] != "welcome":
            raise RuntimeError(f"hello refused: {frame}")

    async def ask(self, kind: str, text: str) -> Sample:
        sample = Sample(kind=kind)
        cid = f"m{next(self.serial)}"
        sent = time.perf_counter()
        await self.socket.send(
            json.dumps({"type": "message", "client_message_id": cid, "text": text})
        )
        deadline = sent + MESSAGE_TIMEOUT_S
        message_id: str | None = None
        try:
            while True:
                raw = await asyncio.wait_for(self.socket.recv(), deadline - time.perf_counter())
                now_ms = (time.perf_counter() - sent) * 1000.0
                frame = json.loads(raw)
                kind_ = frame["type"]
                if kind_ == "ack" and frame["client_message_id"] == cid:
                    message_id = frame["message_id"]
                elif kind_ == "error" and frame.get("ref") == cid:
                    sample.source, sample.error = "error", frame["code"]
                    return sample
                elif message_id is None or frame.get("reply_to") != message_id:
                    continue  # a late frame about an earlier question
                elif kind_ == "answer":
                    sample.source = frame["source"]
                    sample.server_ms = frame.get("ttft_ms")
                    sample.first_ms = sample.first_ms or now_ms
                    sample.total_ms = now_ms
                    return sample
                elif kind_ == "holding":
                    sample.holding = True
                    sample.first_ms = sample.first_ms or now_ms
                elif kind_ == "answer.delta" and sample.model_ttft_ms is None:
                    sample.model_ttft_ms = now_ms
                    sample.first_ms = sample.first_ms or now_ms
                elif kind_ == "answer.end":
                    sample.source = "llm"
                    sample.model_ttft_ms = sample.model_ttft_ms or now_ms
                    sample.first_ms = sample.first_ms or now_ms
                    sample.total_ms = now_ms
                    return sample
                elif kind_ == "error":
                    sample.source, sample.error = "error", frame["code"]
                    return sample
        except TimeoutError:
            sample.source = "lost"
            sample.error = "no answer" if message_id else "no ack"
            return sample

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0-100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100.0 * len(ordered) + 0.5)))
    return round(ordered[rank - 1], 1)


def summarize(samples: list[Sample], sla_ms: int) -> dict[str, Any]:
    by_source: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_source[sample.source].append(sample)
    per_source = {}
    for source, group in sorted(by_source.items()):
        firsts = [s.first_ms for s in group if s.first_ms is not None]
        totals = [s.total_ms for s in group if s.total_ms is not None]
        ttfts = [s.model_ttft_ms for s in group if s.model_ttft_ms is not None]
        per_source[source] = {
            "count": len(group),
            "first_text_ms": {f"p{q}": percentile(firsts, q) for q in (50, 95, 99)},
            "total_ms": {f"p{q}": percentile(totals, q) for q in (50, 95, 99)},
        }
        servers = [s.server_ms for s in group if s.server_ms is not None]
        if servers:
            per_source[source]["server_ms"] = {
                f"p{q}": percentile(servers, q) for q in (50, 95, 99)
            }
        if ttfts:
            per_source[source]["model_ttft_ms"] = {
                f"p{q}": percentile(ttfts, q) for q in (50, 95, 99)
            }
            per_source[source]["holding_replies"] = sum(s.holding for s in group)
    answered = [s for s in samples if s.source not in ("error", "lost")]
    hits = [s for s in answered if s.source in ("faq", "cache")]
    within = [s for s in answered if s.first_ms is not None and s.first_ms <= sla_ms]
    kinds = defaultdict(lambda: [0, 0])
    for s in samples:
        kinds[s.kind][0] += 1
        kinds[s.kind][1] += s.source in ("faq", "cache")
    return {
        "messages": len(samples),
        "per_source": per_source,
        "hit_rate": round(len(hits) / len(samples), 3) if samples else None,
        "hit_rate_by_kind": {k: round(h / n, 3) for k, (n, h) in sorted(kinds.items())},
        "sla_first_text_compliance": round(len(within) / len(answered), 3) if answered else None,
        "errors": {
            code: sum(1 for s in samples if s.error == code)
            for code in sorted({s.error for s in samples if s.error})
        },
        "lost": sum(1 for s in samples if s.source == "lost"),
    }


def split_over(urls: list[str], count: int) -> list[str]:
    """The URL of each of `count` customers: the web processes in turn."""
    return [urls[i % len(urls)] for i in range(count)]


def clients_per_url(customers: list[Customer]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for customer in customers:
        counts[customer.url] += 1
    return dict(counts)


async def concurrency_phase(
    urls: list[str], origin: str, site_key: str, questions: Questions, args: argparse.Namespace
) -> tuple[list[Sample], dict[str, int]]:
    rng = random.Random(args.seed)
    kinds = ["faq", "paraphrase", "novel"]
    weights = [args.faq_share, args.paraphrase_share, 1 - args.faq_share - args.paraphrase_share]
    customers = [Customer(url, origin, site_key) for url in split_over(urls, args.conversations)]
    for start in range(0, len(customers), CONNECT_BATCH):
        await asyncio.gather(*(c.connect() for c in customers[start : start + CONNECT_BATCH]))
    samples: list[Sample] = []

    async def run(customer: Customer, seed: int) -> None:
        own = random.Random(seed)
        await asyncio.sleep(own.uniform(0, args.think_ms / 1000.0))  # stagger the first asks
        for _ in range(args.messages):
            kind = own.choices(kinds, weights)[0]
            samples.append(await customer.ask(kind, questions.pick(kind, own)))
            await asyncio.sleep(own.expovariate(1000.0 / args.think_ms))

    started = time.perf_counter()
    await asyncio.gather(*(run(c, rng.randrange(1 << 30)) for c in customers))
    elapsed = time.perf_counter() - started
    for customer in customers:
        await customer.close()
    rate = len(samples) / elapsed
    print(f"concurrency phase: {len(samples)} messages in {elapsed:.1f} s ({rate:.1f} msg/s)")
    return samples, clients_per_url(customers)


async def rate_phase(
    urls: list[str], origin: str, site_key: str, questions: Questions, rate: float, seconds: float
) -> list[Sample]:
    """Novel questions at `rate` per second (Poisson), each from a fresh idle conversation."""
    rng = random.Random(int(rate * 1000))
    count = max(1, round(rate * seconds))
    customers = [Customer(url, origin, site_key) for url in split_over(urls, count)]
    for start in range(0, count, CONNECT_BATCH):
        await asyncio.gather(*(c.connect() for c in customers[start : start + CONNECT_BATCH]))
    tasks = []
    for customer in customers:
        tasks.append(asyncio.create_task(customer.ask("novel", questions.novel(rng))))
        await asyncio.sleep(rng.expovariate(rate))
    samples = list(await asyncio.gather(*tasks))
    for customer in customers:
        await customer.close()
    return samples


def start_platform(web_processes: int = 1) -> tuple[Any, list[str]]:
    """A private platform (own Redis, database and port) with the benchmark's limits; with
    `web_processes` > 1, more web processes (chatplatform.serve) beside the run command's."""
    from embedded_redis import free_port

    os.environ.update(BENCH_LIMITS_ENV)
    os.environ.setdefault("VAR_DIR", os.path.abspath("var/loadtest"))
    os.environ.setdefault("PORT", str(free_port()))
    os.environ.setdefault("EMBEDDED_REDIS_PORT", str(free_port()))
    os.environ.setdefault("DEBUG", "false")
    os.environ.pop("REDIS_URL", None)
    from chatplatform import run

    platform = run.Platform()
    platform.start()
    urls = [f"ws://{run.HOST}:{run.PORT}/ws/chat/"]
    for number in range(2, web_processes + 1):
        port = free_port()
        platform.supervise(f"web-{number}", [sys.executable, "-m", "chatplatform.serve",
                                         "-b", run.HOST, "-p", str(port),
                                         "chatplatform.asgi:application"])  # fmt: skip
        urls.append(f"ws://{run.HOST}:{port}/ws/chat/")
    platform.wait_healthy()
    return platform, urls


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--start", action="store_true", help="start a private platform")
    parser.add_argument(
        "--url",
        default="ws://127.0.0.1:8000/ws/chat/",
        help="websocket URL; several, comma-separated: customers split over them in turn",
    )
    parser.add_argument(
        "--web-processes", type=int, default=1, help="with --start: web processes to start"
    )
    parser.add_argument("--origin", default=None, help="default: the site's first origin")
    parser.add_argument("--site-key", default=None, help="default: the demo site")
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--messages", type=int, default=5, help="per conversation")
    parser.add_argument("--think-ms", type=float, default=2000.0, help="mean pause between asks")
    parser.add_argument("--faq-share", type=float, default=0.5)
    parser.add_argument("--paraphrase-share", type=float, default=0.3)
    parser.add_argument("--rates", default="0.5,1,2,4", help="miss-rate sweep, msg/s ('' skips)")
    parser.add_argument("--rate-seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


async def benchmark(args: argparse.Namespace, urls: list[str]) -> dict[str, Any]:
    site_key, questions, sla_ms, site_origin = await asyncio.to_thread(
        load_questions, args.site_key
    )
    # A page of the site: the benchmark's sockets present one of its allowed origins.
    host = urls[0].split("://", 1)[1].split("/", 1)[0]
    origin = args.origin or site_origin or "http://" + host
    print(f"site SLA {sla_ms} ms; {len(questions.faq)} FAQ phrasings; warming up...")
    for url in urls:  # every web process loads its cache and opens its connections
        warm = Customer(url, origin, site_key)
        await warm.connect()
        for kind in ("faq", "paraphrase", "novel", "novel"):
            await warm.ask(kind, questions.pick(kind, random.Random(1)))
        await warm.close()
    report: dict[str, Any] = {
        "sla_ms": sla_ms,
        "conversations": args.conversations,
        "web_processes": len(urls),
    }
    # The sweep first, on an idle model: the mixed phase leaves no backlog behind to skew it.
    sweep = []
    best: float | None = None
    for rate in (float(r) for r in args.rates.split(",") if r.strip()):
        figures = summarize(
            await rate_phase(urls, origin, site_key, questions, rate, args.rate_seconds), sla_ms
        )
        llm = figures["per_source"].get("llm", {})
        p99 = llm.get("model_ttft_ms", {}).get("p99")
        row = {"rate_per_s": rate, "model_ttft_ms": llm.get("model_ttft_ms"),
               "total_ms": llm.get("total_ms"), "answered": llm.get("count", 0),
               "holding_replies": llm.get("holding_replies", 0), "errors": figures["errors"],
               "lost": figures["lost"]}  # fmt: skip
        print(f"miss rate {rate}/s: {json.dumps(row)}")
        sweep.append(row)
        if p99 is not None and p99 <= sla_ms and not figures["lost"] and not figures["errors"]:
            best = rate
    report["miss_rate_sweep"] = sweep
    report["highest_miss_rate_within_sla_per_s"] = best
    samples, per_url = await concurrency_phase(urls, origin, site_key, questions, args)
    report["concurrency"] = summarize(samples, sla_ms)
    report["concurrency"]["clients_per_url"] = per_url
    print(json.dumps(report["concurrency"], indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    platform = None
    urls = [url.strip() for url in args.url.split(",") if url.strip()]
    if args.start:
        platform, urls = start_platform(args.web_processes)
    try:
        report = asyncio.run(benchmark(args, urls))
    finally:
        if platform is not None:
            platform.stop()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
