"""The engines with the real offline models, in process: streaming, EDF, flags, cancellation."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inference.cb_engine import ContinuousBatchingEngine
from inference.contracts import InferenceRequest
from inference.engine import Engine, EngineLimits, Ticket
from inference.loading import ModelSettings, load_model_and_tokenizer
from inference.prompt import FaqEntry, build_messages, render_prompt
from inference.scheduling import LatePolicy
from inference.static_engine import StaticBatchEngine

pytestmark = pytest.mark.slow

# Tests ask for short answers to stay fast on 2 shared cores; the cap is higher so the
# coalescing test can stream for a few hundred ms (a token takes ~4 ms here: 16 tokens made
# only three deltas, too few to check the interval between them).
LIMITS = EngineLimits(max_running=4, max_new_tokens=128, max_prompt_tokens=256)


class Recorder:
    """Collects every event the engine emits, in order, with the time it arrived."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.first_delta = threading.Event()

    def __call__(self, event: dict[str, Any]) -> None:
        with self.lock:
            self.events.append({**event, "at": time.monotonic()})
        if event["type"] == "answer.delta":
            self.first_delta.set()

    def types(self, message_id: str | None = None) -> list[str]:
        return [e["type"] for e in self.events if message_id in (None, e["message_id"])]

    def text(self, message_id: str) -> str:
        return "".join(
            e["text"]
            for e in self.events
            if e["type"] == "answer.delta" and e["message_id"] == message_id
        )


def load(model_dir: Path) -> tuple[Any, Any]:
    env = {"CHAT_MODEL": str(model_dir), "QUANTIZATION": "none", "INFERENCE_DEVICE": "cpu"}
    return load_model_and_tokenizer(ModelSettings.from_env(env))


@pytest.fixture(scope="module")
def llama(tiny_model_dir: Path) -> tuple[Any, Any]:
    return load(tiny_model_dir)


@pytest.fixture(scope="module")
def engine(llama) -> Iterator[Engine]:
    # One engine for the module (tests use distinct message ids); starting one costs seconds.
    model, tokenizer = llama
    engine = ContinuousBatchingEngine(model, tokenizer, LIMITS)
    yield engine
    engine.close()


def prompt(tokenizer: Any, question: str = "Where is my order?") -> list[int]:
    messages = build_messages("You are a shop's assistant.", [], [], question)
    return render_prompt(tokenizer, messages, LIMITS.max_prompt_tokens)


def request(message_id: str, deadline_in_s: float = 30.0, **fields: Any) -> InferenceRequest:
    now = time.time()
    return InferenceRequest(
        conversation_id="c1",
        message_id=message_id,
        site_id="s1",
        messages=[],
        deadline=now + deadline_in_s,
        arrival=now,
        **fields,
    )


def wait(ticket: Ticket) -> None:
    assert ticket.done.wait(60), "the engine did not finish the request"


def test_stream_is_ordered_and_complete(engine: Engine) -> None:
    # given three concurrent requests
    recorder = Recorder()
    ids = prompt(engine.tokenizer)
    tickets = [engine.submit(request(f"m{i}", max_new_tokens=12), ids, recorder) for i in range(3)]
    # when they finish
    for ticket in tickets:
        wait(ticket)
    # then each stream is start, then deltas, and the deltas add up to the final text
    for ticket in tickets:
        message_id = ticket.request.message_id
        types = recorder.types(message_id)
        assert types[0] == "answer.start"
        assert set(types[1:]) == {"answer.delta"}
        assert ticket.result is not None
        assert recorder.text(message_id) == ticket.result.text != ""
        assert ticket.result.finish_reason in {"length", "stop"}
        assert ticket.result.completion_tokens <= 12
        assert ticket.result.ttft_ms is not None and ticket.result.ttft_ms > 0


def test_deltas_are_coalesced_to_one_per_30_ms(engine: Engine) -> None:
    # given an answer long enough to stream for several 30 ms intervals
    recorder = Recorder()
    long_answer = request("m1", max_new_tokens=LIMITS.max_new_tokens)
    ticket = engine.submit(long_answer, prompt(engine.tokenizer), recorder)
    wait(ticket)
    times = [e["at"] for e in recorder.events if e["type"] == "answer.delta"]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # then at least two gaps are checked (an answer of one or two deltas would check nothing),
    # each at least 30 ms; the last delta is the end-of-answer flush, which goes out whenever
    # the answer ends, so the gap before it is not checked
    assert len(gaps[:-1]) >= 2, f"too few deltas to check coalescing: {gaps}"
    assert all(gap >= 0.029 for gap in gaps[:-1]), gaps


def test_waiting_requests_start_earliest_deadline_first(tiny_model_dir: Path) -> None:
    # given an engine with one running slot, busy with a long answer (its own model copy: a
    # batching manager switches the model's attention implementation while it runs)
    model, tokenizer = load(tiny_model_dir)
    engine = ContinuousBatchingEngine(model, tokenizer, EngineLimits(1, 256, 16, 256))
    try:
        recorder = Recorder()
        ids = prompt(tokenizer)
        blocker = engine.submit(request("blocker", max_new_tokens=16), ids, recorder)
        assert recorder.first_delta.wait(30)  # the blocker holds the only slot
        # when requests arrive latest-deadline first
        later = [
            engine.submit(request(name, deadline_in_s=d, max_new_tokens=2), ids, recorder)
            for name, d in [("d30", 30.0), ("d20", 20.0), ("d10", 10.0)]
        ]
        for ticket in [blocker, *later]:
            wait(ticket)
        # then they start in deadline order
        starts = [e["message_id"] for e in recorder.events if e["type"] == "answer.start"]
        assert starts == ["blocker", "d10", "d20", "d30"]
    finally:
        engine.close()


def test_request_that_will_miss_its_deadline_is_flagged_at_once(engine: Engine) -> None:
    # given a deadline the first token cannot make
    recorder = Recorder()
    ticket = engine.submit(
        request("late", deadline_in_s=0.0005, max_new_tokens=4), prompt(engine.tokenizer), recorder
    )
    # then the flag is the first event, before any model work, and the answer still follows
    first = recorder.events[0]
    assert first["type"] == "answer.delayed"
    assert first["estimated_ttft_ms"] > 0.5
    wait(ticket)
    assert recorder.types("late")[-1] == "answer.delta"
    assert ticket.result is not None and ticket.result.finish_reason in {"length", "stop"}


def test_request_on_time_is_not_flagged(engine: Engine) -> None:
    recorder = Recorder()
    wait(engine.submit(request("ok", max_new_tokens=4), prompt(engine.tokenizer), recorder))
    assert "answer.delayed" not in recorder.types()


def test_cancelled_request_stops_at_the_next_step(engine: Engine) -> None:
    recorder = Recorder()
    ticket = engine.submit(request("bye", max_new_tokens=16), prompt(engine.tokenizer), recorder)
    assert recorder.first_delta.wait(30)
    engine.cancel(ticket)
    wait(ticket)
    assert ticket.result is not None
    assert ticket.result.finish_reason == "cancelled"
    assert ticket.result.completion_tokens < 16
    # the freed slot serves the next request normally
    after = engine.submit(request("next", max_new_tokens=4), prompt(engine.tokenizer), recorder)
    wait(after)
    assert after.result is not None and after.result.finish_reason in {"length", "stop"}


def test_stop_sequence_ends_the_answer_before_it(engine: Engine) -> None:
    # given the text the model produces for this prompt (greedy, so deterministic)
    ids = prompt(engine.tokenizer)
    free = engine.submit(request("free", max_new_tokens=16), ids, Recorder())
    wait(free)
    assert free.result is not None
    full = free.result.text
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    # when the same prompt runs with a stop sequence taken from the middle of that text
    recorder = Recorder()
    stopped = engine.submit(request("stopped", max_new_tokens=16, stop=[stop]), ids, recorder)
    wait(stopped)
    # then the answer is the text up to the stop sequence, and the stream agrees
    assert stopped.result is not None
    assert stopped.result.finish_reason == "stop"
    assert stopped.result.text == full[: full.index(stop)]
    assert recorder.text("stopped") == stopped.result.text


def test_new_tokens_are_capped_by_the_engine_limit(engine: Engine) -> None:
    recorder = Recorder()
    ticket = engine.submit(
        request("greedy", max_new_tokens=10_000), prompt(engine.tokenizer), recorder
    )
    wait(ticket)
    assert ticket.result is not None
    assert ticket.result.completion_tokens <= LIMITS.max_new_tokens


def test_moe_model_streams_through_the_static_batcher(tiny_moe_dir: Path) -> None:
    model, tokenizer = load(tiny_moe_dir)
    assert model.config.model_type == "deepseek_v2"
    engine = StaticBatchEngine(model, tokenizer, LIMITS)
    try:
        recorder = Recorder()
        ids = prompt(tokenizer)
        tickets = [
            engine.submit(request(f"m{i}", max_new_tokens=12), ids, recorder) for i in (1, 2)
        ]
        for ticket in tickets:
            wait(ticket)
        for ticket in tickets:
            assert ticket.result is not None
            assert recorder.types(ticket.request.message_id)[0] == "answer.start"
            assert recorder.text(ticket.request.message_id) == ticket.result.text
            assert 0 < ticket.result.completion_tokens <= 12
    finally:
        engine.close()


def test_architectures_are_routed_to_the_back_end_that_can_run_them(
    tiny_moe_dir: Path, tiny_qwen2_dir: Path
) -> None:
    from inference.runtime import make_engine

    for model_dir, expected in [
        (tiny_moe_dir, StaticBatchEngine),
        (tiny_qwen2_dir, ContinuousBatchingEngine),
    ]:
        model, tokenizer = load(model_dir)
        engine = make_engine(model, tokenizer, LIMITS, allow_static=True)
        try:
            assert type(engine) is expected
            ids = prompt(tokenizer)
            ticket = engine.submit(request("route", max_new_tokens=4), ids, Recorder())
            wait(ticket)
            assert ticket.result is not None and ticket.result.finish_reason in {"length", "stop"}
        finally:
            engine.close()


def test_moe_model_is_refused_without_the_explicit_static_setting(tiny_moe_dir: Path) -> None:
    from inference.runtime import StaticBatchingNotAllowedError, make_engine

    model, tokenizer = load(tiny_moe_dir)
    with pytest.raises(StaticBatchingNotAllowedError, match="INFERENCE_ALLOW_STATIC_BATCHING=1"):
        make_engine(model, tokenizer, LIMITS)


def test_continuous_batching_still_fails_for_deepseek_v2(tiny_moe_dir: Path) -> None:
    # Pins the upstream limitation the static fallback exists for: if transformers fixes it,
    # this fails, and deepseek_v2/v3 can move to continuous batching (runtime.py).
    model, tokenizer = load(tiny_moe_dir)
    engine = ContinuousBatchingEngine(model, tokenizer, LIMITS)
    try:
        ticket = engine.submit(request("moe-cb", max_new_tokens=4), prompt(tokenizer), Recorder())
        wait(ticket)
        assert ticket.result is not None and ticket.result.finish_reason == "error"
        assert ticket.error is not None and "index_copy_" in ticket.error
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (LatePolicy.YIELD, ["blocker", "on-time", "late"]),
        (LatePolicy.EDF, ["blocker", "late", "on-time"]),
    ],
)
def test_already_late_requests_yield_to_those_that_can_still_make_it(
    tiny_model_dir: Path, policy: LatePolicy, expected: list[str]
) -> None:
    # given one running slot, busy
    model, tokenizer = load(tiny_model_dir)
    engine = ContinuousBatchingEngine(
        model, tokenizer, EngineLimits(1, 256, 16, 256), late_policy=policy
    )
    try:
        recorder = Recorder()
        ids = prompt(tokenizer)
        blocker = engine.submit(request("blocker", max_new_tokens=16), ids, recorder)
        assert recorder.first_delta.wait(30)
        # when a request whose deadline has passed (its holding reply went out) waits next to
        # one that can still make its deadline
        late = engine.submit(request("late", deadline_in_s=-1.0, max_new_tokens=2), ids, recorder)
        on_time = engine.submit(request("on-time", max_new_tokens=2), ids, recorder)
        for ticket in (blocker, late, on_time):
            wait(ticket)
        # then the late one is flagged and, under the yield policy, goes last
        starts = [e["message_id"] for e in recorder.events if e["type"] == "answer.start"]
        assert starts == expected
        assert "answer.delayed" in recorder.types("late")
    finally:
        engine.close()


def test_prefix_sharing_serves_the_shared_head_and_reports_its_share(tiny_model_dir: Path) -> None:
    # given an engine with prefix sharing and two prompts sharing a long site head
    model, tokenizer = load(tiny_model_dir)
    engine = ContinuousBatchingEngine(model, tokenizer, LIMITS)
    try:
        head = [FaqEntry(f"Question {i}?", f"Answer {i}. " * 3, f"{i}:1") for i in range(6)]
        ids = [
            render_prompt(tokenizer, build_messages("RULES", [], [], q, site_faqs=head), 256)
            for q in ("Where is my order?", "Can I pay by card?")
        ]
        for index, prompt_ids in enumerate(ids):
            wait(engine.submit(request(f"p{index}", max_new_tokens=2), prompt_ids, Recorder()))
        # then the second prompt's whole pages of the shared head came from the cache
        assert engine.prefix_hit_share is not None
        shared = next(i for i, (a, b) in enumerate(zip(*ids, strict=False)) if a != b)
        reused = engine.prefix_hit_share * sum(map(len, ids))
        assert reused == (shared // 64) * 64 > 0
    finally:
        engine.close()
