"""The baseline: a bare grpc.aio relay of the same public API, in one process.

``python -m bench.relay --port N`` serves ``ChatService.Connect`` and
``ConversationService.CreateDirect/CreateGroup`` from memory: no Redis, no
Cassandra, no router hop, no durability. It does what any gRPC chat server
must do at minimum (authenticate the stream, assign a per-conversation seq,
ack the sender, push to the other members' streams through one queue and
writer per session) and nothing else, so Parley's throughput can be stated
as a fraction of what grpc.aio in Python can relay on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from parley.auth import AuthConfig, Authenticator
from parley.ids import direct_conversation_id, new_group_id, new_message_id
from parley.v1 import errors_pb2, gateway_pb2, gateway_pb2_grpc, messages_pb2

SERVER_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_concurrent_streams", 100_000),
    ("grpc.so_reuseport", 0),
]


class Relay:
    def __init__(self, auth: Authenticator) -> None:
        self.auth = auth
        self.members: dict[str, tuple[str, ...]] = {}
        self.seq: dict[str, int] = {}
        self.sessions: dict[str, dict[int, asyncio.Queue[gateway_pb2.ConnectResponse | None]]] = {}

    def user(self, context: Any) -> str:
        return self.auth.user_from_metadata(context.invocation_metadata())

    def create(
        self,
        cid: str,
        kind: messages_pb2.ConversationKind.ValueType,
        name: str,
        creator: str,
        members: list[str],
    ) -> messages_pb2.Conversation:
        unique = tuple(dict.fromkeys([creator, *members]))
        self.members.setdefault(cid, unique)
        self.seq.setdefault(cid, 0)
        return messages_pb2.Conversation(
            id=cid, kind=kind, name=name, member_ids=sorted(self.members[cid]), created_by=creator
        )


class ChatRelay(gateway_pb2_grpc.ChatServiceServicer):
    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    async def Send(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "the relay serves streams only")

    async def Connect(
        self, request_iterator: AsyncIterator[gateway_pb2.ConnectRequest], context: Any
    ) -> AsyncIterator[gateway_pb2.ConnectResponse]:
        relay = self._relay
        user = relay.user(context)
        requests = request_iterator.__aiter__()
        hello = await requests.__anext__()
        if hello.WhichOneof("frame") != "hello":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the first frame must be hello")
        queue: asyncio.Queue[gateway_pb2.ConnectResponse | None] = asyncio.Queue()
        key = id(queue)
        relay.sessions.setdefault(user, {})[key] = queue

        async def read() -> None:
            try:
                async for request in requests:
                    if request.WhichOneof("frame") != "send":
                        continue
                    send = request.send
                    members = relay.members.get(send.conversation_id)
                    if members is None or user not in members:
                        queue.put_nowait(
                            gateway_pb2.ConnectResponse(
                                error=messages_pb2.Error(
                                    request_id=request.request_id,
                                    code=errors_pb2.ERROR_CODE_NOT_A_MEMBER,
                                    message="not a member",
                                )
                            )
                        )
                        continue
                    seq = relay.seq[send.conversation_id] + 1
                    relay.seq[send.conversation_id] = seq
                    now = Timestamp()
                    now.FromNanoseconds(time.time_ns())
                    message_id = new_message_id()
                    frame = gateway_pb2.ConnectResponse(
                        message=messages_pb2.Message(
                            conversation_id=send.conversation_id,
                            seq=seq,
                            message_id=message_id,
                            sender_id=user,
                            sender_device_id=hello.hello.device_id,
                            client_message_id=send.client_message_id,
                            body=send.body,
                            server_time=now,
                        )
                    )
                    for member in members:
                        for session_key, target in relay.sessions.get(member, {}).items():
                            if session_key != key:
                                target.put_nowait(frame)
                    queue.put_nowait(
                        gateway_pb2.ConnectResponse(
                            send_ack=messages_pb2.SendAck(
                                client_message_id=send.client_message_id,
                                conversation_id=send.conversation_id,
                                seq=seq,
                                message_id=message_id,
                                server_time=now,
                            )
                        )
                    )
            finally:
                queue.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            yield gateway_pb2.ConnectResponse(welcome=gateway_pb2.Welcome(user_id=user, session_id=str(key)))
            yield gateway_pb2.ConnectResponse(sync_complete=gateway_pb2.SyncComplete())
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item
        finally:
            reader.cancel()
            sessions = relay.sessions.get(user, {})
            sessions.pop(key, None)
            if not sessions:
                relay.sessions.pop(user, None)


class ConversationRelay(gateway_pb2_grpc.ConversationServiceServicer):
    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    # The bench only creates conversations; the rest of the API is not relayed.
    async def AddMembers(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the relay")

    async def RemoveMembers(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the relay")

    async def GetConversation(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the relay")

    async def ListConversations(self, request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the relay")

    async def CreateDirect(
        self, request: gateway_pb2.CreateDirectRequest, context: Any
    ) -> gateway_pb2.CreateDirectResponse:
        user = self._relay.user(context)
        cid = direct_conversation_id(user, request.peer_user_id)
        created = cid not in self._relay.members
        conversation = self._relay.create(
            cid, messages_pb2.CONVERSATION_KIND_DIRECT, "", user, [request.peer_user_id]
        )
        return gateway_pb2.CreateDirectResponse(conversation=conversation, created=created)

    async def CreateGroup(
        self, request: gateway_pb2.CreateGroupRequest, context: Any
    ) -> gateway_pb2.CreateGroupResponse:
        user = self._relay.user(context)
        conversation = self._relay.create(
            new_group_id(), messages_pb2.CONVERSATION_KIND_GROUP, request.name, user, list(request.member_ids)
        )
        return gateway_pb2.CreateGroupResponse(conversation=conversation)


async def serve(host: str, port: int) -> None:
    relay = Relay(Authenticator(AuthConfig(development=True)))
    server = grpc.aio.server(options=SERVER_OPTIONS)
    gateway_pb2_grpc.add_ChatServiceServicer_to_server(ChatRelay(relay), server)
    gateway_pb2_grpc.add_ConversationServiceServicer_to_server(ConversationRelay(relay), server)
    # Health only so the runner waits for it like for the services.
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"relay serving on {host}:{bound}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    import uvloop

    parser = argparse.ArgumentParser(prog="python -m bench.relay")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
