"""Per-step timing of transformers' batching manager, for the benchmark (`--steps`).

Each forward step of the manager is recorded with its shape: query tokens (prefill chunks +
one per decoding request), requests, and key/value tokens read (the whole KV of every request
in the step). A least-squares fit of step time against query tokens and (query tokens x KV
tokens) shows what a step's cost grows with: with transformers' batch-wide SDPA the product
term dominates prefill steps; with per-request attention it nearly vanishes.

Reads the manager's batch processor and its inputs object, internals that exist from
transformers 5.17 to 5.23; benchmark-only, never used by the worker.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Step:
    query_tokens: int
    requests: int
    kv_tokens: int
    ms: float

    @property
    def decode_only(self) -> bool:
        return self.query_tokens == self.requests


class StepTimer:
    """Wraps one batch processor's forward step; `steps` lists what it ran."""

    def __init__(self, processor: Any) -> None:
        self.steps: list[Step] = []
        self._lock = threading.Lock()
        self._processor = processor
        self._original = processor._generation_step
        processor._generation_step = self._timed

    def _timed(self, model: Any) -> None:
        io = self._processor.inputs_and_outputs
        began = time.perf_counter()
        self._original(model)
        elapsed_ms = (time.perf_counter() - began) * 1000
        kv = io.total_seqlen_k
        step = Step(
            query_tokens=io.num_q_tokens,
            requests=io.num_request_in_batch,
            kv_tokens=max(kv.values()) if isinstance(kv, dict) else int(kv),
            ms=elapsed_ms,
        )
        with self._lock:
            self.steps.append(step)

    def clear(self) -> None:
        with self._lock:
            self.steps.clear()

    def summary(self, slowest: int = 5) -> dict[str, Any]:
        """Median decode step, prefill steps' fit and the slowest steps."""
        with self._lock:
            steps = list(self.steps)
        decode = [s.ms for s in steps if s.decode_only]
        prefill = [s for s in steps if not s.decode_only]
        return {
            "steps": len(steps),
            "decode_step_median_ms": round(statistics.median(decode), 1) if decode else None,
            "prefill_steps": len(prefill),
            "prefill_ms_total": round(sum(s.ms for s in prefill)),
            "prefill_fit": fit(prefill),
            "slowest": [
                {"q": s.query_tokens, "requests": s.requests, "kv": s.kv_tokens, "ms": round(s.ms)}
                for s in sorted(steps, key=lambda s: -s.ms)[:slowest]
            ],
        }


def fit(steps: list[Step]) -> dict[str, float] | None:
    """ms ~ a * query tokens + b * query tokens * KV tokens / 1000 + c, by least squares."""
    if len(steps) < 4:
        return None
    import numpy as np

    rows = np.array([[s.query_tokens, s.query_tokens * s.kv_tokens / 1000, 1.0] for s in steps])
    times = np.array([s.ms for s in steps])
    (a, b, c), *_ = np.linalg.lstsq(rows, times, rcond=None)
    return {"ms_per_q_token": round(a, 4), "ms_per_q_x_kv_k": round(b, 4), "ms_fixed": round(c, 1)}
