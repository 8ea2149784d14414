"""A load generator process: ``python -m bench.worker`` (driven by the runner).

It speaks the public API with raw gRPC stubs (no SDK): users' session
streams (``ChatService.Connect``) multiplexed over a fixed number of HTTP/2
connections, conversations created through ``ConversationService``, and
messages sent on the streams at an open-loop rate (see bench/schedule.py).

Control is JSON lines: the runner writes one command per line to stdin
(``setup``, ``connect``, ``step``, ``quit``) and reads one event per line
from stdout; logs go to stderr. Every command is answered by exactly one
final event (``setup_done``, ``connect_done``, ``step_done``, ``bye``), with
``progress`` events in between while connecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from bench.accounting import Delivery, LossLedger, OrderTracker
from bench.hist import Latency
from bench.schedule import OpenLoopSchedule
from bench.workload import KIND_DIRECT, Plan, decode_body, encode_body, pick_conversation, plan_conversations
from parley.auth import mint_dev_token
from parley.v1 import errors_pb2, gateway_pb2, gateway_pb2_grpc, messages_pb2

log = logging.getLogger("bench.worker")

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    # One TCP connection per channel: without a local pool, channels with the
    # same target and arguments share one subchannel (and connection).
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]
CONNECT_TIMEOUT_S = 60.0
CONNECT_ATTEMPTS = 3
RECONNECT_BACKOFF_S = 0.5
SETUP_RPC_TIMEOUT_S = 60.0
# The step's sending starts this long after the command, so every worker starts together.
STEP_LEAD_S = 0.3
# Errors after which a send is resent (retry_shed): the server refused it before storing it,
# or its fate is unknown; a resend with the same client_message_id is stored at most once.
RESENT_CODES = frozenset(
    {
        errors_pb2.ERROR_CODE_OVERLOADED,
        errors_pb2.ERROR_CODE_DEADLINE_EXCEEDED,
        errors_pb2.ERROR_CODE_UNAVAILABLE,
    }
)
TICK_NS = 1_000_000


@dataclass(frozen=True)
class WorkerConfig:
    worker: int
    target: str
    run_id: str
    user_offset: int
    users: int
    connections: int
    group_size: int
    direct_share: float
    body_bytes: int
    seed: int
    setup_concurrency: int = 64
    # Resend sends the server shed or timed out (same client_message_id, after its
    # retry-after plus jitter, as the SDKs do) instead of counting them failed.
    retry_shed: bool = False


class Client:
    """One simulated user with one session stream."""

    __slots__ = ("call", "conversations", "index", "live", "metadata", "queue", "reader", "stub", "user_id")

    def __init__(self, index: int, user_id: str, stub: gateway_pb2_grpc.ChatServiceAsyncStub) -> None:
        self.index = index
        self.user_id = user_id
        self.metadata = (("authorization", f"Bearer {mint_dev_token(user_id, ttl_seconds=7 * 86400)}"),)
        self.stub = stub
        self.conversations: list[str] = []
        self.call: Any = None
        self.queue: asyncio.Queue[gateway_pb2.ConnectRequest | None] | None = None
        self.reader: asyncio.Task[None] | None = None
        self.live = False


class StepState:
    """Everything measured during one step."""

    def __init__(self, window_start_ns: int, window_end_ns: int) -> None:
        self.ledger = LossLedger()
        self.window_start_ns = window_start_ns
        self.window_end_ns = window_end_ns
        self.ack = Latency()
        self.delivery = Latency()
        self.lag = Latency()
        self.offered = 0
        self.sent = 0
        self.skipped = 0
        self.window_deliveries = 0
        self.window_acks = 0
        self.errors: Counter[str] = Counter()
        # Overload: resends of shed sends, and latency from the attempt the server admitted.
        self.retries = 0
        self.attempt_ns: dict[int, int] = {}
        self.attempts: dict[int, int] = {}
        self.requests: dict[int, tuple[Client, gateway_pb2.ConnectRequest]] = {}
        self.admitted_ack = Latency()
        self.admitted_delivery = Latency()
        self.stray = 0
        self.sending_done = False
        self.drained = asyncio.Event()

    def check_drained(self) -> None:
        """Wakes the drain wait once sending is over and nothing is owed any more."""
        if self.sending_done and not self.ledger.outstanding:
            self.drained.set()

    def in_window(self, t_ns: int) -> bool:
        return self.window_start_ns <= t_ns < self.window_end_ns


class Worker:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.plan: Plan = plan_conversations(config.users, config.group_size)
        self._rng = random.Random(config.seed)
        self._channels: list[grpc.aio.Channel] = []
        self.clients: list[Client] = []
        self.conversation_ids: list[str] = []
        self._members: list[tuple[int, ...]] = []
        self._order = OrderTracker()
        self._step: StepState | None = None
        self._next_msg_id = 1
        self._syncing: dict[int, asyncio.Future[None]] = {}
        self._closing = False
        self.stream_resets = 0
        self.stream_end_reasons: Counter[str] = Counter()
        self._background: set[asyncio.Task[None]] = set()

    # --- setup ----------------------------------------------------------------------------

    def user_id(self, index: int) -> str:
        return f"{self.config.run_id}-u{self.config.user_offset + index}"

    async def setup(self) -> dict[str, Any]:
        started = time.monotonic()
        self._channels = [
            grpc.aio.insecure_channel(self.config.target, options=[*CHANNEL_OPTIONS, ("bench.channel", i)])
            for i in range(self.config.connections)
        ]
        chat_stubs = [gateway_pb2_grpc.ChatServiceStub(ch) for ch in self._channels]
        self.clients = [
            Client(i, self.user_id(i), chat_stubs[i % len(chat_stubs)]) for i in range(self.config.users)
        ]
        conv_stubs = [gateway_pb2_grpc.ConversationServiceStub(ch) for ch in self._channels]
        self.conversation_ids = [""] * len(self.plan.conversations)
        self._members = [c.members for c in self.plan.conversations]
        semaphore = asyncio.Semaphore(self.config.setup_concurrency)
        failures: Counter[str] = Counter()

        async def create(index: int) -> None:
            planned = self.plan.conversations[index]
            creator = self.clients[planned.members[0]]
            stub = conv_stubs[index % len(conv_stubs)]
            async with semaphore:
                for attempt in range(3):
                    try:
                        if planned.kind == KIND_DIRECT:
                            peer = self.clients[planned.members[1]].user_id
                            direct = await stub.CreateDirect(
                                gateway_pb2.CreateDirectRequest(peer_user_id=peer),
                                metadata=creator.metadata,
                                timeout=SETUP_RPC_TIMEOUT_S,
                            )
                            self.conversation_ids[index] = direct.conversation.id
                        else:
                            group = await stub.CreateGroup(
                                gateway_pb2.CreateGroupRequest(
                                    name=f"bench group {index}",
                                    member_ids=[self.clients[m].user_id for m in planned.members[1:]],
                                ),
                                metadata=creator.metadata,
                                timeout=SETUP_RPC_TIMEOUT_S,
                            )
                            self.conversation_ids[index] = group.conversation.id
                        return
                    except grpc.aio.AioRpcError as exc:
                        failures[exc.code().name] += 1
                        await asyncio.sleep(0.5 * (attempt + 1))

        await asyncio.gather(*(create(i) for i in range(len(self.plan.conversations))))
        missing = sum(1 for cid in self.conversation_ids if not cid)
        for index, planned in enumerate(self.plan.conversations):
            for member in planned.members:
                self.clients[member].conversations.append(self.conversation_ids[index])
        return {
            "event": "setup_done",
            "conversations": len(self.plan.conversations),
            "missing_conversations": missing,
            "setup_errors": dict(failures),
            "seconds": round(time.monotonic() - started, 2),
        }

    # --- sessions -------------------------------------------------------------------------

    async def connect(self, rate: float, concurrency: int, emit: Any) -> dict[str, Any]:
        """Opens every user's stream at ``rate`` per second, ``concurrency`` handshakes at a time."""
        started = time.monotonic()
        semaphore = asyncio.Semaphore(concurrency)
        failures: Counter[str] = Counter()
        done = 0
        tasks: list[asyncio.Task[None]] = []
        last_progress = started

        async def one(client: Client) -> None:
            nonlocal done
            try:
                for attempt in range(CONNECT_ATTEMPTS):
                    reason = await self._open(client)
                    if reason is None:
                        done += 1
                        return
                    failures[reason] += 1
                    await asyncio.sleep(RECONNECT_BACKOFF_S * (attempt + 1))
            finally:
                semaphore.release()

        for i, client in enumerate(self.clients):
            due = started + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await semaphore.acquire()
            tasks.append(asyncio.create_task(one(client)))
            now = time.monotonic()
            if now - last_progress >= 2.0:
                last_progress = now
                emit({"event": "progress", "worker": self.config.worker, "opened": i + 1, "connected": done})
        await asyncio.gather(*tasks)
        # The population is stable from here on: keep the collector off it.
        gc.collect()
        gc.freeze()
        return {
            "event": "connect_done",
            "connected": sum(1 for c in self.clients if c.live),
            "users": len(self.clients),
            "connect_failures": dict(failures),
            "seconds": round(time.monotonic() - started, 2),
        }

    async def _open(self, client: Client) -> str | None:
        """Opens the client's stream and waits for sync_complete; returns a failure reason or None."""
        cursors = [
            messages_pb2.Cursor(conversation_id=cid, seq=self._order.position(client.index, cid))
            for cid in client.conversations
            if cid
        ]
        queue: asyncio.Queue[gateway_pb2.ConnectRequest | None] = asyncio.Queue()
        queue.put_nowait(
            gateway_pb2.ConnectRequest(
                hello=gateway_pb2.Hello(device_id="bench", sync=gateway_pb2.SyncFrame(cursors=cursors))
            )
        )
        client.queue = queue
        synced: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._syncing[client.index] = synced
        client.call = client.stub.Connect(_requests(queue), metadata=client.metadata)
        client.reader = asyncio.create_task(self._read(client, client.call))
        try:
            await asyncio.wait_for(asyncio.shield(synced), CONNECT_TIMEOUT_S)
        except TimeoutError:
            client.call.cancel()
            return "timeout"
        except StreamEnded as exc:
            return exc.reason
        finally:
            self._syncing.pop(client.index, None)
        return None

    async def _read(self, client: Client, call: Any) -> None:
        reason = "closed"
        try:
            async for response in call:
                kind = response.WhichOneof("frame")
                if kind == "message":
                    self._on_message(client, response.message)
                elif kind == "send_ack":
                    self._on_ack(client, response.send_ack)
                elif kind == "sync_complete":
                    client.live = True
                    synced = self._syncing.get(client.index)
                    if synced is not None and not synced.done():
                        synced.set_result(None)
                elif kind == "error":
                    self._on_error(response.error)
        except grpc.aio.AioRpcError as exc:
            reason = exc.code().name
        except asyncio.CancelledError:
            reason = "cancelled"
        except Exception:
            log.exception("session %s reader failed", client.user_id)
            reason = "reader-error"
        client.live = False
        synced = self._syncing.get(client.index)
        if synced is not None and not synced.done():
            synced.set_exception(StreamEnded(reason))
            return  # the connect loop retries
        if self._closing:
            return
        # A live stream ended under load: resume from the cursors, like a real client.
        self.stream_resets += 1
        self.stream_end_reasons[reason] += 1
        if self._step is not None:
            self._step.errors[f"stream_end:{reason}"] += 1
        task = asyncio.create_task(self._reconnect(client))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reconnect(self, client: Client) -> None:
        for attempt in range(1, 1000):
            await asyncio.sleep(min(RECONNECT_BACKOFF_S * attempt, 5.0))
            if self._closing:
                return
            if await self._open(client) is None:
                return

    # --- frames ---------------------------------------------------------------------------

    def _on_message(self, client: Client, message: messages_pb2.Message) -> None:
        now = time.monotonic_ns()
        self._order.observe(client.index, message.conversation_id, message.seq)
        step = self._step
        if step is None:
            return
        try:
            msg_id, intended_ns = decode_body(message.body)
        except ValueError:
            step.stray += 1
            return
        if step.ledger.delivered(msg_id, client.index) is Delivery.FIRST:
            if step.in_window(intended_ns):
                step.delivery.record_ns(now - intended_ns)
                attempt = step.attempt_ns.get(msg_id)
                if attempt is not None:  # the admitted attempt: no resend follows it
                    step.admitted_delivery.record_ns(now - attempt)
            step.check_drained()
        if step.in_window(now):
            step.window_deliveries += 1

    def _on_ack(self, client: Client, ack: messages_pb2.SendAck) -> None:
        now = time.monotonic_ns()
        if not ack.duplicate:
            self._order.observe(client.index, ack.conversation_id, ack.seq)
        step = self._step
        if step is None:
            return
        msg_id = int(ack.client_message_id)
        intended_ns = step.ledger.intended_ns(msg_id)
        if intended_ns is None or not step.ledger.acked(msg_id):
            step.stray += 1
            return
        if step.in_window(intended_ns):
            step.ack.record_ns(now - intended_ns)
            attempt = step.attempt_ns.get(msg_id)
            if attempt is not None:
                step.admitted_ack.record_ns(now - attempt)
        step.requests.pop(msg_id, None)
        if step.in_window(now):
            step.window_acks += 1
        step.check_drained()

    def _on_error(self, error: messages_pb2.Error) -> None:
        step = self._step
        if step is None:
            return
        step.errors[errors_pb2.ErrorCode.Name(error.code) if error.code else "UNKNOWN"] += 1
        if self.config.retry_shed and error.request_id.isdigit() and error.code in RESENT_CODES:
            msg_id = int(error.request_id)
            pending = step.requests.get(msg_id)
            if pending is not None:
                step.retries += 1
                # As the SDK does: the server's hint at least, backing off exponentially per message
                # with jitter, so shed clients do not return together and refusals stay cheap.
                attempts = step.attempts[msg_id] = step.attempts.get(msg_id, 0) + 1
                hint = error.retry_after.ToMilliseconds() / 1000 if error.HasField("retry_after") else 0.1
                ceiling = min(5.0, 0.1 * 2**attempts)
                delay = max(hint, self._rng.uniform(0.5 * ceiling, ceiling))
                asyncio.get_running_loop().call_later(delay, self._resend, step, msg_id)
                return
        if error.request_id.isdigit():
            step.ledger.failed(int(error.request_id))
            step.check_drained()

    def _resend(self, step: StepState, msg_id: int) -> None:
        pending = step.requests.get(msg_id)
        if pending is None or self._step is not step:
            return
        client, request = pending
        if client.queue is None or not client.live:
            # Its stream broke: the same send goes out again once it is back (below, next tick).
            asyncio.get_running_loop().call_later(0.2, self._resend, step, msg_id)
            return
        step.attempt_ns[msg_id] = time.monotonic_ns()
        client.queue.put_nowait(request)

    # --- sending --------------------------------------------------------------------------

    def _send(self, step: StepState, intended_ns: int) -> None:
        clients = self.clients
        sender = None
        for _ in range(4):
            candidate = clients[self._rng.randrange(len(clients))]
            if candidate.live and candidate.queue is not None:
                sender = candidate
                break
        if sender is None:
            step.skipped += 1
            return
        conv = pick_conversation(self.plan, sender.index, self.config.direct_share, self._rng)
        cid = self.conversation_ids[conv]
        if not cid:
            step.skipped += 1
            return
        msg_id = self._next_msg_id
        self._next_msg_id += 1
        recipients = [m for m in self._members[conv] if m != sender.index and clients[m].live]
        step.ledger.sent(msg_id, intended_ns, recipients)
        text_id = str(msg_id)
        assert sender.queue is not None
        request = gateway_pb2.ConnectRequest(
            request_id=text_id,
            send=gateway_pb2.SendFrame(
                conversation_id=cid,
                client_message_id=text_id,
                body=encode_body(msg_id, intended_ns, self.config.body_bytes),
            ),
        )
        if self.config.retry_shed:
            step.requests[msg_id] = (sender, request)
            step.attempt_ns[msg_id] = time.monotonic_ns()
        sender.queue.put_nowait(request)
        step.sent += 1

    async def step(
        self, rate: float, warmup_s: float, duration_s: float, drain_s: float, abort_after_s: float
    ) -> dict[str, Any]:
        start_ns = time.monotonic_ns() + int(STEP_LEAD_S * 1e9)
        window_start = start_ns + int(warmup_s * 1e9)
        window_end = window_start + int(duration_s * 1e9)
        step = StepState(window_start, window_end)
        schedule = OpenLoopSchedule(rate, start_ns, warmup_s + duration_s)
        resets_before = self.stream_resets
        gaps_before, repeats_before = self._order.gaps, self._order.repeats
        self._step = step
        aborted = ""
        next_check = 0
        while not schedule.finished:
            now = time.monotonic_ns()
            for intended in schedule.due(now):
                if step.in_window(intended):
                    step.offered += 1
                    step.lag.record_ns(now - intended)
                self._send(step, intended)
            if now >= next_check:
                next_check = now + 100_000_000
                oldest = step.ledger.oldest_outstanding_ns()
                if oldest is not None and now - oldest > abort_after_s * 1e9:
                    aborted = f"a message was still unanswered after {abort_after_s:g} s"
                    # Rates are per measured second: nothing after the abort counts.
                    step.window_end_ns = min(step.window_end_ns, now)
                    break
            upcoming = schedule.next_due_ns()
            if upcoming is not None:
                # Ticks of 1-5 ms: what fell due meanwhile goes out together, stamped with its
                # intended time (the measured schedule lag shows the tick).
                wait_ns = min(max(upcoming - time.monotonic_ns(), TICK_NS), 5_000_000)
                await asyncio.sleep(wait_ns / 1e9)
        send_end = time.monotonic_ns()
        step.sending_done = True
        step.check_drained()
        still_arriving = await self._drain(step, drain_s)
        drained_s = time.monotonic() - send_end / 1e9
        self._step = None
        measured_ns = min(window_end, send_end) - window_start
        loss = step.ledger.report()
        return {
            "event": "step_done",
            "worker": self.config.worker,
            "rate": rate,
            "aborted": aborted,
            "measured_s": max(0.0, measured_ns / 1e9),
            "drain_s": round(drained_s, 3),
            # Deliveries were still coming when the drain gave up: "lost" may be only late.
            "still_arriving": still_arriving,
            "offered": step.offered,
            "sent": step.sent,
            "skipped": step.skipped,
            "window_acks": step.window_acks,
            "window_deliveries": step.window_deliveries,
            "loss": loss.as_dict(),
            "errors": dict(step.errors),
            "retries": step.retries,
            "stray": step.stray,
            "order_gaps": self._order.gaps - gaps_before,
            "order_repeats": self._order.repeats - repeats_before,
            "stream_resets": self.stream_resets - resets_before,
            "live": sum(1 for c in self.clients if c.live),
            "hist": {
                "ack": step.ack.encode(),
                "delivery": step.delivery.encode(),
                "lag": step.lag.encode(),
                "admitted_ack": step.admitted_ack.encode(),
                "admitted_delivery": step.admitted_delivery.encode(),
            },
        }

    @staticmethod
    async def _drain(step: StepState, drain_s: float) -> bool:
        """Waits for what is still owed: up to drain_s, and up to 3x as long while it keeps arriving.

        Returns True if acks or deliveries were still arriving when it gave up.
        """
        deadline = time.monotonic() + drain_s
        hard_deadline = time.monotonic() + 3 * drain_s
        last = step.ledger.outstanding
        while not step.drained.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(step.drained.wait(), 1.0)
            now = time.monotonic()
            progressed = step.ledger.outstanding < last
            last = step.ledger.outstanding
            if now >= hard_deadline or (now >= deadline and not progressed):
                return progressed and not step.drained.is_set()
        return False

    # --- shutdown -------------------------------------------------------------------------

    async def close(self) -> None:
        self._closing = True
        for task in list(self._background):
            task.cancel()
        for client in self.clients:
            if client.queue is not None:
                client.queue.put_nowait(None)  # half-close: the gateway ends the session cleanly
        readers = [c.reader for c in self.clients if c.reader is not None]
        if readers:
            _, pending = await asyncio.wait(readers, timeout=10)
            for task in pending:
                task.cancel()
        for channel in self._channels:
            with contextlib.suppress(Exception):
                await channel.close()


class StreamEnded(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _requests(
    queue: asyncio.Queue[gateway_pb2.ConnectRequest | None],
) -> AsyncIterator[gateway_pb2.ConnectRequest]:
    while True:
        item = await queue.get()
        if item is None:
            return
        yield item


# --- the control loop -------------------------------------------------------------------------


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker: Worker | None = None
    while True:
        line = await reader.readline()
        if not line:
            break
        command = json.loads(line)
        name = command.pop("cmd")
        if name == "setup":
            worker = Worker(WorkerConfig(**command))
            emit(await worker.setup())
        elif name == "connect":
            assert worker is not None
            emit(await worker.connect(command["rate"], command["concurrency"], emit))
        elif name == "step":
            assert worker is not None
            emit(await worker.step(**command))
        elif name == "quit":
            break
        else:
            emit({"event": "error", "message": f"unknown command {name!r}"})
    if worker is not None:
        await worker.close()
    emit({"event": "bye"})


def main() -> None:
    import uvloop

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s worker %(message)s")
    uvloop.run(serve())


if __name__ == "__main__":
    main()
