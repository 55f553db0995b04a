"""Continuous batching back-end: transformers' ContinuousBatchingManager with a paged KV cache.

Requests join and leave the running batch at every step. The manager's own scheduler is
first-come-first-served, so this engine keeps the waiting queue itself (`Engine`: earliest
deadline first, late requests last) and hands the manager at most `max_running` requests at a
time: the manager only ever sees requests that should run now.

Prefix sharing: the manager reuses the KV pages of any earlier prompt that starts with the
same whole pages of tokens. Prompts are laid out site-stable part first
(`inference/prompt.py`), so most of a prompt's tokens are usually served from the cache;
`PrefixHitCounter` counts what the manager really reused.

Two threads: `_admission_loop` moves tickets from the queue into the manager when slots
free; `_output_loop` reads streamed outputs (one per token per request) and routes them.

Runs on transformers 5.17 (the GPU machine's) through the pinned version: the one option
renamed in between (`block_size` -> `page_size`) is passed under the installed name.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inference import paged_attention
from inference.engine import Engine, EngineLimits, Ticket
from inference.prefix import PrefixTracker
from inference.scheduling import LatePolicy

logger = logging.getLogger(__name__)

# Paged KV cache geometry. A page holds this many tokens of one layer; small pages waste
# little memory on short customer-service answers and let a prefix be shared up to a finer
# boundary; large ones mean fewer page-table entries.
PAGE_SIZE = 64
# Tokens the manager processes in one forward pass (prefill chunks + one per decoding
# request). On CPU a 512-token step costs a few tens of ms with the offline model.
CPU_MAX_BATCH_TOKENS = 512
OUTPUT_POLL_S = 0.1  # how long the output thread blocks before checking for shutdown
# How long to wait for the manager's generation thread to build its batch processor (where
# the prefix-match counter is attached) after `start()`.
PROCESSOR_WAIT_S = 10.0


@dataclass(frozen=True)
class BatchingOptions:
    """Knobs of the continuous batching manager; the defaults are the production choice."""

    prefix_sharing: bool = True  # reuse KV pages of identical prompt prefixes
    # None: transformers decides (CUDA graphs on a GPU); CPU never uses them.
    cuda_graphs: bool | None = None
    # transformers' default_compile_level (0-3): torch.compile of the varlen and decode
    # paths, GPU only; 0 = eager. Higher levels mean longer warm-up.
    compile_level: int = 0
    # CPU only: each request's queries attend to its own keys (`inference/paged_attention.py`)
    # instead of one SDPA over the whole batch's KV behind a block-diagonal mask.
    varlen_attention: bool = True


def cache_blocks(limits: EngineLimits) -> int:
    """Pages for every running request at its longest (prompt + answer), so nothing evicts."""
    tokens_per_request = limits.max_prompt_tokens + limits.max_new_tokens
    return -(-limits.max_running * tokens_per_request // PAGE_SIZE)


def continuous_batching_config(**values: Any) -> Any:
    """transformers' ContinuousBatchingConfig, with each option under the installed version's
    name: 5.17 calls the page size `block_size`, later versions `page_size`. An option the
    installed version does not know is an error, not silently dropped."""
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    known = {f.name for f in dataclasses.fields(ContinuousBatchingConfig)}
    if "page_size" in values and "page_size" not in known:
        values["block_size"] = values.pop("page_size")
    unknown = sorted(set(values) - known)
    if unknown:
        raise TypeError(f"this transformers has no continuous batching option {unknown}")
    return ContinuousBatchingConfig(**values)


class PrefixHitCounter:
    """Counts the prompt tokens transformers' paged cache served from shared pages.

    The manager does not report prefix matches, so the counter wraps the one method its
    scheduler calls for them (`search_prefix_match(request_id, prompt_ids) -> matched
    tokens`, present from 5.17 on) on this manager's cache instance. Where that method is
    missing the counter stays detached and the engine reports the hit share as unknown.
    """

    def __init__(self) -> None:
        self.attached = False
        self._lock = threading.Lock()
        self._by_request: dict[str, int] = {}

    def attach(self, cache: Any) -> bool:
        original: Callable[[str, list[int]], int] | None = getattr(
            cache, "search_prefix_match", None
        )
        if original is None or not getattr(cache, "use_prefix_sharing", False):
            return False

        def counted(request_id: str, prompt_ids: list[int]) -> int:
            matched = original(request_id, prompt_ids)
            with self._lock:
                # The last prompt token is always computed (it yields the first new token).
                self._by_request[request_id] = min(matched, max(len(prompt_ids) - 1, 0))
            return matched

        cache.search_prefix_match = counted
        self.attached = True
        return True

    def pop(self, request_id: str) -> int | None:
        """Tokens reused for the request, once its prefill was scheduled (None: not yet)."""
        with self._lock:
            return self._by_request.pop(request_id, None)


class ContinuousBatchingEngine(Engine):
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        limits: EngineLimits,
        options: BatchingOptions | None = None,
        late_policy: LatePolicy = LatePolicy.YIELD,
    ) -> None:
        super().__init__(model, tokenizer, limits, late_policy)
        from transformers import GenerationConfig

        self.options = options or BatchingOptions()
        on_gpu = model.device.type == "cuda"
        blocks = None if on_gpu else cache_blocks(limits)
        cb_config = continuous_batching_config(
            page_size=PAGE_SIZE,
            # On a GPU the manager sizes the cache from free memory; on CPU it cannot measure
            # free memory, so the cache and the step size are given explicitly.
            num_blocks=blocks,
            max_batch_tokens=None if on_gpu else CPU_MAX_BATCH_TOKENS,
            max_requests_per_batch=limits.max_running,
            allow_block_sharing=self.options.prefix_sharing,
            use_cuda_graph=self.options.cuda_graphs if on_gpu else False,
            default_compile_level=self.options.compile_level if on_gpu else 0,
        )
        # The tracker predicts hits for admission; sized like the CPU cache, or generously
        # on a GPU (whose cache holds far more than the running requests need).
        self.prefix = PrefixTracker(
            PAGE_SIZE, blocks or 8 * cache_blocks(limits), enabled=self.options.prefix_sharing
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
        # transformers' batch processor (None if it did not start): the benchmark times its steps
        self.batch_processor = processor = self._batch_processor()
        self._hits = PrefixHitCounter()
        if self.options.prefix_sharing:
            self._attach_hit_counter(processor)
        self.attention = self._choose_attention(processor, on_gpu)
        logger.info("continuous batching attention: %s", self.attention)
        self._threads = [
            threading.Thread(target=self._admission_loop, name="cb-admission", daemon=True),
            threading.Thread(target=self._output_loop, name="cb-output", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _batch_processor(self) -> Any:
        """The manager's batch processor, built by its generation thread after `start()`."""
        deadline = time.monotonic() + PROCESSOR_WAIT_S
        processor = None
        while processor is None and time.monotonic() < deadline and self._manager.is_running():
            processor = getattr(self._manager, "batch_processor", None)
            if processor is None:
                time.sleep(0.01)
        return processor

    def _attach_hit_counter(self, processor: Any) -> None:
        cache = getattr(processor, "cache", None)
        if cache is not None and self._hits.attach(cache):
            self.prompt_tokens_cached = 0
        else:
            logger.warning("prefix sharing on, but its hits cannot be counted in this version")

    def _choose_attention(self, processor: Any, on_gpu: bool) -> str:
        """Which attention the manager's steps run, in words for the log and the benchmark."""
        implementation = self.model.config._attn_implementation
        if on_gpu or not self.options.varlen_attention:
            return f"{implementation} (transformers' own)"
        cache = getattr(processor, "cache", None)
        if cache is not None and paged_attention.enable(cache, implementation):
            return f"per-request {implementation} (inference/paged_attention.py)"
        return f"{implementation} over the whole batch (per-request attention needs SDPA)"

    def close(self) -> None:
        super().close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._manager.stop(block=True, timeout=10)

    def _abort(self, ticket: Ticket) -> None:
        self._manager.cancel_request(ticket.engine_id)
        self._hits.pop(ticket.engine_id)  # matched, then cancelled before its first token

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

    def _on_tokens(self, ticket: Ticket, token_ids: list[int], running: int) -> None:
        if ticket.first_token_wall is None and self._hits.attached:
            # The prefill ran: replace the prediction with what the manager really reused.
            reused = self._hits.pop(ticket.engine_id)
            if reused is not None:
                ticket.cached_tokens = reused
                with self._lock:
                    self.prompt_tokens_cached = (self.prompt_tokens_cached or 0) + reused
        super()._on_tokens(ticket, token_ids, running)

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
                self._hits.pop(ticket.engine_id)
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
