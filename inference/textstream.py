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

    Decoding is incremental (the offsets scheme of text-generation-inference): each push
    decodes only the tokens since the last complete text, plus the tokens before them as
    context (byte-level BPE spacing depends on the neighbour), so a long answer costs the
    same per token as a short one instead of re-decoding everything every step.
    """

    decode: Callable[[Sequence[int]], str]
    stop: Sequence[str] = ()
    text: str = ""  # everything decoded so far, stop sequence excluded once stopped
    emitted: int = 0  # characters of `text` already handed out
    stopped: bool = False
    _prefix_offset: int = 0  # start of the context window for the next decode
    _read_offset: int = 0  # tokens before this are in `text`
    _ids: Sequence[int] = ()

    def push(self, token_ids: Sequence[int]) -> str:
        """All generated ids so far in; new displayable text out."""
        if self.stopped:
            return ""
        self._ids = token_ids
        self._decode_new(allow_partial=False)
        for stop in self.stop:
            at = self.text.find(stop, max(0, self.emitted - len(stop)))
            if stop and at != -1:
                self.text = self.text[:at]
                self.stopped = True
        safe_end = len(self.text)
        if not self.stopped:
            safe_end = min(safe_end, self._end_before_partial_stop())
        safe_end = max(safe_end, self.emitted)
        delta = self.text[self.emitted : safe_end]
        self.emitted = safe_end
        return delta

    def finish(self) -> str:
        """The generation ended: release anything held back (a partial stop is just text)."""
        if not self.stopped:
            self._decode_new(allow_partial=True)
        delta = self.text[self.emitted :]
        self.emitted = len(self.text)
        return delta

    def _decode_new(self, allow_partial: bool) -> None:
        """Append the text of tokens not yet decoded, if it ends in a complete character."""
        ids = self._ids
        before = self.decode(ids[self._prefix_offset : self._read_offset])
        after = self.decode(ids[self._prefix_offset :])
        if allow_partial:
            after = after.rstrip(_INCOMPLETE_CHAR)
        elif after.endswith(_INCOMPLETE_CHAR):
            return  # the last token ends mid-character: wait for the next one
        if len(after) > len(before):
            self.text += after[len(before) :]
            self._prefix_offset, self._read_offset = self._read_offset, len(ids)

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
