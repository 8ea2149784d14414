"""Internal RPCs need a service certificate: mutual TLS and a per-service allow-list (parley.tls).

Attacks from issue 10: with no credentials, RouterService/Append as "alice",
Fetch/GetHistory of anyone's conversation, AddMembers, RegisterSession. Here
every method of every internal service is called without TLS, with TLS but
no certificate, with a certificate of another CA carrying a real service's
name, with the CA's probe certificate and with the wrong service's
certificate: all refused, with grpcio and with grpcurl. The real caller
gets through, and internal reads still check the acting user's membership.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Awaitable
from pathlib import Path

import grpc
import pytest

from parley.auth import mint_dev_token
from parley.internal.v1 import history_pb2, history_pb2_grpc, presence_pb2, router_pb2, router_pb2_grpc
from parley.tls import ClientTLS
from parley_client import ParleyClient
from tests.security.pki import Pki
from tests.security.stack import SecureStack

SERVICES = {
    "router": router_pb2.DESCRIPTOR.services_by_name["RouterService"],
    "presence": presence_pb2.DESCRIPTOR.services_by_name["PresenceService"],
    "history": history_pb2.DESCRIPTOR.services_by_name["HistoryService"],
}
# Who calls whom in Parley; every other pair is refused.
CALLERS = {"router": {"gateway"}, "presence": {"gateway"}, "history": {"gateway", "router"}}
REFUSED_AT_HANDSHAKE = grpc.StatusCode.UNAVAILABLE


def paths(service: str) -> list[str]:
    descriptor = SERVICES[service]
    return [f"/{descriptor.full_name}/{method.name}" for method in descriptor.methods]


def raw_call(channel: grpc.aio.Channel, path: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    """A method called with raw bytes (an empty request is a valid message of every type)."""

    def identity(data: bytes) -> bytes:
        return data

    return channel.unary_unary(path, request_serializer=identity, response_deserializer=identity)


def channel_to(address: str, service: str, tls: ClientTLS | None) -> grpc.aio.Channel:
    if tls is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(
        address, tls.grpc_credentials(), options=[("grpc.ssl_target_name_override", service)]
    )


async def call_all(address: str, service: str, tls: ClientTLS | None) -> dict[str, grpc.StatusCode]:
    """Every method of ``service`` called with an empty request: the status each one ends with."""
    codes = {}
    async with channel_to(address, service, tls) as channel:
        for path in paths(service):
            try:
                await raw_call(channel, path)(b"", timeout=5)
                codes[path] = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                codes[path] = exc.code()
    return codes


@pytest.mark.parametrize("service", SERVICES)
async def test_no_internal_rpc_without_tls_or_without_a_client_certificate(
    stack: SecureStack, pki: Pki, service: str
) -> None:
    address = stack.internal()[service].address
    for tls in (None, pki.client(None)):
        codes = await call_all(address, service, tls)
        assert set(codes.values()) == {REFUSED_AT_HANDSHAKE}, codes


@pytest.mark.parametrize("service", SERVICES)
async def test_a_certificate_of_another_ca_with_a_real_service_name_is_refused(
    stack: SecureStack, pki: Pki, service: str
) -> None:
    address = stack.internal()[service].address
    for caller in CALLERS[service]:
        codes = await call_all(address, service, pki.client(caller, other_ca=True))
        assert set(codes.values()) == {REFUSED_AT_HANDSHAKE}, (caller, codes)


@pytest.mark.parametrize("service", SERVICES)
async def test_services_not_allowed_to_call_get_permission_denied(
    stack: SecureStack, pki: Pki, service: str
) -> None:
    address = stack.internal()[service].address
    for caller in {"probe", "gateway", "router", "presence", "history"} - CALLERS[service]:
        codes = await call_all(address, service, pki.client(caller))
        assert set(codes.values()) == {grpc.StatusCode.PERMISSION_DENIED}, (caller, codes)


@pytest.mark.parametrize("service", SERVICES)
async def test_the_real_callers_get_through(stack: SecureStack, pki: Pki, service: str) -> None:
    address = stack.internal()[service].address
    for caller in CALLERS[service]:
        codes = await call_all(address, service, pki.client(caller))
        # Empty requests: argument errors (or answers), never an authentication refusal.
        refused = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED, REFUSED_AT_HANDSHAKE}
        assert not refused & set(codes.values()), (caller, codes)


@pytest.mark.parametrize("service", [*SERVICES, "gateway"])
async def test_the_plaintext_health_port_serves_health_checks_only(stack: SecureStack, service: str) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    running = stack.gateway if service == "gateway" else stack.internal()[service]
    assert running.health_port > 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.health_port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    if service != "gateway":
        codes = await call_all(f"127.0.0.1:{running.health_port}", service, None)
        assert set(codes.values()) == {grpc.StatusCode.UNAUTHENTICATED}, codes
    else:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.health_port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await raw_call(channel, "/parley.v1.ConversationService/ListConversations")(
                    b"", metadata=(("authorization", f"Bearer {mint_dev_token('alice')}"),), timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def grpcurl(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs grpcurl without blocking the event loop the in-process servers run on."""
    process = await asyncio.create_subprocess_exec(
        str(binary), "-max-time", "5", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode is not None
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())


async def test_grpcurl_cannot_append_as_alice_without_the_gateways_certificate(
    stack: SecureStack, pki: Pki, grpcurl_bin: Path
) -> None:
    address = stack.router.address
    body = json.dumps(
        {
            "conversation_id": "d_0123456789abcdef01234567",
            "sender_id": "alice",
            "body": "aGk=",
            "client_message_id": "m1",
        }
    )
    method = "parley.internal.v1.RouterService/Append"
    ca = ["-cacert", pki.ca_file, "-servername", "router"]

    def cert(stem: str, *, other: bool = False) -> list[str]:
        return ["-cert", pki.path(f"{stem}.crt", other=other), "-key", pki.path(f"{stem}.key", other=other)]

    plaintext = await grpcurl(grpcurl_bin, "-plaintext", "-d", body, address, method)
    assert plaintext.returncode != 0 and "Failed to dial" in plaintext.stderr, plaintext.stderr
    no_cert = await grpcurl(grpcurl_bin, *ca, "-d", body, address, method)
    assert no_cert.returncode != 0 and "Failed to dial" in no_cert.stderr, no_cert.stderr
    impostor = await grpcurl(grpcurl_bin, *ca, *cert("gateway", other=True), "-d", body, address, method)
    assert impostor.returncode != 0 and "Failed to dial" in impostor.stderr, impostor.stderr
    probe = await grpcurl(grpcurl_bin, *ca, *cert("probe"), "-d", body, address, method)
    assert "PermissionDenied" in probe.stderr, probe.stderr
    # The probe certificate still lists services and checks health (reflection, probes).
    listed = await grpcurl(grpcurl_bin, *ca, *cert("probe"), address, "list")
    assert "parley.internal.v1.RouterService" in listed.stdout, listed.stderr
    # The gateway's certificate reaches the service (which then checks membership).
    gateway = await grpcurl(grpcurl_bin, *ca, *cert("gateway"), "-d", body, address, method)
    assert "NotFound" in gateway.stderr or "PermissionDenied" in gateway.stderr, gateway.stderr
    assert "may not call" not in gateway.stderr


async def test_internal_reads_refuse_users_who_are_not_members(stack: SecureStack, pki: Pki) -> None:
    alice, bob, mallory = (f"{name}-{uuid.uuid4().hex[:6]}" for name in ("alice", "bob", "mallory"))
    # The public path, over TLS, through every internal hop (mutual TLS).
    async with ParleyClient(
        stack.gateway.address, token=mint_dev_token(alice), ca_file=pki.ca_file
    ) as client:
        cid = (await client.create_direct(bob)).id
        ack = await client.send(cid, "for bob only")

    gateway = pki.client("gateway")
    async with (
        channel_to(stack.history.address, "history", gateway) as history_channel,
        channel_to(stack.router.address, "router", gateway) as router_channel,
    ):
        history = history_pb2_grpc.HistoryServiceStub(history_channel)
        router = router_pb2_grpc.RouterServiceStub(router_channel)

        async def status_of(call: Awaitable[object]) -> grpc.StatusCode:
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        def get_history(user: str) -> Awaitable[history_pb2.GetHistoryResponse]:
            return history.GetHistory(
                history_pb2.GetHistoryRequest(conversation_id=cid, user_id=user), timeout=10
            )

        assert await status_of(get_history(mallory)) == grpc.StatusCode.PERMISSION_DENIED
        assert await status_of(get_history("")) == grpc.StatusCode.INVALID_ARGUMENT
        # Not existing and not a member give the same answer.
        absent = history.GetHistory(
            history_pb2.GetHistoryRequest(conversation_id="d_" + "0" * 24, user_id=mallory), timeout=10
        )
        assert await status_of(absent) == grpc.StatusCode.PERMISSION_DENIED
        fetch = router.Fetch(router_pb2.FetchRequest(conversation_id=cid, user_id=mallory), timeout=10)
        assert await status_of(fetch) == grpc.StatusCode.PERMISSION_DENIED
        read = router.GetConversation(router_pb2.GetConversationRequest(conversation_id=cid, user_id=mallory))
        assert await status_of(read) == grpc.StatusCode.PERMISSION_DENIED

        fetched = await router.Fetch(router_pb2.FetchRequest(conversation_id=cid, user_id=bob), timeout=10)
        assert [m.body for m in fetched.messages] == [b"for bob only"]
        # History has it once the writer stored it.
        for _ in range(100):
            page = await history.GetHistory(history_pb2.GetHistoryRequest(conversation_id=cid, user_id=bob))
            if page.messages:
                break
            await asyncio.sleep(0.1)
        assert [(m.seq, m.body) for m in page.messages] == [(ack.seq, b"for bob only")]
