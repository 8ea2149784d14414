"""The alert rules and the Grafana dashboard: checked by promtool, and naming only exported metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import gateway.metrics
import history.metrics
import parley.metrics
import presence.metrics
import router.metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/helm/parley/files/prometheus-rules.yaml"
DASHBOARD = ROOT / "deploy/grafana/parley-dashboard.json"
MODULES = (parley.metrics, gateway.metrics, router.metrics, history.metrics, presence.metrics)

# PromQL words that look like metric names but are functions, keywords or labels.
NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: `make test-tools` installs Debian's prometheus package")
    return path


def exported_names() -> set[str]:
    """Every series name the services expose (Counter families are named without _total)."""
    families = [*REGISTRY.collect(), *presence.metrics.CLUSTER.describe()]
    names: set[str] = set()
    for family in families:
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_sum", f"{family.name}_count"}
        else:
            names.add(family.name)
    return names


def metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "", without_strings)
    without_groupings = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", without_labels)
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()", without_groupings))
    return {w for w in words if "_" in w and w not in NOT_METRICS}


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        out += [(panel["title"], target["expr"]) for target in panel["targets"]]
    return out


def test_alert_rules_pass_promtool() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_every_alert_has_a_runbook_and_names_exported_metrics() -> None:
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    exported = exported_names()
    alerts = {rule["alert"] for rule in rules}
    assert {
        "ParleyHistoryWriterLagging",
        "ParleyFanoutLagging",
        "ParleyErrorRatioHigh",
        "ParleyDeliveryLatencyHigh",
        "ParleyNoServingReplicas",
    } <= alerts
    for rule in rules:
        assert rule["annotations"]["runbook"].strip(), rule["alert"]
        unknown = metric_names(rule["expr"]) - exported
        assert not unknown, f"{rule['alert']} names metrics nobody exports: {unknown}"


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    # promtool parses PromQL in recording rules: one rule per panel query.
    rules = [
        {"record": f"parley:dashboard_query_{i}", "expr": expr}
        for i, (_, expr) in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_every_dashboard_query_names_exported_metrics() -> None:
    exported = exported_names()
    for title, expr in dashboard_exprs():
        names = metric_names(expr)
        assert names, f"{title!r}: no metric in {expr}"
        assert not names - exported, f"{title!r} names metrics nobody exports: {names - exported}"


def test_the_name_check_catches_a_typo() -> None:
    assert metric_names('sum by (le) (rate(parley_gateway_delivery_secs_bucket{x="a_b"}[5m]))') == {
        "parley_gateway_delivery_secs_bucket"
    }
    assert "parley_gateway_delivery_secs_bucket" not in exported_names()
