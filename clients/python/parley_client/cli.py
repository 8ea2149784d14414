# Over 400 lines: the argument parser and the seven subcommands it dispatches to, one short function each.
"""The ``parley`` command line: talk to a gateway from a terminal or a script.

Examples::

    parley token alice
    parley send --as alice --to bob "hello"
    parley listen --as bob --json
    parley group create --as alice team --members bob,carol
    parley history --as bob --with alice --all
    parley presence --as alice bob

Connection options (``--as``/``--token``, ``--gateway``, ``--timeout``,
``--tls``/``--plaintext``, ``--ca-file``) may
come before or after the command. Failures print ``parley: <STATUS>: <message>``
on stderr and exit 1; usage errors exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from parley.v1 import messages_pb2
from parley_client import output
from parley_client.client import DEFAULT_TARGET, ParleyClient, split_target
from parley_client.cursors import CursorStoreError, JsonFileCursorStore
from parley_client.devtoken import DEV_SECRET, mint_dev_token, token_subject
from parley_client.errors import ParleyError, RateLimitedError
from parley_client.events import ConnectedEvent, DisconnectedEvent, MessageEvent, SyncCompleteEvent
from parley_client.protocol import valid_user_id
from parley_client.state import cursor_file, default_state_dir, device_id

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
MAX_HISTORY_PAGE = 200
# A source checkout (the CLI installed editable): where `make run` keeps its development CA.
CHECKOUT_ROOT = Path(__file__).resolve().parents[3]


class UsageError(Exception):
    """Bad command-line input that argparse cannot catch by itself."""


@dataclass(frozen=True)
class Identity:
    token: str
    # None when a --token's subject cannot be read.
    user_id: str | None
    # Set for --as: mints a fresh token per call, so a long `listen` outlives any one token.
    minter: Callable[[], str] | None = None


# ---- argument parsing ------------------------------------------------------------------------


def _connection_options(*, nested: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the command.

    Under a command they default to SUPPRESS so that an option given before
    the command is not overwritten by the command parser's default.
    """
    default = argparse.SUPPRESS if nested else None
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--as", dest="as_user", metavar="USER", default=default, help="act as USER (dev token)"
    )
    group.add_argument("--token", metavar="JWT", default=default, help="bearer token (or env PARLEY_TOKEN)")
    group.add_argument(
        "--gateway",
        metavar="HOST:PORT",
        default=default,
        help=f"gateway address (env PARLEY_GATEWAY, default {DEFAULT_TARGET})",
    )
    group.add_argument(
        "--timeout", type=_positive_float, metavar="SECONDS", default=default, help="per-call timeout (10)"
    )
    tls = group.add_mutually_exclusive_group()
    tls.add_argument(
        "--tls",
        dest="tls",
        action="store_const",
        const=True,
        default=default,
        help="connect with TLS (the default; or a gateway address https://HOST:PORT)",
    )
    tls.add_argument(
        "--plaintext",
        dest="tls",
        action="store_const",
        const=False,
        default=default,
        help="connect without TLS (env PARLEY_PLAINTEXT=true; or a gateway address http://HOST:PORT)",
    )
    group.add_argument(
        "--ca-file",
        metavar="PEM",
        default=default,
        help="CA certificate(s) the gateway's certificate must chain to (env PARLEY_CA_FILE; default: "
        "the system's roots, or the local development CA for a gateway on this machine)",
    )
    return parser


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _user_list(raw: str) -> list[str]:
    users = [u.strip() for u in raw.split(",") if u.strip()]
    if not users:
        raise argparse.ArgumentTypeError("expected comma-separated user ids")
    return users


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parley",
        description="Parley command line client.",
        parents=[_connection_options(nested=False)],
    )
    common = _connection_options(nested=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("token", help="print a development token for USER")
    p.add_argument("user")
    p.add_argument("--ttl", type=_positive_int, default=24 * 3600, metavar="SECONDS")

    p = commands.add_parser("send", parents=[common], help="send a message")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="USER", help="the direct conversation with USER (created if needed)")
    target.add_argument("--conversation", metavar="ID")
    p.add_argument("text", nargs="+", help="message text ('-' reads stdin)")
    p.add_argument("--client-message-id", metavar="ID", help="idempotency key (default: random)")
    p.add_argument("--json", action="store_true")

    p = commands.add_parser("listen", parents=[common], help="print incoming messages as they arrive")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument(
        "--state-dir", metavar="DIR", help="cursor files (env PARLEY_CLI_STATE_DIR, default ~/.parley)"
    )
    p.add_argument("--device-id", metavar="ID", help="default: stable per state dir")
    p.add_argument("--count", type=_positive_int, metavar="N", help="exit after N messages")

    p = commands.add_parser("group", help="manage group conversations")
    groups = p.add_subparsers(dest="group_command", required=True, metavar="ACTION")
    g = groups.add_parser("create", parents=[common], help="create a group")
    g.add_argument("name")
    g.add_argument("--members", type=_user_list, action="extend", default=[], metavar="U1,U2")
    g.add_argument("--json", action="store_true")
    for action in ("add", "remove"):
        g = groups.add_parser(action, parents=[common], help=f"{action} members")
        g.add_argument("--conversation", required=True, metavar="ID")
        g.add_argument("--members", type=_user_list, action="extend", required=True, metavar="U1,U2")
        g.add_argument("--json", action="store_true")

    p = commands.add_parser("conversations", parents=[common], help="list your conversations")
    p.add_argument("--limit", type=_positive_int, default=50)
    p.add_argument("--json", action="store_true")

    p = commands.add_parser("history", parents=[common], help="print a conversation's messages")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--with", dest="with_user", metavar="USER", help="the direct conversation with USER")
    target.add_argument("--conversation", metavar="ID")
    position = p.add_mutually_exclusive_group()
    position.add_argument("--before", type=_positive_int, metavar="SEQ", help="messages before SEQ")
    position.add_argument("--after", type=_positive_int, metavar="SEQ", help="messages after SEQ")
    p.add_argument("--limit", type=_positive_int, metavar="N", help="page size (50, at most 200)")
    p.add_argument(
        "--all",
        action="store_true",
        help="page back to the first message (the default when no --limit, --before or --after is given)",
    )
    p.add_argument("--json", action="store_true")

    p = commands.add_parser("presence", parents=[common], help="show users' presence")
    p.add_argument("users", nargs="+", metavar="USER")
    p.add_argument("--json", action="store_true")
    return parser


# ---- identity ------------------------------------------------------------------------------


def _dev_secret(environ: Mapping[str, str]) -> str:
    # A local stack with its own HS256 secret: mint with the same one the gateway checks.
    if environ.get("PARLEY_JWT_ALGORITHM", "HS256") == "HS256" and environ.get("PARLEY_JWT_KEY"):
        return environ["PARLEY_JWT_KEY"]
    return DEV_SECRET


def resolve_identity(args: argparse.Namespace, environ: Mapping[str, str]) -> Identity:
    as_user: str | None = getattr(args, "as_user", None)
    token: str | None = getattr(args, "token", None)
    if as_user and token:
        raise UsageError("--as and --token are mutually exclusive")
    if as_user:
        if not valid_user_id(as_user):
            raise UsageError(f"invalid user id {as_user!r}")
        secret = _dev_secret(environ)

        def mint() -> str:
            return mint_dev_token(as_user, secret=secret)

        return Identity(mint(), as_user, minter=mint)
    token = token or environ.get("PARLEY_TOKEN")
    if not token:
        raise UsageError(
            "who are you? pass --as USER (development token) or --token JWT (or set PARLEY_TOKEN)"
        )
    return Identity(token, token_subject(token))


def resolve_gateway(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    return getattr(args, "gateway", None) or environ.get("PARLEY_GATEWAY") or DEFAULT_TARGET


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


def dev_ca_file(environ: Mapping[str, str]) -> Path:
    """The local stack's CA (parley.pki): ``$PARLEY_STATE_DIR/pki/ca.crt``, else the checkout's ``.state``."""
    state = environ.get("PARLEY_STATE_DIR")
    return Path(state) / "pki" / "ca.crt" if state else CHECKOUT_ROOT / ".state" / "pki" / "ca.crt"


@dataclass(frozen=True)
class Transport:
    tls: bool
    ca_file: str | None


def resolve_transport(args: argparse.Namespace, gateway: str, environ: Mapping[str, str]) -> Transport:
    """TLS unless asked otherwise; which CA to trust.

    A gateway on this machine is trusted with the local development CA when
    one exists and no CA was given, so `make run` needs no flags.
    """
    address, scheme_tls = split_target(gateway)
    tls: bool | None = getattr(args, "tls", None)
    if tls is None:
        tls = scheme_tls
    if tls is None:
        plaintext = environ.get("PARLEY_PLAINTEXT", "").strip().lower() in ("1", "true", "yes", "on")
        tls = not plaintext
    ca_file: str | None = getattr(args, "ca_file", None) or environ.get("PARLEY_CA_FILE") or None
    if tls and ca_file is None:
        host = address.rsplit(":", 1)[0]
        dev_ca = dev_ca_file(environ)
        if host in LOOPBACK_HOSTS and dev_ca.is_file():
            ca_file = str(dev_ca)
    if ca_file is not None and not Path(ca_file).is_file():
        raise UsageError(f"CA file {ca_file} not found")
    return Transport(tls=tls, ca_file=ca_file)


# ---- commands ------------------------------------------------------------------------------


def _out(line: str) -> None:
    # Flushed per line: consumers (pipes, tests, `tee`) must see each message as it arrives.
    print(line, flush=True)


def _err(line: str) -> None:
    print(f"parley: {line}", file=sys.stderr, flush=True)


async def cmd_send(args: argparse.Namespace, client: ParleyClient, me: Identity) -> int:
    text = " ".join(args.text)
    if text == "-":
        text = sys.stdin.read()
    conversation_id = args.conversation or (await client.create_direct(args.to)).id
    ack = await client.send(conversation_id, text, client_message_id=args.client_message_id)
    _out(output.dumps(output.send_ack_dict(ack)) if args.json else output.send_ack_line(ack))
    return EXIT_OK


def listen_state(args: argparse.Namespace, user_id: str, environ: Mapping[str, str]) -> tuple[str, Path]:
    """The device id and cursor file of `parley listen` (creates the device id on first use)."""
    state_dir = Path(args.state_dir).expanduser() if args.state_dir else default_state_dir(environ)
    device = args.device_id or environ.get("PARLEY_DEVICE_ID") or device_id(state_dir)
    return device, cursor_file(state_dir, user_id, device)


async def cmd_listen(args: argparse.Namespace, client: ParleyClient, me: Identity) -> int:
    if me.user_id is None:
        raise UsageError("cannot tell the user from --token (no 'sub'); cursors are kept per user")
    device, cursors_path = listen_state(args, me.user_id, os.environ)
    store = JsonFileCursorStore(cursors_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def consume() -> None:
        printed = 0
        synced = False
        # Each message's cursor is saved when the loop asks for the next event, i.e. right
        # after it was printed: a SIGKILL loses nothing and repeats at most that one line.
        async for event in session:
            if isinstance(event, MessageEvent):
                message = event.message
                _out(
                    output.dumps(output.message_dict(message)) if args.json else output.message_line(message)
                )
                printed += 1
                if args.count and printed >= args.count:
                    await session.ack(event.conversation_id, event.seq)
                    return
            elif isinstance(event, SyncCompleteEvent) and not synced:
                synced = True
                _err(f"listening as {me.user_id} (device {device})")
            elif isinstance(event, DisconnectedEvent):
                _err(f"disconnected ({event.reason}); reconnecting in {event.retry_in:.1f}s")
            elif isinstance(event, ConnectedEvent) and event.reconnects:
                _err("reconnected")

    async with client.session(cursor_store=store, device_id=device) as session:
        consumer = asyncio.create_task(consume())
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait({consumer, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not consumer.done():
                consumer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await consumer
        if consumer in done:
            consumer.result()  # a fatal session error (e.g. UNAUTHENTICATED) propagates
    return EXIT_OK


async def cmd_group(args: argparse.Namespace, client: ParleyClient, me: Identity) -> int:
    if args.group_command == "create":
        conversation = await client.create_group(args.name, args.members)
        _out(
            output.dumps(output.conversation_dict(conversation, me.user_id)) if args.json else conversation.id
        )
        return EXIT_OK
    if args.group_command == "add":
        conversation = await client.add_members(args.conversation, args.members)
    else:
        conversation = await client.remove_members(args.conversation, args.members)
    if args.json:
        _out(output.dumps(output.conversation_dict(conversation, me.user_id)))
    else:
        _out(f"conversation={conversation.id} members={','.join(conversation.member_ids)}")
    return EXIT_OK


async def cmd_conversations(args: argparse.Namespace, client: ParleyClient, me: Identity) -> int:
    for summary in await client.list_conversations(limit=args.limit):
        if args.json:
            _out(output.dumps(output.summary_dict(summary, me.user_id)))
        else:
            _out(output.summary_line(summary, me.user_id))
    return EXIT_OK


async def cmd_history(args: argparse.Namespace, client: ParleyClient, me: Identity) -> int:
    conversation_id = args.conversation or (await client.create_direct(args.with_user)).id
    # Without paging options the whole conversation is printed, oldest first.
    args.all = args.all or (args.limit is None and args.before is None and args.after is None)
    limit = min(args.limit or (MAX_HISTORY_PAGE if args.all else 50), MAX_HISTORY_PAGE)
    messages: list[messages_pb2.Message]
    if args.all:
        if args.after:
            raise UsageError("--all pages back from the newest (or --before); it cannot take --after")
        pages = [
            page.messages
            async for page in client.iter_history_back(
                conversation_id, before_seq=args.before or 0, page_size=limit
            )
        ]
        by_seq = {m.seq: m for page in pages for m in page}  # pages must not overlap; be safe anyway
        messages = [by_seq[s] for s in sorted(by_seq)]
    else:
        page = await client.get_history(
            conversation_id, before_seq=args.before, after_seq=args.after, limit=limit
        )
        messages = page.messages
        if page.has_more and page.next_cursor and not args.json:
            flag = "--after" if args.after else "--before"
            _err(f"more messages: {flag} {page.next_cursor}")
    for message in messages:
        _out(output.dumps(output.message_dict(message)) if args.json else output.message_line(message))
    return EXIT_OK


async def cmd_presence(args: argparse.Namespace, client: ParleyClient, me: Identity) -> int:
    for presence in await client.get_presence(args.users):
        _out(output.dumps(output.presence_dict(presence)) if args.json else output.presence_line(presence))
    return EXIT_OK


Command = Callable[[argparse.Namespace, ParleyClient, Identity], Awaitable[int]]
COMMANDS: dict[str, Command] = {
    "send": cmd_send,
    "listen": cmd_listen,
    "group": cmd_group,
    "conversations": cmd_conversations,
    "history": cmd_history,
    "presence": cmd_presence,
}


async def _run(args: argparse.Namespace) -> int:
    me = resolve_identity(args, os.environ)
    timeout = getattr(args, "timeout", None) or 10.0
    # A CLI call should fail within seconds when the gateway is down, not retry at length.
    credentials: dict[str, Any] = {"token_provider": me.minter} if me.minter else {"token": me.token}
    gateway = resolve_gateway(args, os.environ)
    transport = resolve_transport(args, gateway, os.environ)
    async with ParleyClient(
        gateway,
        timeout=timeout,
        send_attempts=3,
        tls=transport.tls,
        ca_file=transport.ca_file,
        **credentials,
    ) as client:
        return await COMMANDS[args.command](args, client, me)


def _describe(exc: ParleyError) -> str:
    text = f"{exc.status.name}: {exc.message}"
    if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
        text += f" (retry after {exc.retry_after:.1f}s)"
    if "CERTIFICATE_VERIFY_FAILED" in exc.message:
        text += " (the gateway's certificate is not trusted: pass the CA that issued it with --ca-file)"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "token":
            if not valid_user_id(args.user):
                raise UsageError(f"invalid user id {args.user!r}")
            _out(mint_dev_token(args.user, ttl_seconds=args.ttl, secret=_dev_secret(os.environ)))
            return EXIT_OK
        return asyncio.run(_run(args))
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        _err(f"error: {exc}")
        return EXIT_USAGE
    except ParleyError as exc:
        _err(_describe(exc))
        return EXIT_FAILURE
    except (CursorStoreError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):
            # The reader went away (`parley listen | head`): not an error worth a message.
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
        _err(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
