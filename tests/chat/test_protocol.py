"""Unit tests of client-frame validation (pure logic: no server needed)."""

from __future__ import annotations

import json
import uuid

import pytest

from chatplatform.chat import config
from chatplatform.chat.protocol import (
    ChatMessage,
    ErrorCode,
    Feedback,
    Hello,
    ProtocolError,
    parse_client_frame,
)


def code_of(text: str) -> ErrorCode:
    with pytest.raises(ProtocolError) as caught:
        parse_client_frame(text)
    return caught.value.code


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", ErrorCode.BAD_JSON),
        ("[1, 2]", ErrorCode.BAD_JSON),
        ('{"type": "launch_missiles"}', ErrorCode.UNKNOWN_TYPE),
        ('{"no_type": 1}', ErrorCode.UNKNOWN_TYPE),
        ('{"type": "hello", "v": 2, "site_key": "pk_x"}', ErrorCode.UNSUPPORTED_VERSION),
        ('{"type": "hello", "v": 1, "site_key": ""}', ErrorCode.BAD_FIELD),
        (
            '{"type": "hello", "v": 1, "site_key": "k", "conversation_id": "nope"}',
            ErrorCode.BAD_FIELD,
        ),
        # every string field is checked: a lone surrogate, a control character, a newline
        ('{"type": "hello", "v": 1, "site_key": "\\ud800"}', ErrorCode.BAD_FIELD),
        ('{"type": "hello", "v": 1, "site_key": "pk\\n"}', ErrorCode.BAD_FIELD),
        (
            '{"type": "hello", "v": 1, "site_key": "k", "visitor_id": "\\udfff"}',
            ErrorCode.BAD_FIELD,
        ),
        ('{"type": "hello", "v": 1, "site_key": "k", "visitor_id": 7}', ErrorCode.BAD_FIELD),
        ('{"type": "hello", "v": 1, "site_key": "k", "conversation_id": 5}', ErrorCode.BAD_FIELD),
        ('{"type": "feedback", "message_id": "\\ud800", "value": "up"}', ErrorCode.BAD_FIELD),
        # `v` is required and must be the integer version
        ('{"type": "hello", "site_key": "pk_x"}', ErrorCode.BAD_FIELD),
        ('{"type": "hello", "v": "1", "site_key": "pk_x"}', ErrorCode.BAD_FIELD),
        ('{"type": "hello", "v": 1.0, "site_key": "pk_x"}', ErrorCode.BAD_FIELD),
        ('{"type": "hello", "v": true, "site_key": "pk_x"}', ErrorCode.BAD_FIELD),
        ('{"type": "message", "text": "hi"}', ErrorCode.BAD_FIELD),
        ('{"type": "message", "client_message_id": "a b", "text": "hi"}', ErrorCode.BAD_FIELD),
        ('{"type": "message", "client_message_id": "c1", "text": 5}', ErrorCode.BAD_FIELD),
        (
            '{"type": "message", "client_message_id": "c1", "text": "  \\u0000 "}',
            ErrorCode.EMPTY_MESSAGE,
        ),
        ('{"type": "message", "client_message_id": "c1", "text": "\\ud800"}', ErrorCode.BAD_FIELD),
        ('{"type": "feedback", "message_id": "x", "value": "up"}', ErrorCode.BAD_FIELD),
    ],
)
def test_bad_frames_get_their_error_code(frame: str, code: ErrorCode) -> None:
    assert code_of(frame) == code


def test_message_over_the_limit_is_too_long_and_names_the_message() -> None:
    # given a message one character over the limit
    text = "x" * (config.MAX_MESSAGE_CHARS + 1)
    # when / then
    with pytest.raises(ProtocolError) as caught:
        parse_client_frame(json.dumps({"type": "message", "client_message_id": "c9", "text": text}))
    assert caught.value.code == ErrorCode.MESSAGE_TOO_LONG
    assert caught.value.frame()["ref"] == "c9"


def test_huge_frame_is_refused_before_parsing() -> None:
    assert code_of("{" + " " * (config.MAX_FRAME_BYTES + 1) + "}") == ErrorCode.FRAME_TOO_LARGE


def test_valid_frames_become_commands() -> None:
    conversation = str(uuid.uuid4())
    hello = parse_client_frame(
        json.dumps({"type": "hello", "v": 1, "site_key": "pk_a", "conversation_id": conversation})
    )
    assert hello == Hello(site_key="pk_a", conversation_id=conversation, visitor_id="")
    message = parse_client_frame(
        json.dumps({"type": "message", "client_message_id": "c-1", "text": " <b>hi</b>\x07 "})
    )
    # control characters are dropped, markup is kept verbatim: it is data, rendered as text
    assert message == ChatMessage(client_message_id="c-1", text="<b>hi</b>")
    feedback = parse_client_frame(
        json.dumps({"type": "feedback", "message_id": conversation, "value": "down"})
    )
    assert feedback == Feedback(message_id=conversation, positive=False)


def test_error_frame_shape() -> None:
    frame = ProtocolError(ErrorCode.RATE_LIMITED, "slow down", "c1").frame()
    assert frame == {"type": "error", "code": "rate_limited", "message": "slow down", "ref": "c1"}


DEEP_ARRAYS = "[" * 1000 + "]" * 1000  # 2 KB: the decoder's recursion limit, not the size cap
DEEP_HELLO = (
    '{"type": "hello", "v": 1, "site_key": "pk_x", "visitor_id": '
    + '{"a":' * 1400
    + "1"
    + "}" * 1400
    + "}"
)


@pytest.mark.parametrize("frame", [DEEP_ARRAYS, DEEP_HELLO, "[" * 17 + "]" * 17])
def test_deep_nesting_is_bad_json_not_a_recursion_error(frame: str) -> None:
    assert len(frame.encode()) <= config.MAX_FRAME_BYTES
    assert code_of(frame) == ErrorCode.BAD_JSON


def test_brackets_inside_the_text_are_not_nesting() -> None:
    text = "[{" * 900 + ' \\" ' + "}]" * 50  # a customer may paste anything, escaped quotes too
    frame = json.dumps({"type": "message", "client_message_id": "m1", "text": text})
    command = parse_client_frame(frame)
    assert isinstance(command, ChatMessage) and command.text == text.strip()
