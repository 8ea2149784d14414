"""Small process helpers shared by the suite's infrastructure and services."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


class CommandFailed(RuntimeError):
    pass


async def run_logged(argv: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
    """Runs a command to completion, appending its output to log_path; raises with the tail if it fails."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            *argv, env=dict(env), stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
        )
        code = await process.wait()
    if code != 0:
        text = await asyncio.to_thread(log_path.read_text, errors="replace")
        tail = "\n".join(text.splitlines()[-20:])
        raise CommandFailed(f"{' '.join(argv)} exited with {code}:\n{tail}")
