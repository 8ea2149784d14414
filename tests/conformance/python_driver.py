"""The Python SDK's conformance driver: runs plan scenarios with parley_client's public API.

In-process from tests/conformance/test_python_sdk.py (one test per
scenario), or as a driver process under the harness like any other SDK's:

    .venv/bin/python -m tests.conformance.harness -- .venv/bin/python -m tests.conformance.python_driver

Each client talks to the gateway through its own TcpProxy, so that
``kill_connection`` cuts its TCP connection under the SDK (TLS included), as
a network loss would; the SDK has to notice and resume by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from parley.v1 import messages_pb2
from parley_client import (
    DisconnectedEvent,
    MemoryCursorStore,
    MessageEvent,
    ParleyClient,
    ParleyError,
    ReceiptEvent,
    Session,
)
from tests.conformance.plan import Endpoints
from tests.proxy import TcpProxy

DEFAULT_TIMEOUT_S = 10.0


class StepFailed(Exception):
    pass


class Client:
    """One device of one user: its SDK client, cursor store and what its application received."""

    def __init__(self, user_id: str, token: str, device_id: str, endpoints: Endpoints) -> None:
        self.user_id = user_id
        self.device_id = device_id
        host, port = endpoints.gateway.rsplit(":", 1)
        self.proxy = TcpProxy(0, int(port), host)
        self._token = token
        self._ca_file = endpoints.ca_file
        self.store = MemoryCursorStore()
        self.sdk: ParleyClient | None = None
        self.session: Session | None = None
        self._consumer: asyncio.Task[None] | None = None
        self.messages: dict[str, list[messages_pb2.Message]] = {}
        # How far expect_messages has read, per conversation.
        self.read_upto: dict[str, int] = {}
        self.receipts: list[messages_pb2.Receipt] = []
        self.failure: BaseException | None = None
        # Transport failures the session saw (and recovered from), and kill_connection steps.
        self.disconnects = 0
        self.kills = 0
        self.changed = asyncio.Condition()

    async def start(self) -> None:
        await self.proxy.start()
        self.sdk = ParleyClient(
            self.proxy.address, token=self._token, device_id=self.device_id, ca_file=self._ca_file
        )

    async def close(self) -> None:
        await self.disconnect()
        if self.sdk is not None:
            await self.sdk.close()
        await self.proxy.stop()

    async def connect(self, timeout: float) -> None:
        if self.session is not None:
            raise StepFailed("already connected")
        assert self.sdk is not None
        # Manual acks: a message counts as processed as soon as the driver has it, so the
        # cursor store is up to date whenever a step disconnects.
        self.session = self.sdk.session(cursor_store=self.store, ack_mode="manual")
        await self.session.start()
        self._consumer = asyncio.create_task(self._consume(self.session))
        await asyncio.wait_for(self.session.wait_synced(), timeout)

    async def disconnect(self) -> None:
        session, consumer, self.session, self._consumer = self.session, self._consumer, None, None
        if session is not None:
            await session.close()
        if consumer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await consumer

    def live(self) -> Session:
        if self.session is None:
            raise StepFailed("not connected (a connect step is missing)")
        return self.session

    async def _consume(self, session: Session) -> None:
        try:
            async for event in session:
                if isinstance(event, MessageEvent):
                    self.messages.setdefault(event.conversation_id, []).append(event.message)
                    await session.ack(event.conversation_id, event.seq)
                elif isinstance(event, ReceiptEvent):
                    self.receipts.append(event.receipt)
                elif isinstance(event, DisconnectedEvent):
                    self.disconnects += 1
                    continue
                else:
                    continue
                async with self.changed:
                    self.changed.notify_all()
        except Exception as exc:
            self.failure = exc
            async with self.changed:
                self.changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout), self.changed:
                while not predicate():
                    if self.failure is not None:
                        raise StepFailed(f"the session failed while waiting for {what}: {self.failure!r}")
                    await self.changed.wait()
        except TimeoutError:
            raise StepFailed(f"no {what} within {timeout:g} s") from None


def body_of(step: Mapping[str, Any]) -> bytes:
    if "body_size" in step:
        return b"x" * int(step["body_size"])
    if "body_hex" in step:
        return bytes.fromhex(step["body_hex"])
    return str(step["text"]).encode()


def describe(message: messages_pb2.Message) -> str:
    body = message.body.decode(errors="replace")
    shown = body if len(body) <= 40 else f"{body[:20]}...({len(message.body)} bytes)"
    return f"seq {message.seq} {shown!r} from {message.sender_id}"


class ScenarioRun:
    def __init__(self, scenario: Mapping[str, Any], endpoints: Endpoints) -> None:
        self.scenario = scenario
        self.endpoints = endpoints
        self.clients: dict[str, Client] = {}
        self.skipped: list[int] = []

    def conversation_id(self, step: Mapping[str, Any]) -> str:
        if "conversation_id" in step:
            return str(step["conversation_id"])
        return str(self.scenario["conversations"][step["conversation"]])

    def user_id(self, key: str) -> str:
        return str(self.scenario["users"][key]["user_id"])

    async def run(self) -> dict[str, Any]:
        name = self.scenario["name"]
        index = -1
        try:
            for key, spec in self.scenario["clients"].items():
                user = self.scenario["users"][spec["user"]]
                client = Client(user["user_id"], user["token"], spec["device_id"], self.endpoints)
                self.clients[key] = client
                await client.start()
            for index, step in enumerate(self.scenario["steps"]):  # noqa: B007 (read in except)
                await self.step(step)
            for key, client in self.clients.items():
                # Else the later steps passed over a connection the kill never cut: proves nothing.
                if client.kills and not client.disconnects:
                    raise StepFailed(f"{key}: kill_connection did not break the session's transport")
        except StepFailed as exc:
            return {"scenario": name, "status": "fail", "step": index, "detail": str(exc)}
        except Exception as exc:
            return {"scenario": name, "status": "fail", "step": index, "detail": f"driver error: {exc!r}"}
        finally:
            await asyncio.gather(*(c.close() for c in self.clients.values()), return_exceptions=True)
        result: dict[str, Any] = {"scenario": name, "status": "pass"}
        if self.skipped:
            result["skipped_steps"] = self.skipped
        return result

    async def step(self, step: Mapping[str, Any]) -> None:
        handler: Callable[[Client, Mapping[str, Any], float], Awaitable[None]] = getattr(
            self, f"op_{step['op']}"
        )
        await handler(self.clients[step["client"]], step, float(step.get("timeout_s", DEFAULT_TIMEOUT_S)))

    async def op_connect(self, client: Client, step: Mapping[str, Any], timeout: float) -> None:
        await client.connect(timeout)

    async def op_disconnect(self, client: Client, step: Mapping[str, Any], timeout: float) -> None:
        await client.disconnect()

    async def op_kill_connection(self, client: Client, step: Mapping[str, Any], timeout: float) -> None:
        client.proxy.kill()
        client.kills += 1

    async def _send(self, client: Client, step: Mapping[str, Any], text: bytes, timeout: float) -> Any:
        conversation_id = self.conversation_id(step)
        cmid = step.get("client_message_id")
        if "client_message_id_size" in step:
            cmid = "k" * int(step["client_message_id_size"])
        if step.get("via", "session") == "unary":
            assert client.sdk is not None
            return await asyncio.wait_for(
                client.sdk.send(conversation_id, text, cmid, device_id=client.device_id), timeout
            )
        return await client.live().send(conversation_id, text, client_message_id=cmid, timeout=timeout)

    async def op_send(self, client: Client, step: Mapping[str, Any], timeout: float) -> None:
        expect = step["expect"]
        try:
            ack = await self._send(client, step, body_of(step), timeout)
        except ParleyError as exc:
            want = expect.get("error")
            if want is None:
                raise StepFailed(f"send failed: {exc!r}") from None
            got = (exc.status.name, exc.code_name)
            if got != (want["grpc_status"], want["code"]):
                raise StepFailed(
                    f"expected {want['grpc_status']}/{want['code']}, got {got[0]}/{got[1]}"
                ) from None
            return
        if "error" in expect:
            raise StepFailed(f"expected {expect['error']['code']}, got an ack with seq {ack.seq}")
        if "seq" in expect and ack.seq != expect["seq"]:
            raise StepFailed(f"expected seq {expect['seq']}, got {ack.seq}")
        if "duplicate" in expect and ack.duplicate != expect["duplicate"]:
            raise StepFailed(f"expected duplicate={expect['duplicate']}, got {ack.duplicate}")

    async def op_send_many(self, client: Client, step: Mapping[str, Any], timeout: float) -> None:
        first = step.get("expect", {}).get("first_seq")
        for i in range(1, int(step["count"]) + 1):
            text = str(step["text"]).replace("{i}", str(i)).encode()
            ack = await self._send(client, step, text, timeout)
            if first is not None and ack.seq != first + i - 1:
                raise StepFailed(f"send {i}: expected seq {first + i - 1}, got {ack.seq}")

    def expected_messages(self, step: Mapping[str, Any]) -> list[dict[str, Any]]:
        if "messages" in step:
            return [dict(m) for m in step["messages"]]
        return [
            {
                "seq": int(step["first_seq"]) + i - 1,
                "text": str(step["text"]).replace("{i}", str(i)),
                "sender": step["sender"],
            }
            for i in range(1, int(step["count"]) + 1)
        ]

    async def op_expect_messages(self, client: Client, step: Mapping[str, Any], timeout: float) -> None:
        conversation_id = self.conversation_id(step)
        expected = self.expected_messages(step)
        start = client.read_upto.get(conversation_id, 0)
        end = start + len(expected)
        got = client.messages.setdefault(conversation_id, [])
        try:
            await client.wait_for(lambda: len(got) >= end, timeout, f"{len(expected)} messages")
        except StepFailed as exc:
            raise StepFailed(f"{exc}; got {[describe(m) for m in got[start:]]}") from None
        for want, message in zip(expected, got[start:end], strict=True):
            body = body_of(want)
            sender = self.user_id(want["sender"])
            cmid = want.get("client_message_id")
            if (
                message.seq != want["seq"]
                or message.body != body
                or message.sender_id != sender
                or (cmid is not None and message.client_message_id != cmid)
                or message.conversation_id != conversation_id
            ):
                raise StepFailed(
                    f"expected seq {want['seq']} {body[:40]!r} from {sender}, got {describe(message)}; "
                    f"all received since: {[describe(m) for m in got[start:]]}"
                )
        client.read_upto[conversation_id] = end

    async def op_resync(self, client: Client, step: Mapping[str, Any], timeout: float) -> None:
        if not await client.live().resync({self.conversation_id(step): int(step["after_seq"])}):
            raise StepFailed("resync while disconnected")

    async def op_mark_read(self, client: Client, step: Mapping[str, Any], timeout: float) -> None:
        await client.live().mark_read(self.conversation_id(step), int(step["seq"]))

    async def op_expect_receipt(self, client: Client, step: Mapping[str, Any], timeout: float) -> None:
        conversation_id = self.conversation_id(step)
        user_id = self.user_id(step["user"])
        kind = messages_pb2.ReceiptKind.Value(f"RECEIPT_KIND_{step['kind']}")

        def arrived() -> bool:
            return any(
                r.conversation_id == conversation_id
                and r.user_id == user_id
                and r.kind == kind
                and r.seq >= step["seq"]
                for r in client.receipts
            )

        try:
            await client.wait_for(
                arrived, timeout, f"{step['kind']} receipt of {user_id} at seq >= {step['seq']}"
            )
        except StepFailed as exc:
            seen = [(r.user_id, messages_pb2.ReceiptKind.Name(r.kind), r.seq) for r in client.receipts]
            raise StepFailed(f"{exc}; receipts received: {seen}") from None


async def run_scenario(scenario: Mapping[str, Any], endpoints: Endpoints) -> dict[str, Any]:
    return await ScenarioRun(scenario, endpoints).run()


async def run_plan(plan: Mapping[str, Any]) -> list[dict[str, Any]]:
    endpoints = Endpoints(plan["gateway"], plan["ws_url"], plan["ca_file"])
    return [await run_scenario(scenario, endpoints) for scenario in plan["scenarios"]]


def main() -> int:
    try:
        plan_path = os.environ["PARLEY_CONFORMANCE_PLAN"]
        results_path = os.environ["PARLEY_CONFORMANCE_RESULTS"]
    except KeyError as exc:
        print(
            f"python_driver: {exc.args[0]} is not set (run me under tests.conformance.harness)",
            file=sys.stderr,
        )
        return 2
    with open(plan_path) as f:
        plan = json.load(f)
    results = asyncio.run(run_plan(plan))
    with open(results_path, "w") as out:
        out.writelines(json.dumps(result) + "\n" for result in results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
