"""The compaction benchmark's command line: the strategies it knows are the ones it can run."""

from __future__ import annotations

import pytest

from bench import compaction
from history.migrate import load_migrations


def test_an_unknown_strategy_is_refused_before_any_node_starts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        compaction.main(["--strategies", "lcs,dtcs"])
    assert exit_info.value.code == 2
    assert "unknown strategies ['dtcs']" in capsys.readouterr().err


def test_the_shipped_strategy_is_one_the_benchmark_measures() -> None:
    # The migrations' last word on the messages table is the benchmark's "ucs-t4".
    statements = [s for m in load_migrations() for s in m.statements if "ALTER TABLE messages" in s]
    assert statements, "no migration sets the messages table's compaction"
    assert statements[-1].endswith(f"WITH compaction = {compaction.STRATEGIES['ucs-t4']}")
