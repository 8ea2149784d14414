"""bench.brakewatch: the gateway's brake gauges read from its /metrics and summarised per step."""

from __future__ import annotations

from bench import brakewatch
from bench.runner import LIFT_AFTER_S, REST_MAX_S, rest_after_step

EXPOSITION = """\
# HELP parley_gateway_admission_rate_limit Sends per second the delivery brake admits
# TYPE parley_gateway_admission_rate_limit gauge
parley_gateway_admission_rate_limit 0.0
parley_gateway_admission_target_delivery_seconds 0.084
parley_gateway_admission_delivery_lag_floor_seconds 0.021
parley_gateway_frames_in_total{kind="send"} 12.0
"""


def test_parse_reads_the_brake_gauges_and_nothing_else() -> None:
    assert brakewatch.parse(EXPOSITION) == {"rate_limit": 0.0, "target_s": 0.084, "floor_s": 0.021}


def test_a_step_reports_the_range_and_how_long_the_limit_held() -> None:
    samples = [
        (1.0, {"target_s": 0.04, "floor_s": 0.01, "rate_limit": 0.0}),
        (2.0, {"target_s": 0.08, "floor_s": 0.02, "rate_limit": 300.0}),
        (3.0, {"target_s": 0.06, "floor_s": 0.015, "rate_limit": 200.0}),
        (9.0, {"target_s": 0.1, "floor_s": 0.05, "rate_limit": 0.0}),  # after the step
    ]
    summary = brakewatch.summarise(samples, 1.0, 3.0)
    assert summary is not None
    assert summary["samples"] == 3 and summary["limiting"] == 2
    assert summary["target_s"]["min"] == 0.04 and summary["target_s"]["max"] == 0.08
    assert summary["rate_limit"]["mean"] == 250.0
    text = brakewatch.describe(summary)
    assert "target 60 ms (40-80)" in text and "limiting in 2 of 3 s at 250/s (200-300)" in text
    assert brakewatch.summarise(samples, 4.0, 5.0) is None
    assert "not limiting" in brakewatch.describe(brakewatch.summarise(samples[:1], 0.0, 1.5) or {})


def test_a_search_step_that_shed_rests_until_its_limit_can_lapse() -> None:
    assert rest_after_step({"errors": {}}, retry_hint_s=5.0) == 0.0  # nothing refused: no limit left
    assert rest_after_step({"errors": {"OVERLOADED": 0}}, retry_hint_s=5.0) == 0.0
    shed = {"errors": {"OVERLOADED": 2058}}
    assert rest_after_step(shed, retry_hint_s=0.2) == LIFT_AFTER_S + 1.0  # the brake's own minimum
    assert rest_after_step(shed, retry_hint_s=4.0) == 9.0  # twice the hint, and a second
    assert rest_after_step(shed, retry_hint_s=60.0) == REST_MAX_S  # bounded


def test_latest_is_the_newest_sample_with_the_gauge() -> None:
    watch = brakewatch.BrakeWatch("http://127.0.0.1:1/metrics")
    assert watch.latest("retry_after_s") is None
    watch.samples = [(1.0, {"retry_after_s": 4.0}), (2.0, {"target_s": 0.04})]
    assert watch.latest("retry_after_s") == 4.0
