"""parley.retry: backoff, outage logging, the background loop, and skipping bad data."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random

import grpc
import pytest
import redis.exceptions

from parley.retry import SKIPPED, Backoff, Outage, is_outage, refused_credentials, run_forever, skip_bad_data

LOG = logging.getLogger("test.retry")


def test_backoff_doubles_to_the_cap_and_resets() -> None:
    backoff = Backoff(0.1, 0.5)
    assert [backoff.next() for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    backoff.reset()
    assert backoff.next() == 0.1


def test_jittered_delays_stay_between_half_and_the_ceiling() -> None:
    backoff = Backoff(0.1, 0.8, jitter=0.5, rng=random.Random(7))
    ceilings = [0.1, 0.2, 0.4, 0.8, 0.8, 0.8]
    delays = [backoff.next() for _ in ceilings]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True)), delays
    assert len(set(delays)) == len(delays)  # jittered, not the exact sequence


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        Backoff(0.1, 1, jitter=2)


def test_outages_are_dependency_failures_not_bad_data_or_bugs() -> None:
    assert is_outage(redis.exceptions.ConnectionError("refused"))
    assert is_outage(redis.exceptions.TimeoutError())
    assert is_outage(TimeoutError())
    unavailable = grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())
    assert is_outage(unavailable)
    denied = grpc.aio.AioRpcError(grpc.StatusCode.PERMISSION_DENIED, grpc.aio.Metadata(), grpc.aio.Metadata())
    assert not is_outage(denied)
    assert not is_outage(redis.exceptions.ResponseError("WRONGTYPE"))
    assert not is_outage(KeyError("bug"))


def test_an_outage_is_logged_once_at_warning_and_its_end_at_info(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage(LOG, "reading the feed")
    with caplog.at_level(logging.DEBUG, logger="test.retry"):
        for _ in range(5):
            outage.failed(redis.exceptions.ConnectionError("refused"), 0.1)
        outage.recovered()
        outage.recovered()  # nothing to report twice
    levels = [r.levelno for r in caplog.records]
    assert levels.count(logging.WARNING) == 1
    assert levels.count(logging.INFO) == 1
    assert (
        "after" in caplog.records[-1].getMessage() and "5 failed attempts" in caplog.records[-1].getMessage()
    )


async def test_run_forever_waits_out_an_outage_and_recovers(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    done = asyncio.Event()

    async def step() -> None:
        calls.append(1)
        if len(calls) <= 3:
            raise redis.exceptions.ConnectionError("refused")
        if len(calls) == 5:
            done.set()

    with caplog.at_level(logging.DEBUG, logger="test.retry"):
        task = asyncio.create_task(run_forever(step, name="feed", log=LOG, backoff=Backoff(0.001, 0.002)))
        await asyncio.wait_for(done.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(warnings) == 1 and "refused" in warnings[0].getMessage()
    assert len(infos) == 1 and "available again" in infos[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_run_forever_survives_a_bug_logging_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    done = asyncio.Event()

    async def step() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("bug")
        done.set()

    with caplog.at_level(logging.ERROR, logger="test.retry"):
        task = asyncio.create_task(run_forever(step, name="sweep", log=LOG, backoff=Backoff(0.001, 0.002)))
        await asyncio.wait_for(done.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    (record,) = caplog.records
    assert record.exc_info is not None and record.exc_info[0] is KeyError


async def test_run_forever_waits_every_between_runs_and_ends_when_stopping() -> None:
    stopping = asyncio.Event()
    runs: list[float] = []
    loop = asyncio.get_running_loop()

    async def step() -> None:
        runs.append(loop.time())
        if len(runs) == 3:
            stopping.set()

    await asyncio.wait_for(
        run_forever(
            step, name="tick", log=LOG, backoff=Backoff(1, 1), every=0.02, first_after=0, stopping=stopping
        ),
        5,
    )
    assert len(runs) == 3
    assert all(b - a >= 0.015 for a, b in itertools.pairwise(runs))


def test_bad_data_is_logged_at_error_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    before = SKIPPED.labels("unit-test")._value.get()
    with caplog.at_level(logging.ERROR, logger="test.retry"):
        skip_bad_data(LOG, "unit-test", "undecodable entry", [b"1-0", b"1-1"])
    assert SKIPPED.labels("unit-test")._value.get() == before + 2
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert record.__dict__["fields"]["entry_ids"] == ["1-0", "1-1"]


def test_refused_credentials_are_told_from_an_outage() -> None:
    from cassandra import AuthenticationFailed
    from cassandra.cluster import NoHostAvailable

    assert refused_credentials(
        redis.exceptions.AuthenticationError("WRONGPASS invalid username-password pair")
    )
    assert is_outage(redis.exceptions.AuthenticationError("WRONGPASS"))  # still retried like one
    assert refused_credentials(AuthenticationFailed("Provided username parley and/or password are incorrect"))
    every_host = NoHostAvailable("Unable to connect", {"127.0.0.1:9042": AuthenticationFailed("bad")})
    assert refused_credentials(every_host)
    one_host = NoHostAvailable(
        "Unable to connect",
        {"127.0.0.1:9042": AuthenticationFailed("bad"), "127.0.0.2:9042": OSError("down")},
    )
    assert not refused_credentials(one_host)
    assert not refused_credentials(redis.exceptions.ConnectionError("refused"))


def test_refused_credentials_are_logged_at_error_and_again_every_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    outage = Outage(LOG, "reading the inbox", clock=lambda: now[0])
    refused = redis.exceptions.AuthenticationError("WRONGPASS invalid username-password pair")
    with caplog.at_level(logging.DEBUG, logger="test.retry"):
        outage.failed(redis.exceptions.ConnectionError("refused"), 0.1)  # Redis restarting: an outage
        now[0] += 1
        outage.failed(refused, 0.1)  # back with a new password: the operator's to fix
        for _ in range(5):
            now[0] += 10
            outage.failed(refused, 0.1)  # within the minute: not again
        now[0] += 15
        outage.failed(refused, 0.1)  # 65 s after the first ERROR: again
        outage.recovered()
    by_level = [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert [level for level, _ in by_level] == [logging.WARNING, logging.ERROR, logging.ERROR, logging.INFO]
    first_error, second_error = by_level[1][1], by_level[2][1]
    assert "reading the inbox: credentials refused (AuthenticationError: WRONGPASS" in first_error
    assert "failing for 1s" in first_error and "failing for 66s" in second_error
    assert "available again after 66.0s (8 failed attempts)" in by_level[3][1]
