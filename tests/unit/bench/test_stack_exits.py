"""A service that dies during a run fails the steps after it, says why, and keeps the logs."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from bench.runner import Runner
from bench.scenarios import SCENARIOS
from bench.stack import Service, Stack, _spawn


async def _stack_with(tmp_path: Path, code: str, *, wait: bool = True) -> Stack:
    service = Service(
        name="history",
        argv=[sys.executable, "-c", code],
        port=0,
        env={},
        log_path=tmp_path / "history.log",
        required=False,
    )
    await _spawn(service)
    assert service.process is not None
    if wait:
        await service.process.wait()
    service.ready = True  # it had answered its health check before it died
    return Stack(tmp_path, [service])


async def test_a_service_that_exited_fails_the_step_once_noted(tmp_path: Path) -> None:
    stack = await _stack_with(tmp_path, "print('Traceback: the cause'); raise SystemExit(3)")
    runner = Runner(SCENARIOS["smoke"], tmp_path / "out")
    try:
        assert runner.exited(stack, "parley") == ["history exited with 3"]
        assert runner.keep_logs
        (note,) = runner.notes
        assert "history exited with 3 during the run" in note and "Traceback: the cause" in note
        # Every later step fails too, but the note is not repeated.
        assert runner.exited(stack, "parley") == ["history exited with 3"]
        assert len(runner.notes) == 1
    finally:
        shutil.rmtree(runner.scratch, ignore_errors=True)


async def test_running_services_fail_nothing(tmp_path: Path) -> None:
    stack = await _stack_with(tmp_path, "import time; time.sleep(30)", wait=False)
    runner = Runner(SCENARIOS["smoke"], tmp_path / "out")
    try:
        assert runner.exited(stack, "parley") == []
        assert not runner.keep_logs and not runner.notes
    finally:
        await stack.stop(grace_s=1.0)
        shutil.rmtree(runner.scratch, ignore_errors=True)
