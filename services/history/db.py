# Over 400 lines: connecting, retrying, refusing and the asyncio bridge share one Database's state.
"""The Cassandra connection: connect (and keep trying), migrate, prepare, and await from asyncio.

The driver does its I/O on its own thread and completes a ``ResponseFuture``
through callbacks there; :meth:`Database.execute` bridges that to an asyncio
future with ``loop.call_soon_threadsafe``, so the event loop never blocks on
Cassandra. Only start-up work (connect, schema migrations, preparing
statements) runs blocking calls, and it runs them in a worker thread.

Start-up never fails because Cassandra is unreachable: the service must come
up (and its writer must keep the log pending) during a Cassandra outage. The
first attempt is made inline; after a failure a background task retries with
backoff until it succeeds. Until then :meth:`Database.session` raises
:class:`CassandraUnavailable`. A configuration that contradicts the keyspace
(another bucket size) is different: it is raised from ``start()`` when seen
at boot, and otherwise leaves the database permanently unavailable with a
critical log line, because writing with the wrong bucket size would hide
messages from readers.

A Cassandra that lost the history this deployment wrote (``history.guard``)
is refused, at start-up and whenever the periodic probe finds the keyspace
gone or replaced: the session is dropped, every use raises
:class:`CassandraUnavailable` with the reason, ``on_refused`` reports it (the
service turns NOT_SERVING), and the connect loop keeps checking until the
data is back or an operator accepted the loss.

:meth:`Database.durability_epoch` changes whenever a node may have lost
writes it acknowledged but had not synced (a node went down or came back, or
restarted: its gossip generation changed); the writer re-writes what it
wrote in an older epoch before acking it (``PARLEY_HISTORY_DURABILITY_HORIZON_MS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from cassandra import ConsistencyLevel, OperationTimedOut, ProtocolVersion, RequestExecutionException
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    ResponseFuture,
    Session,
)
from cassandra.connection import ConnectionException
from cassandra.policies import (
    ConstantSpeculativeExecutionPolicy,
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    HostStateListener,
    TokenAwarePolicy,
)
from cassandra.pool import NoConnectionsAvailable
from cassandra.query import PreparedStatement, tuple_factory

from history.guard import HistoryLost, KeyspaceGuard
from history.migrate import (
    KEYSPACE_ID_SETTING,
    SchemaConflict,
    apply_migrations,
    check_keyspace_name,
    inspect_keyspace,
    parse_replication,
    read_keyspace_id,
)
from parley.config import CassandraConfig
from parley.metrics import observe_cassandra_query, observe_cassandra_write
from parley.retry import Backoff, Outage
from parley.tasks import stop_task

log = logging.getLogger(__name__)


class CassandraUnavailable(Exception):
    """Cassandra cannot be used right now (not connected yet, or a request failed)."""


Row = tuple[Any, ...]
T = TypeVar("T")

# Failures that say "Cassandra is (partly) down or overloaded", as opposed to
# a bad statement: retried by the writer, UNAVAILABLE for readers.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    CassandraUnavailable,
    NoHostAvailable,
    OperationTimedOut,
    RequestExecutionException,  # Unavailable, Read/WriteTimeout, Read/WriteFailure, ...
    ConnectionException,
    NoConnectionsAvailable,
)


class _HostEvents(HostStateListener):  # type: ignore[misc]
    """Counts node state changes (called on the driver's threads; an int bump is atomic enough)."""

    def __init__(self) -> None:
        self.changes = 0

    def on_up(self, host: Any) -> None:
        self.changes += 1

    def on_down(self, host: Any) -> None:
        self.changes += 1

    def on_add(self, host: Any) -> None:
        return None

    def on_remove(self, host: Any) -> None:
        self.changes += 1


def cluster_security(config: CassandraConfig) -> dict[str, Any]:
    """Authentication (PasswordAuthenticator) and TLS settings of a driver Cluster, as configured."""
    options: dict[str, Any] = {}
    if config.username:
        options["auth_provider"] = PlainTextAuthProvider(username=config.username, password=config.password)
    if config.tls or config.ca_file:
        context = ssl.create_default_context(cafile=config.ca_file or None)
        options["ssl_context"] = context
    return options


class Database:
    """Component owning the driver ``Cluster``/``Session`` and the prepared statements."""

    def __init__(
        self,
        config: CassandraConfig,
        *,
        bucket_size: int,
        statements: Mapping[str, str],  # name -> CQL with "{ks}" standing for the keyspace
        request_timeout_s: float = 5.0,
        read_speculation_s: float = 0.0,
        retry_min_s: float = 0.5,
        retry_max_s: float = 10.0,
        connect_timeout_s: float = 5.0,
        guard: KeyspaceGuard | None = None,
        on_refused: Callable[[str | None], Awaitable[None]] | None = None,
    ) -> None:
        # Bad settings fail here, at build time, not in a background retry loop.
        check_keyspace_name(config.keyspace)
        parse_replication(config.replication)
        self._config = config
        self._bucket_size = bucket_size
        self._lock_owner = uuid.uuid4().hex
        self._cql = dict(statements)
        self._request_timeout_s = request_timeout_s
        self._read_speculation_s = read_speculation_s
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._connect_timeout_s = connect_timeout_s
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self._prepared: dict[str, PreparedStatement] = {}
        self._connect_task: asyncio.Task[None] | None = None
        self._fatal: str | None = None
        self._guard = guard
        self._on_refused = on_refused
        # Why Cassandra is refused (history lost), None while it is not.
        self.refused: str | None = None
        self._keyspace_id: str | None = None
        self._host_events = _HostEvents()
        self._connects = 0

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._connect_once()
        except SchemaConflict:
            raise
        except HistoryLost as exc:
            await self._refuse(str(exc))
            self._connect_task = asyncio.create_task(self._connect_loop(), name="history-cassandra-connect")
        except Exception as exc:
            log.warning(
                "Cassandra unreachable at start-up (%s); retrying in the background",
                _describe(exc),
                extra={"fields": {"hosts": list(self._config.hosts), "port": self._config.port}},
            )
            self._connect_task = asyncio.create_task(self._connect_loop(), name="history-cassandra-connect")

    async def stop(self) -> None:
        # A connect attempt in progress first finishes its blocking step (bounded by the
        # driver's timeouts), then shuts its cluster down: see _in_thread.
        await stop_task(self._connect_task, timeout_s=60)
        self._connect_task = None
        cluster, self._cluster, self._session = self._cluster, None, None
        if cluster is not None:
            await asyncio.to_thread(cluster.shutdown)

    async def _connect_loop(self) -> None:
        # The outage was logged when start() found Cassandra unreachable; retries log at DEBUG.
        backoff = Backoff(self._retry_min_s, self._retry_max_s, jitter=0.5)
        outage = Outage(log, "connecting to Cassandra")
        delay = backoff.next()
        while True:
            await asyncio.sleep(delay)
            try:
                await self._connect_once()
                outage.recovered()
                log.info("connected to Cassandra")
                return
            except SchemaConflict as exc:
                self._fatal = str(exc)
                log.critical("history keyspace conflicts with the configuration: %s", exc)
                return
            except HistoryLost as exc:
                await self._refuse(str(exc))
                delay = self._retry_max_s
                continue
            except Exception as exc:
                delay = backoff.next()
                outage.failed(exc, delay)

    async def _connect_once(self) -> None:
        # A plain TCP check first: while nothing listens, the driver would log
        # a traceback per attempt; this way an outage at boot logs one line per retry.
        await self._check_reachable()
        cluster = self._new_cluster()
        try:
            if self._guard is not None:
                state = await _in_thread(inspect_keyspace, cluster, self._config.keyspace)
                await self._guard.check(state)
            session, prepared, keyspace_id = await _in_thread(self._connect_blocking, cluster)
            if self._guard is not None:
                await self._guard.record(keyspace_id)
        except BaseException:
            # Only now: shutting the cluster down while a thread is still inside
            # cluster.connect() can leave both waiting on each other forever.
            await asyncio.shield(asyncio.to_thread(cluster.shutdown))
            raise
        cluster.register_listener(self._host_events)
        self._connects += 1
        self._cluster, self._session, self._prepared = cluster, session, prepared
        self._keyspace_id = keyspace_id
        if self.refused is not None:
            log.warning("history keyspace %s is back; serving again", self._config.keyspace)
            self.refused = None
            self._fatal = None
            if self._on_refused is not None:
                await self._on_refused(None)

    async def _refuse(self, reason: str) -> None:
        """Stops using Cassandra: it does not hold this deployment's history (see history.guard)."""
        first = self.refused != reason
        self.refused = reason
        self._fatal = reason
        cluster, self._cluster, self._session = self._cluster, None, None
        if cluster is not None:
            await asyncio.to_thread(cluster.shutdown)
        if first:
            log.critical("refusing to serve history: %s", reason)
            if self._on_refused is not None:
                await self._on_refused(reason)

    async def verify_keyspace(self) -> None:
        """Refuses Cassandra if the keyspace this process connected to is gone or was replaced.

        Called by the writer's periodic probe; raises CassandraUnavailable when refused.
        """
        if self._session is None or self._keyspace_id is None:
            self.session()  # raises with the reason
            return
        try:
            rows = await self.execute(
                f"SELECT value FROM {self._config.keyspace}.settings WHERE name = %s", (KEYSPACE_ID_SETTING,)
            )
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:  # InvalidRequest: keyspace or table does not exist
            current = None
            detail = _describe(exc)
        else:
            current = str(rows[0][0]) if rows else None
            detail = f"its id is now {current}" if current else "its id is gone"
        if current == self._keyspace_id:
            return
        await self._refuse(
            f"keyspace {self._config.keyspace} (id {self._keyspace_id}) disappeared or was replaced "
            f"while running ({detail}); refusing to write into a keyspace that lost history"
        )
        self._connect_task = asyncio.create_task(self._connect_loop(), name="history-cassandra-connect")
        raise CassandraUnavailable(self.refused or "history keyspace refused")

    async def durability_epoch(self) -> tuple[int, int, int]:
        """Changes whenever a node may have lost acknowledged, unsynced writes (see the module doc)."""
        rows = await self.execute("SELECT gossip_generation FROM system.local")
        generation = int(rows[0][0]) if rows and rows[0][0] is not None else 0
        return (self._connects, self._host_events.changes, generation)

    async def _check_reachable(self) -> None:
        errors: list[str] = []
        for host in self._config.hosts:
            try:
                _reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, self._config.port), self._connect_timeout_s
                )
            except (OSError, TimeoutError) as exc:
                errors.append(f"{host}:{self._config.port}: {exc or type(exc).__name__}")
                continue
            writer.close()
            return
        raise CassandraUnavailable("no contact point accepts connections (" + "; ".join(errors) + ")")

    def _connect_blocking(self, cluster: Cluster) -> tuple[Session, dict[str, PreparedStatement], str]:
        keyspace = self._config.keyspace
        apply_migrations(
            cluster,
            keyspace=keyspace,
            replication=self._config.replication,
            settings={"bucket_size": str(self._bucket_size)},
            lock_owner=self._lock_owner,
        )
        session = cluster.connect()
        # Statements name the keyspace ("{ks}.messages"): the session has no current keyspace.
        prepared = {name: session.prepare(cql.format(ks=keyspace)) for name, cql in self._cql.items()}
        read_level = ConsistencyLevel.name_to_value[self._config.read_consistency]
        for name, statement in prepared.items():
            if self._cql[name].lstrip().upper().startswith("SELECT"):
                statement.consistency_level = read_level
                # Reads may be sent to a second node (the profile's speculative execution policy).
                statement.is_idempotent = True
        return session, prepared, read_keyspace_id(cluster, keyspace)

    def _new_cluster(self) -> Cluster:
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=self._config.local_dc)),
            # Writes (batches included) at the write level; prepared SELECTs carry the
            # read level (_connect_blocking). LOCAL_QUORUM both ways by default: a read
            # after an acknowledged write sees it, with one replica of three down.
            consistency_level=ConsistencyLevel.name_to_value[self._config.write_consistency],
            request_timeout=self._request_timeout_s,
            # Only for statements marked idempotent: the prepared SELECTs (_connect_blocking).
            speculative_execution_policy=(
                ConstantSpeculativeExecutionPolicy(delay=self._read_speculation_s, max_attempts=1)
                if self._read_speculation_s > 0
                else None
            ),
            # Plain tuples: no per-row namedtuple class work.
            row_factory=tuple_factory,
        )
        return Cluster(
            contact_points=list(self._config.hosts),
            port=self._config.port,
            # v4: every Cassandra since 2.2 speaks it, and it skips v5 framing (checksummed
            # segments encoded in pure Python: ~15% of the writer CPU). Fixing the version
            # also skips the driver's noisy downgrade probing.
            protocol_version=ProtocolVersion.V4,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            # The default backs off to 10 minutes; after an outage the writer should resume within seconds.
            reconnection_policy=ExponentialReconnectionPolicy(base_delay=0.5, max_delay=5.0),
            connect_timeout=self._connect_timeout_s,
            control_connection_timeout=self._connect_timeout_s,
            **cluster_security(self._config),
        )

    # --- use ----------------------------------------------------------------------------------

    @property
    def keyspace(self) -> str:
        return self._config.keyspace

    @property
    def bucket_size(self) -> int:
        return self._bucket_size

    @property
    def is_connected(self) -> bool:
        return self._session is not None

    def session(self) -> Session:
        if self._session is None:
            raise CassandraUnavailable(self._fatal or "not connected to Cassandra")
        return self._session

    def prepared(self, name: str) -> PreparedStatement:
        self.session()
        return self._prepared[name]

    async def execute(self, statement: Any, params: Sequence[Any] | None = None) -> list[Row]:
        """Runs one statement; all result pages are fetched. Driver errors propagate as they are."""
        session = self.session()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Row]] = loop.create_future()
        started_at = time.perf_counter()
        response = session.execute_async(statement, params)
        rows: list[Row] = []
        future.add_done_callback(lambda f: observe_cassandra_query(started_at, f))

        def on_page(page: Sequence[Row] | None) -> None:
            # Runs on the driver's thread; must always end in resolving the future.
            try:
                if page:  # None for statements without rows
                    rows.extend(page)
                if response.has_more_pages:
                    response.start_fetching_next_page()
                    return
            except Exception as exc:
                _threadsafe(loop, _resolve, future, None, exc)
                return
            _threadsafe(loop, _resolve, future, rows, None)

        def on_error(exc: BaseException) -> None:
            _threadsafe(loop, _resolve, future, None, exc)

        response.add_callbacks(on_page, on_error)
        return await future

    async def execute_many(self, statements: Sequence[Any], concurrency: int) -> list[BaseException | None]:
        """Runs bound statements (or batches), at most ``concurrency`` in flight.

        Returns one entry per statement: None on success or the error. Cheaper
        than a task per statement: completions come back through one callback
        each and the next request is launched from the event loop thread.
        """
        total = len(statements)
        results: list[BaseException | None] = [None] * total
        if total == 0:
            return results
        session = self.session()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        state = {"next": 0, "remaining": total}
        started = [0.0] * total

        def launch() -> None:
            index = state["next"]
            state["next"] = index + 1
            started[index] = time.perf_counter()
            try:
                response: ResponseFuture = session.execute_async(statements[index])
            except Exception as exc:  # e.g. a bind error: report it, keep the window moving
                loop.call_soon(complete, index, exc)
                return
            response.add_callbacks(on_ok, on_error, callback_args=(index,), errback_args=(index,))

        def on_ok(_rows: Any, index: int) -> None:
            _threadsafe(loop, complete, index, None)

        def on_error(exc: BaseException, index: int) -> None:
            _threadsafe(loop, complete, index, exc)

        def complete(index: int, exc: BaseException | None) -> None:
            results[index] = exc
            observe_cassandra_write(started[index], exc)
            state["remaining"] -= 1
            if done.done():
                return  # the caller was cancelled: let in-flight requests finish, start nothing new
            if state["next"] < total:
                launch()
            elif state["remaining"] == 0:
                done.set_result(None)

        for _ in range(min(concurrency, total)):
            launch()
        try:
            await done
        finally:
            if not done.done():
                done.cancel()
        return results


async def _in_thread(func: Callable[..., T], *args: Any) -> T:
    """Runs blocking driver work in a thread; a cancellation waits for it to finish first.

    A thread cannot be interrupted: if the caller went on (and shut the cluster down)
    while the thread is still inside ``cluster.connect()``, both can wait on each
    other forever. So a cancelled caller waits out the thread, then re-raises.
    """
    future = asyncio.ensure_future(asyncio.to_thread(func, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():  # repeated cancellations (parley.tasks.stop_task) wait too
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({future})
        raise


def _threadsafe(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    # The loop may already be closed when a late driver callback arrives at shutdown.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(callback, *args)


def _resolve(future: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
