"""The session stream over WebSocket, for browsers; also serves the web chat page.

Browsers cannot open gRPC streams, so this bridge carries the same
``parley.v1.ConnectRequest``/``ConnectResponse`` frames over a WebSocket and
runs the same transport-neutral session (``ChatServicer.session_stream``).

Endpoint ``/v1/connect``. A second endpoint, ``/v1/call``, carries unary calls
(conversations, history, presence, one-shot send) as ``parley.v1.BridgeRequest``/
``BridgeResponse`` envelopes (gateway.bridge_calls). Authentication happens
before the upgrade (HTTP 401 otherwise), with the JWT in either

* the subprotocol list: ``new WebSocket(url, ["parley.v1", "bearer.<JWT>"])``
  (browsers cannot set headers; the server answers with ``parley.v1``), or
* the query string: ``/v1/connect?access_token=<JWT>``.

No cookie is ever used, so a cross-site page cannot ride on a user's
credentials; that is why the Origin header is not checked.

Encodings: a text message is the protobuf JSON mapping of a frame (field
names as in the .proto, e.g. ``request_id``; bytes fields such as
``send.body`` are base64; 64-bit integers are strings in output and accepted
as numbers or strings in input). A binary message is the serialized protobuf.
The server answers in the encoding of the client's first message (JSON until
then). A client message that cannot be decoded gets an ``error`` frame
(INVALID_ARGUMENT) and the socket stays open.

Close codes when a session ends with an error (an ``error`` frame with the
details is sent first) come from the one error table, ``parley.errors.ERROR_TABLE``
(documented in docs/PROTOCOL.md); besides them, 1001 means the gateway is
shutting down and 1009 a client message larger than the limit.

On a development stack (``PARLEY_ENV=development``) ``GET /v1/dev/token?user_id=NAME``
mints a token for the web chat's sign-in (gateway.dev_tokens); elsewhere it is 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast
from urllib.parse import parse_qs, urlsplit

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from gateway.bridge_calls import BridgeCalls
from gateway.dev_tokens import PATH as DEV_TOKEN_PATH
from gateway.dev_tokens import DevTokens
from gateway.metrics import WEBSOCKET
from gateway.servicer import ChatServicer
from gateway.static import StaticFile, load_static
from parley import errors, limits
from parley.auth import Authenticator
from parley.v1 import bridge_pb2, gateway_pb2

M = TypeVar("M", bound=Message)

log = logging.getLogger(__name__)

CONNECT_PATH = "/v1/connect"
CALL_PATH = "/v1/call"
# Calls of one /v1/call socket running at once; the next request is read when one ends.
MAX_CONCURRENT_CALLS = 8
SUBPROTOCOL = Subprotocol("parley.v1")
BEARER_PREFIX = "bearer."
ACCESS_TOKEN_PARAM = "access_token"
# A 64 KiB body is ~87 KiB once base64'd into JSON; this leaves room and bounds memory.
MAX_MESSAGE_BYTES = 256 * 1024
# A WebSocket close reason must fit in a control frame (125 bytes with the code).
MAX_CLOSE_REASON = 120


def _close_reason(message: str) -> str:
    encoded = message.encode()
    if len(encoded) <= MAX_CLOSE_REASON:
        return message
    return encoded[: MAX_CLOSE_REASON - 3].decode(errors="ignore") + "..."


def decode(message: str | bytes, into: M) -> M:
    """A client message in either encoding (JSON text, protobuf binary) parsed into ``into``;
    InvalidArgument if it is not one."""
    try:
        if isinstance(message, str):
            json_format.Parse(message, into)
        else:
            into.ParseFromString(message)
    except (json_format.ParseError, DecodeError) as exc:
        kind = "JSON" if isinstance(message, str) else "protobuf"
        raise errors.InvalidArgument(f"malformed {kind} {into.DESCRIPTOR.name}: {exc}") from None
    return into


def encode(message: Message, binary: bool) -> str | bytes:
    """A server message in the encoding the client chose."""
    if binary:
        return message.SerializeToString()
    fields = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False)


def _request_id_of(message: str | bytes) -> str:
    """The request_id of a JSON frame that failed to decode, when there is one to echo."""
    if not isinstance(message, str):
        return ""
    with contextlib.suppress(ValueError, RecursionError):
        value = json.loads(message)
        if isinstance(value, dict) and isinstance(value.get("request_id"), str):
            return cast(str, value["request_id"])[:128]
    return ""


def _token_from(request: Request) -> str | None:
    for header in request.headers.get_all("Sec-WebSocket-Protocol"):
        for item in header.split(","):
            offered = item.strip()
            if offered.startswith(BEARER_PREFIX):
                return offered[len(BEARER_PREFIX) :]
    values = parse_qs(urlsplit(request.path).query).get(ACCESS_TOKEN_PARAM)
    return values[0] if values else None


def _select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    # The bearer.<JWT> entry is only a carrier for the token: never echo it back.
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


class _Connection(ServerConnection):
    # Set by process_request once the token checked out; read by the handler.
    user_id: str = ""
    token: str = ""


@dataclass
class _Encoding:
    # None until the client's first message decides it.
    binary: bool | None = None


class WebSocketBridge:
    """A Component: a WebSocket server running sessions on the gateway's ChatServicer."""

    def __init__(
        self,
        chat: ChatServicer,
        authenticator: Authenticator,
        host: str,
        port: int,
        static_dir: Path | None,
        *,
        calls: BridgeCalls | None = None,
        dev_tokens: DevTokens | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        ping_interval_s: float = 20.0,
        ping_timeout_s: float = 20.0,
        close_timeout_s: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._chat = chat
        self._auth = authenticator
        self._host = host
        self._port = port
        self._static_dir = static_dir
        self._calls = calls
        self._dev_tokens = dev_tokens
        self._max_message_bytes = max_message_bytes
        self._ping_interval_s = ping_interval_s
        self._ping_timeout_s = ping_timeout_s
        self._close_timeout_s = close_timeout_s
        # TLS (wss:// and https:// for the page); None: plaintext.
        self._ssl_context = ssl_context
        self._static: dict[str, StaticFile] = {}
        self._server: Server | None = None

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the ephemeral one for port 0)."""
        if self._server is None:
            raise RuntimeError("the WebSocket bridge is not started")
        return cast(int, self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._static = load_static(self._static_dir)
        self._server = await serve(
            self._handle,
            self._host,
            self._port,
            select_subprotocol=_select_subprotocol,
            process_request=self._process_request,
            # Frames are small and the memory of a compressor per connection adds up
            # over 100k sessions.
            compression=None,
            max_size=self._max_message_bytes,
            ping_interval=self._ping_interval_s,
            ping_timeout=self._ping_timeout_s,
            close_timeout=self._close_timeout_s,
            create_connection=_Connection,
            # No version banner.
            server_header=None,
            ssl=self._ssl_context,
        )
        log.info(
            "WebSocket bridge on %s:%d (%s)",
            self._host,
            self.port,
            "TLS" if self._ssl_context is not None else "plaintext",
            extra={"fields": {"ws_port": self.port}},
        )

    async def stop(self) -> None:
        if self._server is None:
            return
        # Closes open sockets with 1001 (going away); sessions end and clients resume elsewhere.
        self._server.close(close_connections=True, code=CloseCode.GOING_AWAY, reason="gateway shutting down")
        await self._server.wait_closed()
        self._server = None

    # --- HTTP, before the upgrade -----------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == CONNECT_PATH or (path == CALL_PATH and self._calls is not None):
            token = _token_from(request)
            if not token:
                return self._unauthorized(connection, "missing access token")
            try:
                cast(_Connection, connection).user_id = self._auth.user_from_token(token)
            except errors.Unauthenticated as exc:
                return self._unauthorized(connection, exc.message)
            cast(_Connection, connection).token = token
            return None  # go on with the upgrade
        if path == DEV_TOKEN_PATH and self._dev_tokens is not None:
            return self._dev_token(request, self._dev_tokens)
        static = self._static.get(path)
        if static is None:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        headers = Headers(
            [
                ("Content-Type", static.content_type),
                ("Content-Length", str(len(static.body))),
                ("Cache-Control", "no-cache"),
                ("X-Content-Type-Options", "nosniff"),
                ("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:"),
                ("Connection", "close"),
            ]
        )
        return Response(http.HTTPStatus.OK.value, "OK", headers, static.body)

    @staticmethod
    def _dev_token(request: Request, issuer: DevTokens) -> Response:
        user_id = (parse_qs(urlsplit(request.path).query).get("user_id") or [""])[0]
        try:
            body, status = issuer.issue(user_id), http.HTTPStatus.OK
        except errors.InvalidArgument as exc:
            body, status = {"error": exc.message}, http.HTTPStatus.BAD_REQUEST
        payload = json.dumps(body).encode()
        headers = Headers(
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
                ("Cache-Control", "no-store"),
                ("X-Content-Type-Options", "nosniff"),
                ("Connection", "close"),
            ]
        )
        return Response(status.value, status.phrase, headers, payload)

    @staticmethod
    def _unauthorized(connection: ServerConnection, message: str) -> Response:
        response = connection.respond(http.HTTPStatus.UNAUTHORIZED, f"{message}\n")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    # --- the session ---------------------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        if connection.request is not None and urlsplit(connection.request.path).path == CALL_PATH:
            await self._serve_calls(connection)
            return
        await self._serve_session(connection)

    async def _serve_calls(self, connection: ServerConnection) -> None:
        calls = self._calls
        assert calls is not None  # process_request refuses /v1/call without it
        token = cast(_Connection, connection).token
        slots = asyncio.Semaphore(MAX_CONCURRENT_CALLS)
        running: set[asyncio.Task[None]] = set()

        async def answer(message: str | bytes) -> None:
            binary = isinstance(message, bytes)
            try:
                try:
                    request = decode(message, bridge_pb2.BridgeRequest())
                except errors.InvalidArgument as exc:
                    response = bridge_pb2.BridgeResponse(request_id=_request_id_of(message))
                    response.error.CopyFrom(errors.error_frame(exc, response.request_id))
                else:
                    response = await calls.call(token, request)
                with contextlib.suppress(ConnectionClosed):
                    await connection.send(encode(response, binary))
            finally:
                slots.release()

        try:
            async for message in connection:
                # Backpressure: a client sending calls faster than they finish waits here.
                await slots.acquire()
                task = asyncio.create_task(answer(message))
                running.add(task)
                task.add_done_callback(running.discard)
        except ConnectionClosed:
            pass
        finally:
            # Nobody can read the answers any more.
            for task in list(running):
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def _serve_session(self, connection: ServerConnection) -> None:
        user = cast(_Connection, connection).user_id
        encoding = _Encoding()

        async def send(frame: gateway_pb2.ConnectResponse) -> None:
            await connection.send(encode(frame, bool(encoding.binary)))

        async def requests() -> AsyncIterator[gateway_pb2.ConnectRequest]:
            # Read lazily by the session: a client sending faster than its frames are
            # handled is slowed down by TCP flow control instead of filling a queue.
            try:
                async for message in connection:
                    if encoding.binary is None:
                        encoding.binary = isinstance(message, bytes)
                    try:
                        request = decode(message, gateway_pb2.ConnectRequest())
                    except errors.InvalidArgument as exc:
                        error = errors.error_frame(exc, _request_id_of(message))
                        await send(gateway_pb2.ConnectResponse(error=error))
                        continue
                    yield request
            except ConnectionClosed:
                return  # an abrupt end is still the end of the session

        try:
            # Closed right away when the socket fails mid-send, so the session leaves the hub now.
            stream = cast(
                AsyncGenerator[gateway_pb2.ConnectResponse, None],
                self._chat.session_stream(user, requests(), WEBSOCKET),
            )
            async with contextlib.aclosing(stream) as frames:
                async for frame in frames:
                    await send(frame)
        except ConnectionClosed:
            return
        except Exception as exc:
            # The same mapping as the gRPC boundary (parley.server): outage 1013, bug 1011.
            error = errors.to_client_error(exc, f"WebSocket session of {limits.loggable(user)}", log)
            await self._end(connection, send, error)

    @staticmethod
    async def _end(
        connection: ServerConnection,
        send: Callable[[gateway_pb2.ConnectResponse], Awaitable[None]],
        exc: errors.ParleyError,
    ) -> None:
        with contextlib.suppress(ConnectionClosed):
            await send(gateway_pb2.ConnectResponse(error=errors.error_frame(exc, "")))
            await connection.close(exc.close_code, _close_reason(exc.message))
