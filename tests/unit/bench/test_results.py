"""Histograms across processes, merged step reports, verdicts and the result files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.hist import Latency
from bench.profile import top_functions
from bench.results import _overload_table, markdown_summary, merge_worker_steps, write_results
from bench.runner import generator_share, headline
from bench.scenarios import SCENARIOS, step_verdict

MS = 1_000_000


def _latency(values_ms: list[float]) -> Latency:
    hist = Latency()
    for value in values_ms:
        hist.record_ns(int(value * MS))
    return hist


def test_latency_percentiles_come_from_the_histogram() -> None:
    hist = _latency([1.0] * 98 + [50.0, 400.0])
    summary = hist.summary()
    assert summary["count"] == 100
    assert summary["p50_ms"] == pytest.approx(1.0, rel=0.01)
    assert summary["p99_ms"] == pytest.approx(50.0, rel=0.01)
    assert summary["max_ms"] == pytest.approx(400.0, rel=0.01)
    assert Latency().summary()["p99_ms"] is None


def test_latency_survives_encoding_and_merges() -> None:
    a = _latency([1.0, 2.0, 3.0])
    b = Latency.decode(_latency([100.0]).encode())
    a.add(b)
    assert a.count == 4
    assert a.summary()["max_ms"] == pytest.approx(100.0, rel=0.01)
    assert Latency.decode("").count == 0
    points = a.distribution(points=10)
    assert points[0][0] == 0.0 and points[-1][0] == pytest.approx(99.999)
    assert [ms for _, ms in points] == sorted(ms for _, ms in points)


def _report(worker: int, *, lost: int = 0, delivery_ms: float = 5.0, aborted: str = "") -> dict[str, Any]:
    return {
        "worker": worker,
        "rate": 500.0,
        "aborted": aborted,
        "measured_s": 10.0 - worker,
        "drain_s": 0.5,
        "offered": 5000,
        "sent": 5000,
        "skipped": 0,
        "window_acks": 5000,
        "window_deliveries": 8000,
        "stray": 0,
        "order_gaps": 0,
        "order_repeats": 0,
        "stream_resets": 0,
        "live": 100,
        "loss": {
            "sent": 5000,
            "acked": 5000,
            "failed": 0,
            "unacked": 0,
            "expected_deliveries": 8000,
            "delivered": 8000 - lost,
            "lost": lost,
            "duplicates": 0,
            "unexpected": 0,
            "delivered_unacked": 0,
        },
        "errors": {"ERROR_CODE_RATE_LIMITED": worker},
        "hist": {
            "ack": _latency([2.0] * 10).encode(),
            "delivery": _latency([delivery_ms] * 10).encode(),
            "lag": _latency([0.1] * 10).encode(),
        },
    }


def test_merge_sums_counts_and_histograms_across_workers() -> None:
    merged, hists = merge_worker_steps([_report(0), _report(1, lost=3, delivery_ms=250.0)])
    assert merged["rate"] == 1000.0
    assert merged["offered"] == 10_000
    assert merged["loss"]["lost"] == 3 and merged["loss"]["expected_deliveries"] == 16_000
    assert merged["errors"] == {"ERROR_CODE_RATE_LIMITED": 1}
    assert merged["measured_s"] == 9.0  # the shortest window
    assert merged["acked_per_s"] == pytest.approx(10_000 / 9.0, abs=0.1)
    assert hists["send_to_delivery"].count == 20
    assert merged["latency"]["send_to_delivery"]["max_ms"] == pytest.approx(250.0, rel=0.01)
    with pytest.raises(ValueError):
        merge_worker_steps([])


def test_verdict_names_every_reason_a_step_is_not_sustained() -> None:
    good, _ = merge_worker_steps([_report(0), _report(1)])
    assert step_verdict(good, p99_limit_ms=200) == []
    bad, _ = merge_worker_steps([_report(0, lost=2, delivery_ms=300.0, aborted="stalled")])
    reasons = step_verdict(bad, p99_limit_ms=200)
    assert any("aborted" in r for r in reasons)
    assert any("lost 2" in r for r in reasons)
    assert any("p99 send-to-delivery" in r for r in reasons)


def _result(tmp_name: str = "smoke") -> tuple[dict[str, Any], dict[str, dict[str, Latency]]]:
    merged, hists = merge_worker_steps([_report(0)])
    resources = {
        "processes": {
            "gateway": {"cpu_pct": 80.0, "cpu_pct_max": 90.0, "rss_mb": 100.0},
            "generator-0": {"cpu_pct": 15.0, "cpu_pct_max": 20.0, "rss_mb": 30.0},
            "generator-1": {"cpu_pct": 5.0, "cpu_pct_max": 6.0, "rss_mb": 30.0},
        },
        "machine_cpu_pct": 50.0,
    }
    merged.update(target="parley", rate=500.0, passed=True, reasons=[], resources=resources)
    merged["generator"] = generator_share(resources, acks=5000, seconds=10.0)
    target = {
        "name": "parley",
        "services": ["router", "gateway"],
        "missing": ["history (exited with 1)"],
        "steps": [merged],
        "profiles": [],
        "connect": {"users": 200, "connected": 200, "seconds": 1.0, "connect_failures": {}},
        "memory": {
            "process": "gateway",
            "streams": 200,
            "rss_before_mb": 70.0,
            "rss_after_mb": 78.0,
            "per_stream_kb": 40.96,
        },
        "best_rate": None,
    }
    scenario = SCENARIOS[tmp_name]
    result = {
        "scenario": tmp_name,
        "description": scenario.description,
        "started_at": "2026-01-02T03:04:05",
        "machine": {"cpus": 2, "cpu_model": "Test CPU", "memory_gb": 24, "python": "3.11"},
        "load": "200 users",
        "notes": ["history did not start"],
        "headline": headline(scenario, [target]),
        "targets": [target],
    }
    return result, {"parley 500/s": hists}


def test_summary_states_machine_load_latency_and_loss() -> None:
    result, _ = _result()
    text = markdown_summary(result)
    assert "2 cores (Test CPU)" in text
    assert "200 users" in text
    assert "history did not start" in text
    assert "40.96 KB per stream" in text
    assert "lost=0" in text  # the headline
    # The load generator's own cost: both processes, against the machine and the CPU in use.
    assert "load generator at 500 msg/s used 20 % of a core" in text
    assert "0.400 ms CPU per message" in text
    assert "| generator-0 | 15 |" in text  # and each process in the resources table
    assert "| parley | 500 |" in text


def test_a_note_with_a_log_tail_keeps_its_lines_in_a_block() -> None:
    result, _ = _result()
    result["notes"] = ["parley: history exited with 1 during the run; its last log lines:\nTraceback\n  boom"]
    text = markdown_summary(result)
    note = "- parley: history exited with 1 during the run; its last log lines:"
    assert f"{note}\n\n  ```\n  Traceback\n    boom\n  ```" in text


def test_generator_share_counts_only_generator_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bench.runner.psutil.cpu_count", lambda: 2)
    resources = {
        "processes": {"gateway": {"cpu_pct": 80.0}, "generator-0": {"cpu_pct": 30.0}},
        "machine_cpu_pct": 60.0,  # of 2 cores: 120 % of a core in use
    }
    share = generator_share(resources, acks=1000, seconds=2.0)
    assert share == {
        "processes": ["generator-0"],
        "cpu_pct": 30.0,
        "machine_pct": 15.0,
        "busy_share_pct": 25.0,
        "cpu_ms_per_msg": 0.6,  # 0.3 core x 2 s / 1000 messages
    }
    idle = generator_share({"processes": {}, "machine_cpu_pct": None}, acks=0, seconds=0.0)
    assert idle["cpu_pct"] == 0.0 and idle["busy_share_pct"] is None and idle["cpu_ms_per_msg"] is None


def test_write_results_makes_json_markdown_plot_and_latest(tmp_path: Path) -> None:
    result, hists = _result()
    paths = write_results(result, hists, tmp_path)
    assert paths["json"].name == "smoke-20260102T030405.json"
    data = json.loads(paths["json"].read_text())
    assert data["targets"][0]["steps"][0]["loss"]["lost"] == 0
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["latest"].read_text() == paths["md"].read_text()


def test_top_functions_from_collapsed_stacks() -> None:
    collapsed = "\n".join(
        [
            "main (app.py:1);loop (app.py:5);parse (codec.py:10) 60",
            "main (app.py:1);loop (app.py:6);parse (codec.py:12) 20",
            "main (app.py:1);loop (app.py:7) 20",
            "garbage line",
        ]
    )
    samples, rows = top_functions(collapsed)
    assert samples == 100
    by_frame = {r["frame"]: r for r in rows}
    # Lines of one function merge; self = leaf samples, total = samples with it anywhere.
    assert by_frame["parse (codec.py)"]["self_pct"] == 80.0
    assert by_frame["loop (app.py)"]["self_pct"] == 20.0
    assert by_frame["loop (app.py)"]["total_pct"] == 100.0
    assert rows[0]["frame"] == "parse (codec.py)"
    assert top_functions("") == (0, [])


def test_gc_delta_counts_collections_and_long_pauses_within_the_window() -> None:
    from bench.resources import gc_delta

    before = {"gens": {"0": {"collections": 10, "total_s": 0.010}, "2": {"collections": 1, "total_s": 0.2}}}
    after = {
        "gens": {"0": {"collections": 25, "total_s": 0.025}, "2": {"collections": 3, "total_s": 0.9}},
        # (end time, generation, seconds): one before the window, two inside.
        "long": [[5.0, 2, 0.2], [12.0, 0, 0.006], [13.0, 2, 0.5]],
    }
    delta = gc_delta(before, after, start=10.0, end=20.0)
    assert delta["collections"] == {"0": 15, "2": 2}
    assert delta["pause_total_ms"] == pytest.approx(715.0)
    assert delta["pauses_over_5ms"] == 2
    assert delta["max_pause_ms"] == 500.0 and delta["full_collection_max_ms"] == 500.0
    first = gc_delta(None, after, start=0.0, end=20.0)
    assert first["collections"] == {"0": 25, "2": 3}
    # Snapshots from before the probe timed CPU: no CPU figure for the longest pause.
    assert delta["max_pause_cpu_ms"] is None and delta["pause_cpu_ms"] == 0.0


def test_gc_delta_separates_the_collectors_cpu_from_waiting() -> None:
    from bench.resources import gc_delta
    from bench.results import _gc_table

    before = {"gens": {"0": {"collections": 10, "total_s": 0.010, "cpu_s": 0.008}}}
    after = {
        "gens": {"0": {"collections": 20, "total_s": 0.210, "cpu_s": 0.028}},
        # The longest pause: 150 ms of wall time, 4 ms of it the collector's CPU.
        "long": [[12.0, 0, 0.150, 0.004], [13.0, 0, 0.040, 0.012]],
    }
    delta = gc_delta(before, after, start=10.0, end=20.0)
    assert delta["pause_total_ms"] == pytest.approx(200.0)
    assert delta["pause_cpu_ms"] == pytest.approx(20.0)
    assert delta["max_pause_ms"] == 150.0 and delta["max_pause_cpu_ms"] == 4.0
    row = _gc_table({"gateway": delta})[2]
    assert row == "| gateway | 10 / 0 / 0 | 200 (20) | 2 | 150 (4) |"


def test_merged_step_keeps_the_encoded_distributions() -> None:
    merged, hists = merge_worker_steps([_report(0), _report(1)])
    restored = Latency.decode(merged["histograms"]["send_to_delivery"])
    assert restored.count == hists["send_to_delivery"].count == 20


def _overload_report(*, unacked: int = 0, admitted_ms: float = 20.0) -> dict[str, Any]:
    report = _report(0, delivery_ms=900.0)  # from the intended time: includes waiting to be admitted
    report["errors"] = {"ERROR_CODE_OVERLOADED": 40}
    report["retries"] = 40
    report["loss"]["unacked"] = unacked
    report["hist"]["admitted_ack"] = _latency([admitted_ms / 2] * 10).encode()
    report["hist"]["admitted_delivery"] = _latency([admitted_ms] * 10).encode()
    return report


def test_overload_verdict_judges_admitted_latency_and_eventual_delivery() -> None:
    shed, _ = merge_worker_steps([_overload_report()])
    assert shed["retries"] == 40
    # Refusals and slow intended-time latency are expected under overload: it passes ...
    assert step_verdict(shed, p99_limit_ms=200, retry_shed=True) == []
    assert step_verdict(shed, p99_limit_ms=200)  # ... but would not as a capacity step.
    slow, _ = merge_worker_steps([_overload_report(admitted_ms=400.0)])
    assert any("admitted" in r for r in step_verdict(slow, p99_limit_ms=200, retry_shed=True))
    gave_up, _ = merge_worker_steps([_overload_report(unacked=3)])
    assert any("never acked" in r for r in step_verdict(gave_up, p99_limit_ms=200, retry_shed=True))


def test_search_for_the_sustained_rate_fails_a_step_with_refusals_or_slow_admitted_sends() -> None:
    calm, _ = merge_worker_steps([_overload_report()])
    calm["errors"] = {}
    assert step_verdict(calm, p99_limit_ms=200, retry_shed=True, sustained_p99_ms=100) == []
    shed, _ = merge_worker_steps([_overload_report()])
    reasons = step_verdict(shed, p99_limit_ms=200, retry_shed=True, sustained_p99_ms=100)
    assert any("refused" in r for r in reasons)
    slow, _ = merge_worker_steps([_overload_report(admitted_ms=150.0)])
    slow["errors"] = {}
    reasons = step_verdict(slow, p99_limit_ms=200, retry_shed=True, sustained_p99_ms=100)
    assert any("100 ms" in r for r in reasons)


def test_overload_step_fails_when_admitted_p99_exceeds_the_ratio_to_the_sustained_one() -> None:
    step, _ = merge_worker_steps([_overload_report(admitted_ms=90.0)])
    assert step_verdict(step, p99_limit_ms=200, retry_shed=True, reference_p99_ms=50.0) == []
    reasons = step_verdict(step, p99_limit_ms=200, retry_shed=True, reference_p99_ms=40.0)
    assert any("2x the sustained rate's 40.0 ms" in r for r in reasons)


def test_overload_table_takes_the_ratio_to_the_sustained_step() -> None:
    search, _ = merge_worker_steps([_overload_report(admitted_ms=10.0)])
    sustained, _ = merge_worker_steps([_overload_report(admitted_ms=20.0)])
    sustained["sustained"] = True
    double, _ = merge_worker_steps([_overload_report(admitted_ms=30.0)])
    double["factor"] = 2.0
    lines = _overload_table([search, sustained, double])
    assert "0.50x" in lines[2]
    assert "(sustained)" in lines[3] and "1.00x" in lines[3]
    assert "(2x)" in lines[4] and "1.50x" in lines[4]


def test_overload_table_shows_refusals_resends_and_the_p99_ratio() -> None:
    first, _ = merge_worker_steps([_overload_report(admitted_ms=20.0)])
    second, _ = merge_worker_steps([_overload_report(admitted_ms=30.0)])
    lines = _overload_table([first, second])
    assert "OVERLOADED 40" in lines[2]
    assert "1.00x" in lines[2] and "1.50x" in lines[3]


def test_time_the_hypervisor_took_is_shown_inside_the_machine_total() -> None:
    result, _ = _result()
    resources = result["targets"][0]["steps"][0]["resources"]
    assert "stolen by the hypervisor" not in markdown_summary(result)  # not measured: no row
    resources["steal_pct"] = 7.5
    assert "| *of which stolen by the hypervisor (all cores = 100 %)* | 7.5 |" in markdown_summary(result)


def test_each_steps_box_speed_is_listed_with_its_rate() -> None:
    result, _ = _result()
    assert "Box speed during each step" not in markdown_summary(result)  # not measured: no line
    result["targets"][0]["steps"][0]["resources"]["box_speed_ms"] = {"mean": 6.25, "max": 9.5}
    assert "lower is faster; mean / slowest): 500/s: 6.25 / 9.5 ms" in markdown_summary(result)
