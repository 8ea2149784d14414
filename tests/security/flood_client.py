"""An attacker's process: N concurrent Connects without a valid token, each on its own
connection, hello sent at once. Prints the count of each final status as JSON."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator

import grpc

from parley.v1 import gateway_pb2

BAD_TOKENS: list[tuple[tuple[str, str], ...]] = [
    (),
    (("authorization", "Bearer nope"),),
    (("authorization", "Basic x"),),
]


async def connect(address: str, i: int) -> str:
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
            async for _ in stub(requests(), metadata=BAD_TOKENS[i % len(BAD_TOKENS)]):
                pass
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
    return "OK"


async def main(address: str, count: int) -> None:
    codes = await asyncio.gather(*(connect(address, i) for i in range(count)))
    print(json.dumps(Counter(codes)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
