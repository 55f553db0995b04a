"""Overload admission: the pure decisions, and the fleet's view read from a real Redis."""

from __future__ import annotations

import pytest

from inference.admission import (
    Action,
    Fleet,
    WorkerCapacity,
    fleet_start_delay_s,
    should_shed,
    worker_decision,
)

NOW = 1_000.0


def worker(name: str, running: int, waiting: int = 0, slots: int = 4) -> WorkerCapacity:
    return WorkerCapacity(name, max_running=slots, running=running, waiting=waiting, service_s=2.0)


def test_a_free_slot_anywhere_means_no_wait() -> None:
    assert fleet_start_delay_s(0, [worker("a", 4), worker("b", 3)]) == 0.0


def test_the_redis_backlog_counts_as_waiting_ahead() -> None:
    # 8 slots turning over every 2 s: one frees every 0.25 s; 9 ahead of us -> 10 slots
    full = [worker("a", 4), worker("b", 4)]
    assert fleet_start_delay_s(9, full) == pytest.approx(10 * 0.25)
    assert fleet_start_delay_s(0, full) == pytest.approx(0.25)


def test_no_worker_reporting_is_unknown_and_never_sheds() -> None:
    assert fleet_start_delay_s(100, []) is None
    assert not should_shed(100, [], shed_after_s=30)


def test_chat_layer_sheds_once_the_backlog_outlasts_the_horizon() -> None:
    full = [worker("a", 4), worker("b", 4)]
    assert not should_shed(100, full, shed_after_s=30)  # 101 * 0.25 = 25 s
    assert should_shed(130, full, shed_after_s=30)  # 131 * 0.25 = 33 s


def decide(local_start_s: float, others: list[WorkerCapacity], **overrides) -> Action:
    values = dict(
        now=NOW,
        arrival=NOW - 0.05,
        deadline=NOW + 0.25,
        local_start_s=local_start_s,
        others=others,
        handed_back_before=False,
        shed_after_s=30.0,
    )
    values.update(overrides)
    return worker_decision(**values)


def test_a_request_that_starts_in_time_here_is_admitted() -> None:
    assert decide(0.1, [worker("idle", 0)]) is Action.ADMIT


def test_a_request_this_worker_would_hoard_goes_to_an_idle_worker_once() -> None:
    # given this worker cannot start it before its deadline, and another has free slots
    assert decide(5.0, [worker("idle", 0)]) is Action.HAND_BACK
    # but a request that already went back once stays (no ping-pong between workers)
    assert decide(5.0, [worker("idle", 0)], handed_back_before=True) is Action.ADMIT


def test_a_late_request_stays_when_no_other_worker_is_free() -> None:
    assert decide(5.0, [worker("busy", 4)]) is Action.ADMIT


def test_a_request_that_would_start_past_the_horizon_is_shed() -> None:
    # given it waited 25 s in Redis and would wait 10 s more here, all workers busy
    decision = decide(10.0, [worker("busy", 4)], arrival=NOW - 25)
    assert decision is Action.SHED


def test_fleet_reads_reports_and_backlog_from_redis(redis_client) -> None:
    # given two workers' reports and three queued tasks
    fleet = Fleet(redis_client, "inference-test", own_worker="me")
    fleet.publish(worker("me", 4, waiting=2))
    fleet.publish(worker("other", 1))
    for _ in range(3):
        redis_client.lpush("inference-test", "task")
    # then the fleet sees both, the backlog, and its peers without itself
    backlog, workers = fleet.read()
    assert backlog == 3
    assert {w.worker: w.free_slots for w in workers} == {"me": 0, "other": 3}
    assert [w.worker for w in fleet.others()] == ["other"]
    # and a dead worker's report expires
    assert 0 < redis_client.ttl("inference:capacity:other") <= 5
