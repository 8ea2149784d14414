"""An attacker's process: N concurrent Connects, each on its own connection, hello sent at
once; prints the count of each final status as JSON.

Modes: ``unauthenticated`` (no or bad tokens) and ``metadata`` (a valid token plus ~1.9 MiB
of metadata per stream)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator

import grpc

from parley.auth import mint_dev_token
from parley.v1 import gateway_pb2

BAD_TOKENS: list[tuple[tuple[str, str], ...]] = [
    (),
    (("authorization", "Bearer nope"),),
    (("authorization", "Basic x"),),
]


PAD = "x" * (64 * 1024)


def metadata_for(mode: str, i: int) -> tuple[tuple[str, str], ...]:
    if mode == "metadata":
        token = (("authorization", f"Bearer {mint_dev_token(f'pad{i}')}"),)
        return token + tuple((f"x-pad-{n}", PAD) for n in range(30))
    return BAD_TOKENS[i % len(BAD_TOKENS)]


async def connect(address: str, mode: str, i: int) -> str:
    async def requests() -> AsyncIterator[gateway_pb2.ConnectRequest]:
        yield gateway_pb2.ConnectRequest(hello=gateway_pb2.Hello(device_id="d"))
        await asyncio.sleep(5)

    async with grpc.aio.insecure_channel(address) as channel:
        stub = channel.stream_stream(
            "/parley.v1.ChatService/Connect",
            request_serializer=gateway_pb2.ConnectRequest.SerializeToString,
            response_deserializer=gateway_pb2.ConnectResponse.FromString,
        )
        try:
            async for _ in stub(requests(), metadata=metadata_for(mode, i)):
                pass
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
            return code if code != "INTERNAL" else f"INTERNAL: {exc.details()}"
    return "OK"


async def main(address: str, mode: str, count: int) -> None:
    codes = await asyncio.gather(*(connect(address, mode, i) for i in range(count)))
    print(json.dumps(Counter(codes)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
