"""Which leading prompt tokens a paged KV cache with prefix sharing already holds.

transformers' continuous batching shares KV blocks between requests whose prompts start with
the same whole pages of tokens (`allow_block_sharing`): a page is found by a hash chained over
the pages before it, so only an identical *prefix* is reused, in whole pages. This tracker
applies the same rule to the prompts the engine handed to the manager, so that admission can
predict, before a request runs, how many of its prompt tokens need no prefill: the TTFT
estimate charges only the rest.

It is a prediction (the manager may evict cached pages under memory pressure); what the
manager really reused is counted separately (`cb_engine.PrefixHitCounter`). Pure logic, no
model, unit-tested directly.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


def page_hashes(prompt_ids: Sequence[int], page_size: int) -> list[int]:
    """One hash per whole page of the prompt, each chained to the pages before it."""
    hashes: list[int] = []
    parent = 0
    for start in range(0, len(prompt_ids) - page_size + 1, page_size):
        parent = hash((parent, tuple(prompt_ids[start : start + page_size])))
        hashes.append(parent)
    return hashes


class PrefixTracker:
    """Recently prefilled pages, least recently used dropped first beyond `capacity_pages`.

    Not thread-safe: the engine calls it under its own lock.
    """

    def __init__(self, page_size: int, capacity_pages: int, enabled: bool = True) -> None:
        if page_size < 1 or capacity_pages < 1:
            raise ValueError("page_size and capacity_pages must be at least 1")
        self.page_size = page_size
        self.capacity_pages = capacity_pages
        self.enabled = enabled
        self._pages: OrderedDict[int, None] = OrderedDict()

    def cached_tokens(self, prompt_ids: Sequence[int]) -> int:
        """Leading tokens of the prompt already in the cache (never the whole prompt: the
        last token is always computed, it yields the first new token)."""
        if not self.enabled:
            return 0
        matched = 0
        for page in page_hashes(prompt_ids, self.page_size):
            if page not in self._pages:
                break
            matched += 1
        return min(matched * self.page_size, max(len(prompt_ids) - 1, 0))

    def record(self, prompt_ids: Sequence[int]) -> None:
        """The prompt was handed to the cache: its whole pages are (or soon will be) cached."""
        if not self.enabled:
            return
        for page in page_hashes(prompt_ids, self.page_size):
            self._pages[page] = None
            self._pages.move_to_end(page)
        while len(self._pages) > self.capacity_pages:
            self._pages.popitem(last=False)
