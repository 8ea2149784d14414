"""The `parley` CLI as real subprocesses against an in-process stack (real gateway, router, Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from parley.config import CassandraConfig, RedisConfig
from parley_client import JsonFileCursorStore
from parley_client.state import cursor_file
from tests.integration.clients.helpers import client_stack, eventually, users

CLI = [sys.executable, "-m", "parley_client.cli"]
SEND_LINE = re.compile(r"^conversation=(\S+) seq=(\d+) message_id=\S+$")


def cli_env(target: str, state_dir: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("PARLEY_TOKEN", "PARLEY_JWT_KEY", "PARLEY_DEVICE_ID")
    }
    # The in-process stack serves plaintext (TLS is covered by tests/security).
    env.update(PARLEY_GATEWAY=target, PARLEY_CLI_STATE_DIR=str(state_dir), PARLEY_PLAINTEXT="true")
    return env


async def run(env: dict[str, str], *args: str, timeout: float = 20.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def send(env: dict[str, str], *args: str) -> tuple[str, int]:
    code, out, err = await run(env, "send", *args)
    assert code == 0, err
    match = SEND_LINE.match(out.strip())
    assert match, out
    return match.group(1), int(match.group(2))


class Listener:
    """A running `parley listen --json`; its stdout read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stderr: list[str] = []
        self.ready = asyncio.Event()
        self._stderr_task = asyncio.create_task(self._read_stderr())

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode()
            self.stderr.append(line)
            if "listening as" in line:
                self.ready.set()

    async def wait_ready(self, timeout: float = 20.0) -> None:
        await asyncio.wait_for(self.ready.wait(), timeout)

    async def lines(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        assert self.proc.stdout is not None
        out: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while len(out) < count:
                raw = await self.proc.stdout.readline()
                assert raw, f"listen exited: {''.join(self.stderr)}"
                out.append(json.loads(raw))
        return out

    async def silent(self, wait: float = 0.5) -> None:
        assert self.proc.stdout is not None
        with contextlib.suppress(TimeoutError):
            line = await asyncio.wait_for(self.proc.stdout.readline(), wait)
            raise AssertionError(f"unexpected output: {line!r}")

    async def stop(self, sig: signal.Signals) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 10)
        await asyncio.wait_for(self._stderr_task, 5)
        return code


@contextlib.asynccontextmanager
async def listening(env: dict[str, str], user: str) -> AsyncIterator[Listener]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        "listen",
        "--as",
        user,
        "--json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    listener = Listener(proc)
    try:
        await listener.wait_ready()
        yield listener
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_send_then_listen_resumes_exactly_after_sigkill(
    redis_config: RedisConfig, tmp_path: Path
) -> None:
    alice, bob = users("alice", "bob")
    async with client_stack(redis_config) as stack:
        env = cli_env(stack.target, tmp_path)
        cid, seq = await send(env, "--as", alice, "--to", bob, "first")
        assert cid.startswith("d") and seq == 1
        assert await send(env, "--to", bob, "second", "--as", alice) == (cid, 2)  # options after the command

        async with listening(env, bob) as listener:
            backlog = await listener.lines(2)
            assert [(m["seq"], m["sender_id"], m["text"]) for m in backlog] == [
                (1, alice, "first"),
                (2, alice, "second"),
            ]
            assert all(m["conversation_id"] == cid and m["message_id"] and m["server_time"] for m in backlog)
            await send(env, "--as", alice, "--conversation", cid, "live", "one")
            [live] = await listener.lines(1)
            assert (live["seq"], live["text"]) == (3, "live one")
            # Printed lines are persisted at once: a SIGKILL right now loses nothing.
            device = (tmp_path / "device_id").read_text().strip()
            store_path = cursor_file(tmp_path, bob, device)

            async def persisted() -> bool:
                return (await JsonFileCursorStore(store_path).load()).get(cid) == 3

            await eventually(persisted, timeout=2)
            assert await listener.stop(signal.SIGKILL) == -signal.SIGKILL

        async with stack.client(alice) as ca:  # the SDK: faster than more CLI processes
            for text in ("missed 1", "missed 2"):
                await ca.send(cid, text)
            async with listening(env, bob) as listener:
                missed = await listener.lines(2)
                assert [(m["seq"], m["text"]) for m in missed] == [(4, "missed 1"), (5, "missed 2")]
                await listener.silent()
                await ca.send(cid, "after restart")
                assert [m["seq"] for m in await listener.lines(1)] == [6]
                assert await listener.stop(signal.SIGTERM) == 0, "".join(listener.stderr)
                assert not any("Traceback" in line for line in listener.stderr)


async def test_listen_exits_cleanly_on_sigint(redis_config: RedisConfig, tmp_path: Path) -> None:
    (bob,) = users("bob")
    async with (
        client_stack(redis_config) as stack,
        listening(cli_env(stack.target, tmp_path), bob) as listener,
    ):
        assert await listener.stop(signal.SIGINT) == 0, "".join(listener.stderr)
        assert not any("Traceback" in line for line in listener.stderr)


async def test_listen_count_exits_after_n_messages_and_remembers_them(
    redis_config: RedisConfig, tmp_path: Path
) -> None:
    alice, bob = users("alice", "bob")
    async with client_stack(redis_config) as stack, stack.client(alice) as ca:
        env = cli_env(stack.target, tmp_path)
        cid = (await ca.create_direct(bob)).id
        for text in ("a", "b", "c"):
            await ca.send(cid, text)
        code, out, err = await run(env, "listen", "--as", bob, "--json", "--count", "2")
        assert code == 0, err
        assert [json.loads(line)["text"] for line in out.splitlines()] == ["a", "b"]
        code, out, err = await run(env, "listen", "--as", bob, "--count", "1")
        assert code == 0, err
        assert out.endswith(f"{alice}: c\n") and out.count("\n") == 1


async def test_groups_conversations_and_error_exit_codes(redis_config: RedisConfig, tmp_path: Path) -> None:
    alice, bob, carol, dave = users("alice", "bob", "carol", "dave")
    async with client_stack(redis_config) as stack:
        env = cli_env(stack.target, tmp_path)
        code, out, err = await run(
            env, "group", "create", "--as", alice, "team", "--members", f"{bob},{carol}"
        )
        assert code == 0, err
        gid = out.strip()
        code, out, _ = await run(env, "group", "add", "--as", alice, "--conversation", gid, "--members", dave)
        assert code == 0 and dave in out.strip().split("members=")[1].split(",")
        code, out, _ = await run(
            env, "group", "remove", "--as", alice, "--conversation", gid, "--members", carol
        )
        assert code == 0 and carol not in out
        assert (await send(env, "--as", dave, "--conversation", gid, "hello team"))[1] == 1

        code, out, _ = await run(env, "conversations", "--as", bob, "--json")
        assert code == 0
        [summary] = [json.loads(line) for line in out.splitlines()]
        conversation = summary["conversation"]
        assert (conversation["id"], conversation["kind"], conversation["name"]) == (
            gid,
            "CONVERSATION_KIND_GROUP",
            "team",
        )
        assert summary["unread_count"] == 1 and summary["last_message"]["text"] == "hello team"
        code, out, _ = await run(env, "conversations", "--as", bob)
        assert code == 0 and "team" in out and "unread=1" in out

        # Expected failures: the status name and message on stderr, exit 1, no traceback.
        code, out, err = await run(env, "send", "--as", carol, "--conversation", gid, "let me back in")
        assert (code, out) == (1, "")
        assert err.startswith("parley: PERMISSION_DENIED: ") and "Traceback" not in err
        direct, _ = await send(env, "--as", alice, "--to", bob, "hi")
        code, _, err = await run(
            env, "group", "add", "--as", alice, "--conversation", direct, "--members", dave
        )
        assert code == 1 and err.startswith("parley: FAILED_PRECONDITION: ")
        code, _, err = await run(env, "conversations", "--token", "garbage")
        assert code == 1 and err.startswith("parley: UNAUTHENTICATED: ")


async def test_presence_of_a_connected_user(redis_config: RedisConfig, tmp_path: Path) -> None:
    alice, bob, carol = users("alice", "bob", "carol")
    async with client_stack(redis_config, presence=True) as stack, stack.client(bob) as cb:
        env = cli_env(stack.target, tmp_path)
        # Presence is visible only to users who share a conversation; carol shares none.
        await cb.create_direct(alice)
        async with cb.session() as sb:
            await asyncio.wait_for(sb.wait_synced(), 5)
            code, out, err = await run(env, "presence", "--as", alice, bob, carol, "--json")
            assert code == 0, err
            by_user = {p["user_id"]: p for p in map(json.loads, out.splitlines())}
            assert by_user[bob]["status"] == "PRESENCE_STATUS_ONLINE" and by_user[bob]["last_seen"]
            assert (
                by_user[carol]["status"] != "PRESENCE_STATUS_ONLINE" and by_user[carol]["last_seen"] is None
            )
            code, out, _ = await run(env, "presence", "--as", alice, bob)
            assert code == 0 and out.startswith(f"{bob} online last_seen=")


async def test_history_pages_and_all(
    redis_config: RedisConfig, cassandra_config: CassandraConfig, tmp_path: Path
) -> None:
    alice, bob = users("alice", "bob")
    async with client_stack(redis_config, cassandra=cassandra_config) as stack, stack.client(alice) as ca:
        cid = (await ca.create_direct(bob)).id
        for i in range(1, 8):
            await ca.send(cid, f"m{i}")

        async def stored() -> bool:  # the history writer copies the log to Cassandra asynchronously
            return [m.seq for m in (await ca.get_history(cid, limit=50)).messages] == list(range(1, 8))

        await eventually(stored, timeout=20)
        env = cli_env(stack.target, tmp_path)
        code, out, err = await run(env, "history", "--as", bob, "--with", alice, "--limit", "3")
        assert code == 0, err
        assert [line.split("] ", 1)[1].split(": ", 1)[1] for line in out.splitlines()] == ["m5", "m6", "m7"]
        assert "more messages: --before 5" in err
        code, out, err = await run(
            env, "history", "--as", bob, "--conversation", cid, "--all", "--limit", "3", "--json"
        )
        assert code == 0, err
        rows = [json.loads(line) for line in out.splitlines()]
        assert [(r["seq"], r["text"], r["sender_id"]) for r in rows] == [
            (i, f"m{i}", alice) for i in range(1, 8)
        ]
        code, out, _ = await run(
            env, "history", "--as", bob, "--with", alice, "--before", "4", "--all", "--json"
        )
        assert [json.loads(line)["seq"] for line in out.splitlines()] == [1, 2, 3]
        # No paging option: the whole conversation, oldest first.
        code, out, err = await run(env, "history", "--as", bob, "--with", alice, "--json")
        assert code == 0, err
        assert [json.loads(line)["seq"] for line in out.splitlines()] == list(range(1, 8))


@pytest.fixture(autouse=True)
def _no_user_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Never touch the developer's ~/.parley from a test.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
