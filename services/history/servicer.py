"""The history service's gRPC boundary (parley.internal.v1.HistoryService).

Callers are authenticated services (mutual TLS, see parley.tls) acting for a
user; GetHistory checks that user's membership itself. Errors are
parley.errors types, mapped to gRPC by the server's ErrorBoundary; Cassandra
being unreachable (or timing out) is UNAVAILABLE, so callers retry or fall
back, and the writer keeps the log pending meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from history.db import TRANSIENT_ERRORS, Database
from history.membership import Membership
from history.reader import HistoryReader, validate
from history.writer import HistoryWriter
from parley import errors
from parley.internal.v1 import history_pb2, history_pb2_grpc
from parley.server import ServicerContext

log = logging.getLogger(__name__)

# Reads failing for a while log one warning per this many seconds, with how many failed meanwhile.
READ_FAILURE_LOG_EVERY_S = 10.0


class ReadFailureLog:
    """Says why reads fail (the client sees UNAVAILABLE only), without a line per failed read."""

    def __init__(
        self, every_s: float = READ_FAILURE_LOG_EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._every_s = every_s
        self._clock = clock
        self._last = -every_s
        self._since_last = 0

    def failed(self, exc: BaseException) -> None:
        self._since_last += 1
        now = self._clock()
        if now - self._last < self._every_s:
            return
        log.warning(
            "history read failed: %s: %s (%d failed reads since the last warning)",
            type(exc).__name__,
            str(exc)[:300],
            self._since_last,
        )
        self._last = now
        self._since_last = 0


class HistoryServicer(history_pb2_grpc.HistoryServiceServicer):
    def __init__(
        self, reader: HistoryReader, writer: HistoryWriter, db: Database, membership: Membership
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._db = db
        self._membership = membership
        self._read_failures = ReadFailureLog()

    async def GetHistory(
        self, request: history_pb2.GetHistoryRequest, context: ServicerContext
    ) -> history_pb2.GetHistoryResponse:
        after_seq = request.after_seq if request.HasField("after_seq") else None
        validate(request.conversation_id, request.before_seq, after_seq)
        try:
            await self._membership.check(request.conversation_id, request.user_id)
            page = await self._reader.page(
                request.conversation_id,
                before_seq=request.before_seq,
                after_seq=after_seq,
                limit=request.limit,
            )
        except TRANSIENT_ERRORS as exc:
            self._read_failures.failed(exc)
            if self._db.refused is not None:
                # Cassandra lost this deployment's history: say so, never serve an empty page.
                raise errors.Unavailable(f"message history is unavailable: {self._db.refused}") from exc
            raise errors.Unavailable("message history is temporarily unavailable") from exc
        response = history_pb2.GetHistoryResponse(next_cursor=page.next_cursor, has_more=page.has_more)
        for _seq, payload in page.messages:
            response.messages.add().MergeFromString(payload)
        return response

    async def GetWriterStatus(
        self, request: history_pb2.GetWriterStatusRequest, context: ServicerContext
    ) -> history_pb2.GetWriterStatusResponse:
        try:
            status = await self._writer.status()
        except RedisError as exc:
            raise errors.Unavailable("the partition logs are unreachable") from exc
        return history_pb2.GetWriterStatusResponse(
            lag_entries=status.lag_entries,
            cassandra_up=status.cassandra_up,
            written_total=status.written_total,
            refused_reason=self._db.refused or "",
        )
