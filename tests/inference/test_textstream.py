"""Incremental detokenization, stop sequences and delta coalescing (pure logic)."""

from __future__ import annotations

from inference.textstream import Coalescer, TextStream

# A fake "tokenizer" where token i is the i-th character of a fixed string keeps these tests
# about the streaming rules, not about a vocabulary.
TEXT = "Hello there. STOP here"


def decode(ids: list[int]) -> str:
    return "".join(TEXT[i] for i in ids)


def feed(stream: TextStream, length: int) -> list[str]:
    return [stream.push(list(range(n))) for n in range(1, length + 1)]


def test_deltas_concatenate_to_the_decoded_text() -> None:
    stream = TextStream(decode)
    deltas = feed(stream, len(TEXT))
    assert "".join(deltas) + stream.finish() == TEXT


def test_stop_sequence_cuts_text_and_is_never_shown() -> None:
    # given a stop sequence in the middle of the output
    stream = TextStream(decode, stop=["STOP"])
    # when tokens arrive one at a time
    deltas = feed(stream, len(TEXT))
    # then the text ends right before it, and no partial "ST" leaked out first
    assert stream.stopped
    assert "".join(deltas) == "Hello there. "
    assert stream.text == "Hello there. "
    assert all("S" not in d for d in deltas)


def test_partial_stop_prefix_is_released_when_generation_ends() -> None:
    stream = TextStream(decode, stop=["STOPPED"])
    shown = "".join(feed(stream, len("Hello there. STO")))
    assert shown == "Hello there. "  # "STO" could still become the stop sequence
    assert stream.finish() == "STO"


def test_incomplete_utf8_character_is_held_back() -> None:
    pieces = ["caf", "caf\ufffd", "café"]
    stream = TextStream(lambda ids: pieces[len(ids) - 1])
    assert [stream.push([0] * n) for n in (1, 2, 3)] == ["caf", "", "é"]


def test_coalescer_sends_first_text_at_once_then_at_most_every_interval() -> None:
    coalescer = Coalescer(interval_s=0.030)
    assert coalescer.add("a", now=0.000) == "a"
    assert coalescer.add("b", now=0.010) is None
    assert coalescer.add("c", now=0.020) is None
    assert coalescer.add("d", now=0.031) == "bcd"
    assert coalescer.add("e", now=0.040) is None
    assert coalescer.flush() == "e"
    assert coalescer.flush() is None
