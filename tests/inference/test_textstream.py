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


def decode_bytes(ids: list[int]) -> str:
    # A byte-level "tokenizer": one token per byte, like byte-level BPE's fallback tokens.
    return bytes(ids).decode("utf-8", errors="replace")


def test_incomplete_utf8_character_is_held_back() -> None:
    ids = list("café!".encode())  # é is two bytes: 0xC3 0xA9
    stream = TextStream(decode_bytes)
    deltas = [stream.push(ids[:n]) for n in range(1, len(ids) + 1)]
    assert deltas == ["c", "a", "f", "", "é", "!"]


def test_incremental_decoding_matches_decoding_everything() -> None:
    text = "Grüße, 日本 🙂 and plain text"
    ids = list(text.encode())
    stream = TextStream(decode_bytes)
    shown = "".join(stream.push(ids[:n]) for n in range(1, len(ids) + 1)) + stream.finish()
    assert shown == text == stream.text


def test_a_dangling_partial_character_is_dropped_at_the_end() -> None:
    ids = list(b"ok") + [0xE6]  # the first byte of a three-byte character
    stream = TextStream(decode_bytes)
    shown = "".join(stream.push(ids[:n]) for n in range(1, len(ids) + 1))
    assert shown + stream.finish() == "ok"


def test_coalescer_sends_first_text_at_once_then_at_most_every_interval() -> None:
    coalescer = Coalescer(interval_s=0.030)
    assert coalescer.add("a", now=0.000) == "a"
    assert coalescer.add("b", now=0.010) is None
    assert coalescer.add("c", now=0.020) is None
    assert coalescer.add("d", now=0.031) == "bcd"
    assert coalescer.add("e", now=0.040) is None
    assert coalescer.flush() == "e"
    assert coalescer.flush() is None
