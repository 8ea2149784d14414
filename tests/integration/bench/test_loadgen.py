"""The Go load generator (bench/loadgen) against a real Parley and the bare relay.

Driven exactly as ``bench/runner.py`` drives it (``WorkerProcess``: the binary
and its JSON-lines control channel) for a few seconds of traffic:

- against router + gateway in-process (real Redis), over TLS with a development
  CA and dev JWTs: every send is acked and delivered once to every member, in
  seq order, with latencies in the histograms the runner decodes;
- against the bare relay with one member silently dropped from every group
  after setup: the generator must count those deliveries as lost (and the
  dropped members' own sends as refused), so the zero above is a measurement.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from bench.generator import build
from bench.hist import Latency
from bench.relay import ChatRelay, ConversationRelay, Relay
from bench.results import merge_worker_steps
from bench.runner import STEP_LEAD_S, WorkerProcess
from parley.auth import AuthConfig, Authenticator
from parley.config import RedisConfig
from parley.pki import EDGE, ensure_dev_pki
from parley.tls import ServerTLS
from parley.v1 import gateway_pb2_grpc
from tests.stack import running_stack

USERS = 40
GROUP_SIZE = 5
RATE = 100.0
STEP = {"warmup_s": 0.5, "duration_s": 2.0, "drain_s": 10.0, "abort_after_s": 10.0, "lead_s": STEP_LEAD_S}
EVENT_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def binary() -> Path:
    return build()


@contextlib.asynccontextmanager
async def generator(binary: Path, scratch: Path, target: str, **setup: Any) -> AsyncIterator[WorkerProcess]:
    process = await WorkerProcess.spawn(0, scratch, binary)
    try:
        process.send(
            {
                "cmd": "setup",
                "worker": 0,
                "target": target,
                "run_id": f"lg{id(scratch) % 100_000}",
                "user_offset": 0,
                "users": USERS,
                "connections": 3,
                "group_size": GROUP_SIZE,
                "direct_share": 0.5,
                "body_bytes": 64,
                "seed": 7,
                "retry_shed": False,
                **setup,
            }
        )
        done = await wait(process, "setup_done")
        assert done["missing_conversations"] == 0, done
        process.send({"cmd": "connect", "rate": 1000.0, "concurrency": 20})
        connected = await wait(process, "connect_done")
        assert connected["connected"] == USERS, connected
        yield process
    finally:
        await process.stop()


async def wait(process: WorkerProcess, event: str) -> dict[str, Any]:
    return await asyncio.wait_for(process.wait_for(event), EVENT_TIMEOUT_S)


async def run_step(process: WorkerProcess, **overrides: float) -> dict[str, Any]:
    process.send({"cmd": "step", "rate": RATE, **STEP, **overrides})
    return await wait(process, "step_done")


async def test_every_acked_send_reaches_every_member_of_a_real_parley_over_tls(
    redis_config: RedisConfig, binary: Path, tmp_path: Path
) -> None:
    pki = ensure_dev_pki(tmp_path / "pki")
    edge = ServerTLS(cert_file=str(pki / f"{EDGE}.crt"), key_file=str(pki / f"{EDGE}.key"))
    async with (
        running_stack(redis_config, gateway_overrides={"edge_tls": edge}) as stack,
        generator(binary, tmp_path, stack.gateway_addr, tls_ca=str(pki / "ca.crt")) as process,
    ):
        report = await run_step(process)

    loss = report["loss"]
    expected_sends = int(RATE * (STEP["warmup_s"] + STEP["duration_s"]))
    assert report["sent"] == loss["sent"] == expected_sends, report
    assert loss["acked"] == loss["sent"]
    assert loss["expected_deliveries"] > loss["sent"]  # groups of 5: more than one recipient on average
    assert loss["delivered"] == loss["expected_deliveries"]
    assert (loss["lost"], loss["failed"], loss["unacked"]) == (0, 0, 0)
    assert (loss["duplicates"], loss["unexpected"], report["stray"]) == (0, 0, 0)
    assert (report["order_gaps"], report["order_repeats"], report["skipped"]) == (0, 0, 0)
    assert report["errors"] == {} and report["stream_resets"] == 0
    assert not report["still_arriving"]
    # The histograms travel in the format the runner merges, with one value per send due in the
    # measured window (the warm-up is accounted for loss but not timed), all of them acked.
    merged, hists = merge_worker_steps([report])
    assert report["offered"] == int(RATE * STEP["duration_s"])
    assert hists["send_to_ack"].count == hists["schedule_lag"].count == report["offered"]
    assert report["offered"] < hists["send_to_delivery"].count < loss["delivered"]
    assert merged["latency"]["send_to_delivery"]["p50_ms"] > 0
    assert Latency.decode(report["hist"]["delivery"]).count == hists["send_to_delivery"].count


class LeakyRelay(Relay):
    """The bare relay, except that it forgets the last member of every group after set-up."""

    def forget_last_group_members(self) -> list[str]:
        forgotten = []
        for cid, members in self.members.items():
            if len(members) > 2:
                self.members[cid] = members[:-1]
                forgotten.append(members[-1])
        return forgotten


@contextlib.asynccontextmanager
async def relay_server(relay: Relay) -> AsyncIterator[str]:
    server = grpc.aio.server()
    gateway_pb2_grpc.add_ChatServiceServicer_to_server(ChatRelay(relay), server)
    gateway_pb2_grpc.add_ConversationServiceServicer_to_server(ConversationRelay(relay), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def test_deliveries_the_relay_never_makes_are_counted_lost(binary: Path, tmp_path: Path) -> None:
    relay = LeakyRelay(Authenticator(AuthConfig(development=True)))
    async with relay_server(relay) as address, generator(binary, tmp_path, address) as process:
        forgotten = relay.forget_last_group_members()
        assert len(forgotten) == USERS // GROUP_SIZE
        # What is lost never comes: no need to wait long for it.
        report = await run_step(process, drain_s=2.0)

    loss = report["loss"]
    # Sends to a group by its forgotten member are refused (owed to nobody); everything else is
    # acked, and each acked group message still owes the forgotten member its copy.
    assert loss["failed"] > 0 and report["errors"] == {"ERROR_CODE_NOT_A_MEMBER": loss["failed"]}
    assert loss["acked"] + loss["failed"] == loss["sent"] == report["sent"]
    assert loss["lost"] > 0
    assert loss["delivered"] + loss["lost"] == loss["expected_deliveries"]
    assert loss["duplicates"] == 0 and report["stray"] == 0
    # The drain gave up on what never came (nothing was still arriving).
    assert not report["still_arriving"]
