"""``parley-admin``: operator commands for the history store.

    parley-admin history verify [--conversation C ...] [--json]
    parley-admin history backfill (--conversation C [--from-seq N] [--to-seq M] | --all)
    parley-admin history accept-new-keyspace --yes

Settings come from the same environment as the history service
(``PARLEY_REDIS_URL``, ``PARLEY_REDIS_PREFIX``, ``PARLEY_PARTITIONS``,
``PARLEY_CASSANDRA_*``). Exit codes: 0 ok; 1 verify found differences (or a
command failed); 2 usage. On the local stack it logs in with the passwords
``make infra-up`` keeps in ``.state`` (Redis ``parley-admin``, Cassandra ``parley``)
when the environment names no users.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence

from admin.repair import HistoryRepair
from history.config import HistoryConfig, load_config
from history.db import Database
from history.guard import ACCEPT_NEW, KeyspaceGuard
from history.store import STATEMENTS, HistoryStore
from parley.keys import Keys
from parley.localstate import REDIS_ADMIN, LocalCredentials
from parley.redisclient import connect


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley-admin", description=__doc__.split("\n\n")[0])
    areas = parser.add_subparsers(dest="area", required=True)
    history = areas.add_parser("history", help="verify and repair the Cassandra history")
    commands = history.add_subparsers(dest="command", required=True)

    verify = commands.add_parser("verify", help="compare Redis and Cassandra per conversation")
    verify.add_argument("--conversation", action="append", default=[], help="only these (repeatable)")
    verify.add_argument("--json", action="store_true", help="one JSON object per conversation")

    backfill = commands.add_parser("backfill", help="rewrite messages Redis retains into Cassandra")
    target = backfill.add_mutually_exclusive_group(required=True)
    target.add_argument("--conversation", action="append", default=[], help="this conversation (repeatable)")
    target.add_argument("--all", action="store_true", help="every conversation Redis knows")
    backfill.add_argument("--from-seq", type=int, default=1)
    backfill.add_argument("--to-seq", type=int, default=None)

    accept = commands.add_parser(
        "accept-new-keyspace",
        help="accept that Cassandra lost the history keyspace: the history service creates a new one",
    )
    accept.add_argument("--yes", action="store_true", help="required: this accepts a loss of history")
    return parser


async def _run(args: argparse.Namespace, config: HistoryConfig) -> int:
    redis = connect(config.redis)
    keys = Keys(prefix=config.redis.key_prefix, partitions=config.partitions)
    try:
        if args.command == "accept-new-keyspace":
            if not args.yes:
                print("error: accept-new-keyspace accepts a loss of history; pass --yes", file=sys.stderr)
                return 2
            await KeyspaceGuard(redis, keys, config.cassandra.keyspace).accept_new()
            print(
                f"recorded {ACCEPT_NEW!r} for keyspace {config.cassandra.keyspace}: the history service now "
                "creates (or adopts) the keyspace it finds. Then run `parley-admin history backfill --all`."
            )
            return 0
        # With the service's guard: a keyspace that lost history is refused here too (and never
        # created), unless an operator accepted a new one.
        guard = KeyspaceGuard(redis, keys, config.cassandra.keyspace)
        db = Database(config.cassandra, bucket_size=config.bucket_size, statements=STATEMENTS, guard=guard)
        await db.start()
        if not db.is_connected:
            reason = db.refused or "Cassandra is not reachable"
            print(f"error: {reason}", file=sys.stderr)
            await db.stop()
            return 1
        try:
            repair = HistoryRepair(redis, keys, HistoryStore(db))
            cids = list(args.conversation) or [cid async for cid in repair.conversation_ids()]
            if args.command == "verify":
                return await _verify(repair, sorted(cids), as_json=args.json)
            return await _backfill(repair, sorted(cids), args.from_seq, args.to_seq)
        finally:
            await db.stop()
    finally:
        await redis.aclose()


async def _verify(repair: HistoryRepair, cids: Sequence[str], *, as_json: bool) -> int:
    bad = 0
    for cid in cids:
        report = await repair.verify(cid)
        bad += not report.ok
        if as_json:
            print(json.dumps(report.as_dict()))
        else:
            d = report.as_dict()
            state = "ok" if report.ok else "DIFFERS"
            print(
                f"{cid}: {state}: redis last seq {report.redis_last_seq}, "
                f"cassandra {report.cassandra_count} rows"
                + "".join(
                    f", {name} {','.join(d[name])}"  # type: ignore[arg-type]
                    for name in ("missing_repairable", "missing_unrecoverable", "body_mismatch", "phantoms")
                    if d[name]
                )
            )
    if not as_json:
        print(f"{len(cids)} conversations checked, {bad} differ")
    return 1 if bad else 0


async def _backfill(repair: HistoryRepair, cids: Sequence[str], first: int, last: int | None) -> int:
    total = 0
    for cid in cids:
        result = await repair.backfill(cid, first, last)
        total += result.written
        print(f"{cid}: wrote {result.written} messages (seq {result.first_seq}..{result.last_seq})")
    print(f"{len(cids)} conversations, {total} messages written")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    # The history service's settings; internal TLS is irrelevant here (this
    # tool serves no RPC), so its absence is not an error.
    environ = dict(os.environ)
    if not any(k.startswith("PARLEY_INTERNAL_TLS_") or k == "PARLEY_INTERNAL_CA_FILE" for k in environ):
        environ.setdefault("PARLEY_INTERNAL_INSECURE", "true")
    # On the local stack (`make infra-up`), the logins it made under the state folder
    # (parley.localstate), unless the environment names users; elsewhere there is no such folder.
    environ.update(LocalCredentials.from_env(environ).service_env(REDIS_ADMIN, environ))
    config = load_config(environ)
    sys.exit(asyncio.run(_run(args, config)))
