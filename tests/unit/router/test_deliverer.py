"""router.deliverer: the frame written to gateway inboxes around an already serialized message."""

from __future__ import annotations

import pytest

from parley.v1 import gateway_pb2, messages_pb2
from router.deliverer import message_frame, varint


@pytest.mark.parametrize("n", [1, 127, 128, 300, 2**21, 2**35])
def test_varint_is_protobufs_encoding(n: int) -> None:
    # Cursor.seq (field 2, uint64) serializes as its tag byte then n's varint.
    assert varint(n) == messages_pb2.Cursor(seq=n).SerializeToString()[1:]


def test_varint_of_zero_is_one_byte() -> None:
    assert varint(0) == b"\x00"


@pytest.mark.parametrize("size", [1, 127, 128, 70_000])
def test_message_frame_is_a_connect_response_carrying_the_message(size: int) -> None:
    message = messages_pb2.Message(conversation_id="d_1", seq=7, body=b"x" * size)
    frame = gateway_pb2.ConnectResponse.FromString(message_frame(message.SerializeToString()))
    assert frame.WhichOneof("frame") == "message"
    assert frame.message == message
