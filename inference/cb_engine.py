"""Continuous batching back-end: transformers' ContinuousBatchingManager with a paged KV cache.

Requests join and leave the running batch at every step. The manager's own scheduler is
first-come-first-served, so this engine keeps the waiting queue itself (earliest deadline
first, in `Engine`) and hands the manager at most `max_running` requests at a time: the
manager only ever sees requests that should run now.

Two threads: `_admission_loop` moves tickets from the EDF queue into the manager when slots
free; `_output_loop` reads streamed outputs (one per token per request) and routes them.
Works for Llama/Qwen-style models; transformers fails on deepseek_v2/v3 inside the manager,
so those use `StaticBatchEngine`.
"""

from __future__ import annotations

import threading
from typing import Any

from inference.engine import Engine, EngineLimits, Ticket

# Paged KV cache geometry. A page holds this many tokens of one layer; small pages waste
# little memory on short customer-service answers, large ones mean fewer page-table entries.
PAGE_SIZE = 64
# Tokens the manager processes in one forward pass (prefill chunks + one per decoding
# request). On CPU a 512-token step costs a few tens of ms with the offline model.
CPU_MAX_BATCH_TOKENS = 512
OUTPUT_POLL_S = 0.1  # how long the output thread blocks before checking for shutdown


def cache_blocks(limits: EngineLimits) -> int:
    """Pages for every running request at its longest (prompt + answer), so nothing evicts."""
    tokens_per_request = limits.max_prompt_tokens + limits.max_new_tokens
    return -(-limits.max_running * tokens_per_request // PAGE_SIZE)


class ContinuousBatchingEngine(Engine):
    def __init__(self, model: Any, tokenizer: Any, limits: EngineLimits) -> None:
        super().__init__(model, tokenizer, limits)
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        on_gpu = model.device.type == "cuda"
        cb_config = ContinuousBatchingConfig(
            page_size=PAGE_SIZE,
            # On a GPU the manager sizes the cache from free memory; on CPU it cannot measure
            # free memory, so the cache and the step size are given explicitly.
            num_blocks=None if on_gpu else cache_blocks(limits),
            max_batch_tokens=None if on_gpu else CPU_MAX_BATCH_TOKENS,
            max_requests_per_batch=limits.max_running,
            use_cuda_graph=None if on_gpu else False,
        )
        generation_config = GenerationConfig(
            do_sample=False,  # greedy: reproducible answers, and sampling adds nothing here
            max_new_tokens=limits.max_new_tokens,
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=model.generation_config.pad_token_id,
        )
        self._manager = model.init_continuous_batching(
            generation_config=generation_config, continuous_batching_config=cb_config
        )
        self._manager.start()
        self._threads = [
            threading.Thread(target=self._admission_loop, name="cb-admission", daemon=True),
            threading.Thread(target=self._output_loop, name="cb-output", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        super().close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._manager.stop(block=True, timeout=10)

    def _abort(self, ticket: Ticket) -> None:
        self._manager.cancel_request(ticket.engine_id)

    def _admission_loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                self._flag_overdue_waiting()
                free = self.limits.max_running - len(self._running)
                admitted = self._take_waiting(free) if free > 0 else []
                if not admitted:
                    # Checked and waited under one lock hold, so no submit/finish is missed;
                    # the timeout re-checks waiting deadlines regularly.
                    self._wake.wait(timeout=0.05)
                    continue
            for ticket in admitted:
                self._announce_start(ticket)
                self._manager.add_request(
                    ticket.prompt_ids,
                    request_id=ticket.engine_id,
                    max_new_tokens=ticket.max_new_tokens,
                    streaming=True,
                )

    def _output_loop(self) -> None:
        while not self._closed:
            output = self._manager.get_result(timeout=OUTPUT_POLL_S)
            if output is None:
                if not self._manager.is_running() and self._running:
                    self._fail_running("the continuous batching loop stopped")
                continue
            with self._lock:
                ticket = self._running.get(output.request_id)
                running = len(self._running)
            if ticket is None:
                continue  # cancelled, stopped early, or a warm-up leftover
            if output.error is not None:
                self._finish(ticket, "error", error=output.error)
                continue
            tokens = list(output.generated_tokens)
            self._on_tokens(ticket, tokens, running)
            if output.is_finished():
                self._finish_from_tokens(ticket, tokens)

    def _fail_running(self, reason: str) -> None:
        with self._lock:
            tickets = list(self._running.values())
        for ticket in tickets:
            self._finish(ticket, "error", error=reason)
