"""The prefix tracker predicts what a paged KV cache with prefix sharing already holds."""

from __future__ import annotations

from inference.prefix import PrefixTracker


def test_only_whole_pages_of_an_identical_prefix_count() -> None:
    tracker = PrefixTracker(page_size=4, capacity_pages=100)
    tracker.record([1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert tracker.cached_tokens([1, 2, 3, 4, 5, 6, 7, 8, 42, 43]) == 8
    assert tracker.cached_tokens([1, 2, 3, 4, 5, 6, 0, 8, 9]) == 4  # second page differs
    assert tracker.cached_tokens([9, 2, 3, 4, 5, 6, 7, 8]) == 0  # chained: same page, new start


def test_the_last_prompt_token_is_never_counted_as_cached() -> None:
    tracker = PrefixTracker(page_size=4, capacity_pages=100)
    tracker.record([1, 2, 3, 4, 5, 6, 7, 8])
    assert tracker.cached_tokens([1, 2, 3, 4, 5, 6, 7, 8]) == 7


def test_least_recently_used_pages_are_forgotten_beyond_capacity() -> None:
    tracker = PrefixTracker(page_size=2, capacity_pages=2)
    tracker.record([1, 2, 3, 4])
    tracker.record([5, 6, 7, 8])
    assert tracker.cached_tokens([1, 2, 3, 4, 0]) == 0
    assert tracker.cached_tokens([5, 6, 7, 8, 0]) == 4


def test_a_disabled_tracker_predicts_nothing() -> None:
    tracker = PrefixTracker(page_size=2, capacity_pages=10, enabled=False)
    tracker.record([1, 2, 3, 4])
    assert tracker.cached_tokens([1, 2, 3, 4, 5]) == 0
