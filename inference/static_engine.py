"""Static batching back-end: a padded batch runs to completion, then the next one starts.

The fallback for architectures transformers' continuous batching cannot run (deepseek_v2/v3:
its paged cache fails with an `index_copy_` shape error for MLA attention), and the baseline
the benchmark compares continuous batching against. It still streams every token and honours
cancellation, stop sequences and per-request token caps; what it cannot do is let a request
join a batch that is already decoding, so under load a new request waits for the whole
running batch to finish (time to first token grows with the longest answer in flight).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from inference.engine import Engine, EngineLimits, Ticket

logger = logging.getLogger(__name__)


class StaticBatchEngine(Engine):
    def __init__(self, model: Any, tokenizer: Any, limits: EngineLimits) -> None:
        super().__init__(model, tokenizer, limits)
        pad = model.generation_config.pad_token_id
        self._pad_id = int(pad if pad is not None else min(self.eos_ids))
        self._thread = threading.Thread(target=self._batch_loop, name="static-batch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        super().close()
        self._thread.join(timeout=10)

    def _abort(self, ticket: Ticket) -> None:
        pass  # the decode loop skips rows whose ticket has finished

    def _batch_loop(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not len(self._waiting):
                    self._wake.wait(timeout=0.05)
                    self._flag_overdue_waiting()
                if self._closed:
                    return
                batch = self._take_waiting(self.limits.max_running)
            for ticket in batch:
                self._announce_start(ticket)
            try:
                self._generate(batch)
            except Exception as error:  # noqa: BLE001 - any model failure fails this batch only
                logger.exception("static batch failed")
                for ticket in batch:
                    self._finish(ticket, "error", error=f"{type(error).__name__}: {error}")
            with self._lock:
                self._flag_overdue_waiting()

    def _generate(self, batch: list[Ticket]) -> None:
        """Greedy decoding of a left-padded batch, streaming each row's tokens."""
        import torch
        from transformers import DynamicCache

        device = self.model.device
        width = max(len(t.prompt_ids) for t in batch)
        # input_ids, attention_mask: [B, S], prompts right-aligned so new tokens line up
        input_ids = torch.full((len(batch), width), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ticket in enumerate(batch):
            input_ids[row, width - len(ticket.prompt_ids) :] = torch.tensor(ticket.prompt_ids)
            attention_mask[row, width - len(ticket.prompt_ids) :] = 1
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # [B, S]
        cache = DynamicCache(config=self.model.config)
        generated: list[list[int]] = [[] for _ in batch]
        steps = max(t.max_new_tokens for t in batch)
        with torch.inference_mode():
            for _ in range(steps):
                logits = self.model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    past_key_values=cache,
                    use_cache=True,
                ).logits[:, -1, :]  # [B, V]
                next_ids = logits.argmax(dim=-1)  # [B]
                live = [t for t in batch if t.finish_reason is None]
                for row, ticket in enumerate(batch):
                    if ticket.finish_reason is None:
                        self._advance(ticket, generated[row], int(next_ids[row]), len(live))
                if all(t.finish_reason is not None for t in batch):
                    return
                input_ids = next_ids[:, None]  # [B, 1]
                attention_mask = torch.cat(
                    [attention_mask, attention_mask.new_ones((len(batch), 1))], dim=-1
                )
                position_ids = position_ids[:, -1:] + 1  # [B, 1]

    def _advance(self, ticket: Ticket, tokens: list[int], token: int, running: int) -> None:
        tokens.append(token)
        self._on_tokens(ticket, tokens, running)
        if ticket.finish_reason is None and (
            token in self.eos_ids or len(tokens) >= ticket.max_new_tokens
        ):
            self._finish_from_tokens(ticket, tokens)
