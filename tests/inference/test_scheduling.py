"""Earliest-deadline-first queue and time-to-first-token estimates (pure logic)."""

from __future__ import annotations

import pytest

from inference.scheduling import (
    DeadlineQueue,
    LatePolicy,
    StepCosts,
    estimate_ttft_s,
    first_token_s,
    start_delay_s,
)


def test_queue_pops_earliest_deadline_first_and_ties_in_arrival_order() -> None:
    queue: DeadlineQueue[str] = DeadlineQueue()
    for name, deadline in [("late", 30.0), ("soon", 10.0), ("mid-a", 20.0), ("mid-b", 20.0)]:
        queue.push(name, deadline)
    assert [queue.pop() for _ in range(5)] == ["soon", "mid-a", "mid-b", "late", None]


def test_removed_items_are_skipped_and_not_counted() -> None:
    queue: DeadlineQueue[str] = DeadlineQueue()
    queue.push("a", 1.0)
    queue.push("b", 2.0)
    assert queue.remove("a")
    assert not queue.remove("a")
    assert len(queue) == 1
    assert queue.count_before(5.0) == 1
    assert queue.pop() == "b"


def test_count_before_counts_only_earlier_or_equal_deadlines() -> None:
    queue: DeadlineQueue[str] = DeadlineQueue()
    for index, deadline in enumerate([1.0, 2.0, 3.0, 4.0]):
        queue.push(str(index), deadline)
    assert queue.count_before(2.5) == 2


def test_estimate_with_a_free_slot_is_one_step_plus_prefill() -> None:
    costs = StepCosts(decode_step_s=0.02, prefill_token_s=0.001, service_s=2.0)
    assert estimate_ttft_s(costs, waiting_ahead=0, running=3, max_running=4, prompt_tokens=100) == (
        pytest.approx(0.12)
    )


def test_estimate_grows_with_the_queue_when_slots_are_full() -> None:
    costs = StepCosts(decode_step_s=0.02, prefill_token_s=0.001, service_s=2.0)
    full = estimate_ttft_s(costs, waiting_ahead=0, running=4, max_running=4, prompt_tokens=100)
    deeper = estimate_ttft_s(costs, waiting_ahead=8, running=4, max_running=4, prompt_tokens=100)
    # one slot frees every service_s / max_running = 0.5 s
    assert full == pytest.approx(0.5 + 0.12)
    assert deeper == pytest.approx(9 * 0.5 + 0.12)


def test_costs_follow_measurements() -> None:
    costs = StepCosts(decode_step_s=0.02)
    for _ in range(100):
        costs.observe_decode_step(0.05)
    assert costs.decode_step_s == pytest.approx(0.05, rel=1e-3)


def test_first_measurement_replaces_the_default_then_averages() -> None:
    # given the guessed defaults and a measured 10 ms decode step
    costs = StepCosts(prefill_token_s=0.0005)
    costs.observe_decode_step(0.01)
    # when the first prefill is measured: 100 tokens in 30 ms, 10 of them the step itself
    costs.observe_prefill(100, 0.03)
    # then the per-token cost (step taken out) replaces the guess outright
    assert costs.prefill_token_s == pytest.approx(0.0002)
    # and later measurements move it by the moving-average weight only
    costs.observe_prefill(100, 0.13)
    assert costs.prefill_token_s == pytest.approx(0.0002 + 0.1 * (0.0012 - 0.0002))


def test_late_items_wait_behind_on_time_ones_under_the_yield_policy() -> None:
    # given an already-late request (earliest deadline) and two that can still make theirs
    queue: DeadlineQueue[str] = DeadlineQueue(LatePolicy.YIELD)
    queue.push("late", 1.0, late=True)
    queue.push("soon", 2.0)
    queue.push("later", 3.0)
    # then the on-time ones go first, and a new on-time request counts only them ahead
    assert queue.count_before(2.5) == 1
    assert [queue.pop() for _ in range(4)] == ["soon", "later", "late", None]


def test_plain_edf_serves_the_late_request_first() -> None:
    queue: DeadlineQueue[str] = DeadlineQueue(LatePolicy.EDF)
    queue.push("late", 1.0, late=True)
    queue.push("soon", 2.0)
    assert [queue.pop() for _ in range(2)] == ["late", "soon"]


def test_an_item_marked_late_while_waiting_moves_behind() -> None:
    queue: DeadlineQueue[str] = DeadlineQueue()
    queue.push("a", 1.0)
    queue.push("b", 2.0)
    queue.mark_late("a")
    assert len(queue) == 2
    assert [queue.pop() for _ in range(2)] == ["b", "a"]


def test_start_delay_counts_only_what_is_ahead_and_prefill_only_uncached_tokens() -> None:
    costs = StepCosts(decode_step_s=0.02, prefill_token_s=0.001, service_s=2.0)
    assert start_delay_s(costs, waiting_ahead=0, running=3, max_running=4) == 0.0
    assert first_token_s(costs, uncached_prompt_tokens=50) == pytest.approx(0.07)
