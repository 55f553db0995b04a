"""Turn a growing list of generated token ids into text deltas: stop sequences, coalescing.

Pure logic, no model and no I/O, so it is unit-tested directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# A byte-level BPE token can end in the middle of a UTF-8 character; decoding then yields the
# replacement character. Hold such text back until the next token completes the character.
_INCOMPLETE_CHAR = "\ufffd"

# One message per ~30 ms per request: fast enough to read as live typing, few enough that a
# 64-request batch does not flood the channel layer with a message per token per request.
DELTA_INTERVAL_S = 0.030


@dataclass
class TextStream:
    """Decodes tokens incrementally and cuts the text at the first stop sequence.

    `push` returns the text that is safe to show: text that might still turn into a stop
    sequence (a suffix that is a prefix of one) is held back until it cannot.
    """

    decode: Callable[[Sequence[int]], str]
    stop: Sequence[str] = ()
    text: str = ""  # everything decoded so far, stop sequence excluded once stopped
    emitted: int = 0  # characters of `text` already handed out
    stopped: bool = False

    def push(self, token_ids: Sequence[int]) -> str:
        """All generated ids so far in; new displayable text out."""
        if self.stopped:
            return ""
        self.text = self.decode(token_ids)
        for stop in self.stop:
            at = self.text.find(stop, max(0, self.emitted - len(stop)))
            if stop and at != -1:
                self.text = self.text[:at]
                self.stopped = True
        safe_end = len(self.text)
        if not self.stopped:
            if self.text.endswith(_INCOMPLETE_CHAR):
                safe_end = len(self.text.rstrip(_INCOMPLETE_CHAR))
            safe_end = min(safe_end, self._end_before_partial_stop())
        safe_end = max(safe_end, self.emitted)
        delta = self.text[self.emitted : safe_end]
        self.emitted = safe_end
        return delta

    def finish(self) -> str:
        """The generation ended: release anything held back (a partial stop is just text)."""
        end = len(self.text.rstrip(_INCOMPLETE_CHAR))
        delta = self.text[self.emitted : end]
        self.emitted = max(self.emitted, end)
        self.text = self.text[: self.emitted]
        return delta

    def _end_before_partial_stop(self) -> int:
        """Where text must stop being shown because its tail could start a stop sequence."""
        end = len(self.text)
        for stop in self.stop:
            for size in range(min(len(stop) - 1, len(self.text)), 0, -1):
                if self.text.endswith(stop[:size]):
                    end = min(end, len(self.text) - size)
                    break
        return end


@dataclass
class Coalescer:
    """Buffers deltas so one request sends at most one message per `interval_s`.

    The first text goes out at once (time to first token matters most); after that, text
    waits until `interval_s` has passed since the last message. `flush` empties the buffer at
    the end of the answer.
    """

    interval_s: float = DELTA_INTERVAL_S
    pending: list[str] = field(default_factory=list)
    last_sent: float | None = None

    def add(self, text: str, now: float) -> str | None:
        if text:
            self.pending.append(text)
        if not self.pending:
            return None
        if self.last_sent is not None and now - self.last_sent < self.interval_s:
            return None
        self.last_sent = now
        return self.flush()

    def flush(self) -> str | None:
        if not self.pending:
            return None
        text = "".join(self.pending)
        self.pending.clear()
        return text
