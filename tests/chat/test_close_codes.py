"""What a client really sees when daphne refuses a frame before the consumer (docs/protocol.md):
over 1 MiB, or a text frame that is not UTF-8, the connection is dropped without a close
frame (1006). The document used to promise 1009 and 1007; these tests hold it to the truth.
Other sockets are not disturbed, and the same client may reconnect and resume at once."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from tests.chat.conftest import ORIGIN, make_site, ws_connect, ws_receive_type, ws_send

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MIB = 1024 * 1024
PROTOCOL_DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_the_protocol_document_promises_the_close_code_clients_see() -> None:
    # it promised 1009 for a frame over 1 MiB and 1007 for bad UTF-8, which no client saw
    text = PROTOCOL_DOC.read_text(encoding="utf-8")
    assert re.search(r"clos\w*[^.|]*with (code )?100[79]\b", text) is None
    assert "close code **1006**" in text


def masked_text_frame(payload: bytes) -> bytes:
    """One client text frame, written by hand: a client library refuses to send bad UTF-8."""
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


def closed_without_close_frame(socket) -> bool:
    try:
        socket.recv(timeout=15)
    except ConnectionClosed as closed:
        return closed.rcvd is None  # no close frame from the server: the browser shows 1006
    return False


def test_oversized_and_invalid_utf8_frames_drop_the_connection(platform) -> None:
    site = make_site(name="close codes")
    with ws_connect(platform) as bystander:
        ws_send(bystander, {"type": "hello", "v": 1, "site_key": site.widget_key})
        ws_receive_type(bystander, "welcome")
        # a frame over daphne's 1 MiB limit
        with ws_connect(platform) as socket:
            socket.send("x" * (MIB + 1))
            assert closed_without_close_frame(socket)
        # a text frame that is not UTF-8
        with ws_connect(platform) as socket:
            socket.socket.sendall(masked_text_frame(b'{"type": "ping", "x": "\xff\xfe"}'))
            assert closed_without_close_frame(socket)
        # the bystander's socket is untouched, and a new socket works at once
        ws_send(bystander, {"type": "ping"})
        assert ws_receive_type(bystander, "pong")["type"] == "pong"
    with ws_connect(platform, origin=ORIGIN) as again:
        ws_send(again, {"type": "hello", "v": 1, "site_key": site.widget_key})
        assert ws_receive_type(again, "welcome")["type"] == "welcome"
