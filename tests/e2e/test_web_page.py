"""The web chat page (clients/web) in real headless Chromium, against the real gateway.

Router and gateway run in-process on real Redis, with the WebSocket bridge on
an ephemeral port serving the page. Chromium (the Debian package) is driven
through the DevTools protocol over its own WebSocket: tests open the page,
read its DOM with ``Runtime.evaluate`` and talk to it from a gRPC client.
The machine has no internet, so every background fetch of Chromium is off.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import grpc
import pytest
from websockets.asyncio.client import ClientConnection, connect

from gateway.app import build as build_gateway
from gateway.websocket import WebSocketBridge
from parley.auth import mint_dev_token
from parley.config import RedisConfig
from parley.server import RunningServer, serving
from parley.v1 import gateway_pb2, gateway_pb2_grpc, messages_pb2
from router.app import build as build_router
from tests.chat import RawSession, metadata
from tests.stack import gateway_config, router_config

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--mute-audio",
    "--window-size=1000,700",
    "--remote-debugging-port=0",
]
START_TIMEOUT = 30.0
TIMEOUT = 10.0

# The page's messages as data, read from the DOM the user sees.
MESSAGES_JS = """Array.from(document.querySelectorAll('#messages li.message'), li => ({
  conversation: li.dataset.conversation, seq: Number(li.dataset.seq), sender: li.dataset.sender,
  text: li.querySelector('.body').textContent, mine: li.classList.contains('mine')}))"""
STATUS_JS = "document.getElementById('status').textContent"


class DevTools:
    """A minimal Chrome DevTools Protocol client: commands by id, events ignored."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._next_id = 0
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                message = json.loads(raw)
                future = self._waiting.pop(message.get("id", -1), None)
                if future is not None and not future.done():
                    future.set_result(message)
        finally:
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(ConnectionError("the DevTools connection closed"))

    async def call(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> Any:
        self._next_id += 1
        request: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            request["sessionId"] = session
        future = asyncio.get_running_loop().create_future()
        self._waiting[self._next_id] = future
        await self._ws.send(json.dumps(request))
        reply = await asyncio.wait_for(future, TIMEOUT)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    async def close(self) -> None:
        await self._ws.close()
        with contextlib.suppress(Exception):
            await self._reader


@dataclasses.dataclass
class Page:
    devtools: DevTools
    session: str

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return await self.devtools.call(method, params, self.session)

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", {"url": url})

    async def evaluate(self, expression: str) -> Any:
        reply = await self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def messages(self) -> list[dict[str, Any]]:
        return list(await self.evaluate(MESSAGES_JS) or [])

    async def wait_until(self, what: str, expression: str, timeout: float = TIMEOUT) -> Any:
        """Polls a JS expression until it is truthy; fails showing the page's state."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                value = await self.evaluate(expression)
                if value:
                    return value
            except RuntimeError:
                pass  # between two documents while navigating
            if asyncio.get_running_loop().time() > deadline:
                state = await self.evaluate(f"({{status: {STATUS_JS}, messages: {MESSAGES_JS}}})")
                pytest.fail(f"page never showed {what}; page state: {state}")
            await asyncio.sleep(0.1)

    async def screenshot(self) -> bytes:
        reply = await self.call("Page.captureScreenshot", {"format": "png"})
        return base64.b64decode(reply["data"])


@dataclasses.dataclass
class Browser:
    process: asyncio.subprocess.Process
    devtools: DevTools

    async def new_page(self, ws_port: int) -> Page:
        target = await self.devtools.call("Target.createTarget", {"url": "about:blank"})
        attached = await self.devtools.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self.devtools, attached["sessionId"])
        await page.call("Page.enable")
        await page.call("Runtime.enable")
        # Ports get reused across tests: start without what an earlier page stored there.
        await page.call(
            "Storage.clearDataForOrigin", {"origin": f"http://127.0.0.1:{ws_port}", "storageTypes": "all"}
        )
        return page


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: these tests drive the Debian Chromium (apt-get install -y chromium; "
            "`make test` installs it)"
        )
    return CHROMIUM


@pytest.fixture(scope="module")
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    profile = Path(tempfile.mkdtemp(prefix="parley-chromium-"))
    log = (profile / "chromium.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        str(chromium), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank", stdout=log, stderr=log
    )
    try:
        # Chromium writes the port it picked, then the browser target's path.
        active = profile / "DevToolsActivePort"
        async with asyncio.timeout(START_TIMEOUT):
            while not active.exists() or len(active.read_text().split()) < 2:
                if process.returncode is not None:
                    pytest.fail(f"chromium exited with {process.returncode}: see {profile / 'chromium.log'}")
                await asyncio.sleep(0.05)
        port, path = active.read_text().split()[:2]
        ws = await connect(f"ws://127.0.0.1:{port}{path}", max_size=None)
        devtools = DevTools(ws)
        yield Browser(process, devtools)
        with contextlib.suppress(Exception):
            await devtools.call("Browser.close")
        await devtools.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
        log.close()
        shutil.rmtree(profile, ignore_errors=True)


@contextlib.asynccontextmanager
async def running_router(redis_config: RedisConfig) -> AsyncIterator[RunningServer]:
    async with serving(await build_router(router_config(redis_config), setup_telemetry=False)) as router:
        yield router


@contextlib.asynccontextmanager
async def gateway_with_bridge(
    redis_config: RedisConfig, router: RunningServer, ws_port: int = 0
) -> AsyncIterator[tuple[RunningServer, int]]:
    """A gateway as running_stack builds it, plus the bridge (ephemeral port unless given)."""
    config = dataclasses.replace(gateway_config(redis_config, router.address), ws_port=ws_port)
    spec = await build_gateway(config, setup_telemetry=False)
    bridge = next(c for c in spec.components if isinstance(c, WebSocketBridge))
    async with serving(spec) as gateway:
        yield gateway, bridge.port


async def create_direct(channel: grpc.aio.Channel, user: str, peer: str) -> str:
    stub = gateway_pb2_grpc.ConversationServiceStub(channel)
    reply = await stub.CreateDirect(
        gateway_pb2.CreateDirectRequest(peer_user_id=peer), metadata=metadata(user)
    )
    return reply.conversation.id


async def unary_send(channel: grpc.aio.Channel, user: str, cid: str, text: str) -> int:
    reply = await gateway_pb2_grpc.ChatServiceStub(channel).Send(
        gateway_pb2.SendRequest(conversation_id=cid, client_message_id=f"{user}-{text}", body=text.encode()),
        metadata=metadata(user),
    )
    return reply.ack.seq


async def delivered(session: RawSession, user: str, seq: int) -> None:
    """Waits for the receipt saying user's devices have everything up to seq."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            receipt = (await session.next_frame("receipt")).receipt
            if (receipt.user_id, receipt.kind) == (
                user,
                messages_pb2.RECEIPT_KIND_DELIVERED,
            ) and receipt.seq >= seq:
                return


def page_url(ws_port: int, user: str, **extra: str) -> str:
    query = urlencode({"as": user, "token": mint_dev_token(user), **extra})
    return f"http://127.0.0.1:{ws_port}/?{query}"


def shown(messages: list[dict[str, Any]]) -> list[tuple[int, str, str]]:
    return [(m["seq"], m["sender"], m["text"]) for m in messages]


async def test_page_exchanges_messages_with_a_grpc_client(
    redis_config: RedisConfig, browser: Browser, tmp_path: Path
) -> None:
    async with (
        running_router(redis_config) as router,
        gateway_with_bridge(redis_config, router) as (gateway, ws_port),
        grpc.aio.insecure_channel(gateway.address) as channel,
    ):
        cid = await create_direct(channel, "alice", "bob")
        alice = await RawSession(channel, "alice").open()
        await alice.next_frame("sync_complete")
        page = await browser.new_page(ws_port)
        # The page sends `send` once after its first sync: the browser's frame reaches alice.
        await page.goto(page_url(ws_port, "bob", conversation=cid, send="hello from the browser ✓"))
        await page.wait_until("a connected session", f"{STATUS_JS} === 'connected as bob'")
        got = await alice.messages(1)
        assert (got[0].sender_id, got[0].seq, got[0].body.decode()) == ("bob", 1, "hello from the browser ✓")
        await page.wait_until("its own message", "document.querySelector('li.mine[data-seq=\"1\"]') !== null")

        alice.send(cid, "hi bob <b>not bold</b>")
        await page.wait_until(
            "alice's message", "document.querySelector('li[data-sender=\"alice\"]') !== null"
        )
        assert shown(await page.messages()) == [
            (1, "bob", "hello from the browser ✓"),
            (2, "alice", "hi bob <b>not bold</b>"),
        ]
        assert all(m["conversation"] == cid for m in await page.messages())
        # The page acknowledged what it displayed: alice sees bob's delivery receipt.
        await delivered(alice, "bob", 2)
        # Markup in a message is text, never HTML.
        assert await page.evaluate("document.querySelector('#messages b') === null")

        # For a human look: pytest --basetemp=DIR keeps it under DIR.
        png = await page.screenshot()
        assert png.startswith(b"\x89PNG")
        await asyncio.to_thread((tmp_path / "web-page.png").write_bytes, png)
        await page.call("Page.close")
        await alice.close()


async def test_page_resumes_from_its_stored_cursors(redis_config: RedisConfig, browser: Browser) -> None:
    async with (
        running_router(redis_config) as router,
        gateway_with_bridge(redis_config, router) as (gateway, ws_port),
        grpc.aio.insecure_channel(gateway.address) as channel,
    ):
        cid = await create_direct(channel, "alice", "bob")
        alice = await RawSession(channel, "alice").open()
        await alice.next_frame("sync_complete")
        for text in ("one", "two"):
            await unary_send(channel, "alice", cid, text)
        page = await browser.new_page(ws_port)
        url = page_url(ws_port, "bob", conversation=cid)
        await page.goto(url)
        await page.wait_until("the backlog", "document.querySelectorAll('li.message').length === 2")
        stored = f"JSON.parse(localStorage.getItem('parley:bob:cursors') || '{{}}')[{json.dumps(cid)}]"
        assert await page.wait_until("a stored cursor of 2", f"{stored} === 2")
        await delivered(alice, "bob", 2)

        # Rewind the stored cursor behind the server's delivered position: a page that
        # resumes from its own cursors gets "two" again, one that does not would not.
        await page.evaluate(f"disconnect(); localStorage.setItem('parley:bob:cursors', '{{\"{cid}\": 1}}')")
        await page.goto("about:blank")
        await unary_send(channel, "alice", cid, "three")
        await page.goto(url)
        await page.wait_until(
            "the messages after the cursor", "document.querySelectorAll('li.message').length >= 2"
        )
        await asyncio.sleep(0.3)  # nothing else may follow
        assert shown(await page.messages()) == [(2, "alice", "two"), (3, "alice", "three")]
        assert await page.wait_until("a stored cursor of 3", f"{stored} === 3")
        await page.call("Page.close")
        await alice.close()


async def test_page_reconnects_after_the_gateway_restarts(
    redis_config: RedisConfig, browser: Browser
) -> None:
    async with running_router(redis_config) as router:
        async with (
            gateway_with_bridge(redis_config, router) as (gateway, ws_port),
            grpc.aio.insecure_channel(gateway.address) as channel,
        ):
            cid = await create_direct(channel, "alice", "bob")
            page = await browser.new_page(ws_port)
            await page.goto(page_url(ws_port, "bob", conversation=cid))
            await page.wait_until("a connected session", f"{STATUS_JS} === 'connected as bob'")
            await unary_send(channel, "alice", cid, "before")
            await page.wait_until("the first message", "document.querySelectorAll('li.message').length === 1")
        # The gateway stopped (1001): the page retries with backoff until one is back.
        await page.wait_until("the disconnect", f"!{STATUS_JS}.startsWith('connected')")
        async with (
            gateway_with_bridge(redis_config, router, ws_port=ws_port) as (gateway, _),
            grpc.aio.insecure_channel(gateway.address) as channel,
        ):
            await unary_send(channel, "alice", cid, "after")
            await page.wait_until("the reconnect", f"{STATUS_JS} === 'connected as bob'", timeout=15)
            await page.wait_until(
                "the missed message", "document.querySelectorAll('li.message').length === 2"
            )
            assert shown(await page.messages()) == [(1, "alice", "before"), (2, "alice", "after")]
            await page.call("Page.close")
