"""Merging worker reports, and the result files of a run: JSON, markdown summary, PNG plot."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from bench import brakewatch, redislatency
from bench.hist import Latency

HISTOGRAMS = {
    "ack": "send_to_ack",
    "delivery": "send_to_delivery",
    "lag": "schedule_lag",
    # From the attempt the server admitted (differs from the above only when sends are resent).
    "admitted_ack": "admitted_send_to_ack",
    "admitted_delivery": "admitted_send_to_delivery",
}
_SUM_KEYS = (
    "offered",
    "sent",
    "skipped",
    "window_acks",
    "window_deliveries",
    "stray",
    "order_gaps",
    "order_repeats",
    "stream_resets",
    "live",
    "retries",
)


def merge_worker_steps(reports: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Latency]]:
    """One step's totals across workers, and its merged latency histograms."""
    if not reports:
        raise ValueError("no worker reports")
    merged: dict[str, Any] = {key: sum(int(r.get(key, 0)) for r in reports) for key in _SUM_KEYS}
    loss: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for report in reports:
        loss.update(report["loss"])
        errors.update(report["errors"])
    merged["loss"] = {key: loss[key] for key in reports[0]["loss"]}
    merged["errors"] = dict(errors)
    merged["rate"] = sum(float(r["rate"]) for r in reports)
    merged["aborted"] = "; ".join(sorted({r["aborted"] for r in reports if r["aborted"]}))
    # The shortest window is the one every worker measured in full.
    merged["measured_s"] = min(float(r["measured_s"]) for r in reports)
    merged["drain_s"] = max(float(r["drain_s"]) for r in reports)
    merged["still_arriving"] = any(r.get("still_arriving") for r in reports)
    hists: dict[str, Latency] = {}
    for short, name in HISTOGRAMS.items():
        total = Latency()
        for report in reports:
            if short in report["hist"]:
                total.add(Latency.decode(report["hist"][short]))
        hists[name] = total
    merged["latency"] = {name: h.summary() for name, h in hists.items()}
    # The whole distributions (HdrHistogram, base64), to re-plot or merge later.
    merged["histograms"] = {name: h.encode() for name, h in hists.items()}
    seconds = merged["measured_s"]
    merged["offered_per_s"] = round(merged["offered"] / seconds, 1) if seconds else 0.0
    merged["acked_per_s"] = round(merged["window_acks"] / seconds, 1) if seconds else 0.0
    merged["delivered_per_s"] = round(merged["window_deliveries"] / seconds, 1) if seconds else 0.0
    return merged, hists


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _steps_table(steps: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| target | offered msg/s | acked msg/s | delivered/s | ack p50 / p99 ms | "
        "delivery p50 / p99 / p99.9 / max ms | lost | errors | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for step in steps:
        ack = step["latency"]["send_to_ack"]
        delivery = step["latency"]["send_to_delivery"]
        errors = sum(step["errors"].values()) + step["loss"]["unacked"]
        verdict = "pass" if step["passed"] else "fail: " + "; ".join(step["reasons"])
        lines.append(
            f"| {step['target']} | {step['rate']:g} | {step['acked_per_s']:g} | "
            f"{step['delivered_per_s']:g} | "
            f"{_ms(ack['p50_ms'])} / {_ms(ack['p99_ms'])} | "
            f"{_ms(delivery['p50_ms'])} / {_ms(delivery['p99_ms'])} / {_ms(delivery['p999_ms'])} / "
            f"{_ms(delivery['max_ms'])} | {step['loss']['lost']} | {errors} | {verdict} |"
        )
    return lines


def _overload_table(steps: list[dict[str, Any]]) -> list[str]:
    """Per step: what was admitted, what was shed (by code) and resent, and the admitted latency."""
    lines = [
        "| offered msg/s | admitted (acked) msg/s | refusals by code | resends | "
        "admitted ack p50 / p99 ms | admitted delivery p50 / p99 / max ms | p99 vs sustained | "
        "lost | never acked |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    # The ratio is to the sustained step's p99 (found by the scenario's search), or to
    # the first step's when the rates were given.
    sustained = next((s for s in steps if s.get("sustained")), steps[0] if steps else None)
    base = sustained["latency"].get("admitted_send_to_delivery", {}).get("p99_ms") if sustained else None
    for step in steps:
        ack = step["latency"].get("admitted_send_to_ack", {})
        delivery = step["latency"].get("admitted_send_to_delivery", {})
        codes = ", ".join(f"{k.removeprefix('ERROR_CODE_')} {v}" for k, v in sorted(step["errors"].items()))
        p99 = delivery.get("p99_ms")
        ratio = f"{p99 / base:.2f}x" if p99 is not None and base else "-"
        kind = f" ({step['factor']:g}x)" if step.get("factor") else ""
        if step.get("sustained"):
            kind = " (sustained)"
        lines.append(
            f"| {step['rate']:g}{kind} | {step['acked_per_s']:g} | {codes or '-'} | "
            f"{step.get('retries', 0)} | "
            f"{_ms(ack.get('p50_ms'))} / {_ms(ack.get('p99_ms'))} | "
            f"{_ms(delivery.get('p50_ms'))} / {_ms(p99)} / {_ms(delivery.get('max_ms'))} | {ratio} | "
            f"{step['loss']['lost']} | {step['loss']['failed'] + step['loss']['unacked']} |"
        )
    return lines


def _resources_table(step: dict[str, Any]) -> list[str]:
    processes = step.get("resources", {}).get("processes", {})
    if not processes:
        return []
    lines = [
        "| process | CPU % of a core (mean) | CPU % (max) | CPU ms per message | RSS MB (peak) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in processes.items():
        per_msg = r.get("cpu_ms_per_msg")
        lines.append(
            f"| {name} | {r['cpu_pct']:g} | {r['cpu_pct_max']:g} | "
            f"{'-' if per_msg is None else f'{per_msg:.3f}'} | {r['rss_mb']:g} |"
        )
    others = step["resources"].get("others_cpu_pct")
    if others is not None:
        lines.append(f"| *other processes on the machine* | {others:g} | | | |")
    machine = step["resources"].get("machine_cpu_pct")
    if machine is not None:
        lines.append(f"| *machine total (all cores = 100 %)* | {machine:g} | | | |")
    steal = step["resources"].get("steal_pct")
    if steal is not None:
        # psutil counts stolen time as busy: it is inside the machine total and the "other" row.
        lines.append(f"| *of which stolen by the hypervisor (all cores = 100 %)* | {steal:g} | | | |")
    return lines


def _gc_table(gc: dict[str, Any]) -> list[str]:
    if not gc:
        return []
    lines = [
        "| process | collections gen0 / gen1 / gen2 | pause total ms (CPU) | pauses >= 5 ms "
        "| longest ms (CPU) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, g in gc.items():
        c = g["collections"]
        lines.append(
            f"| {name} | {c.get('0', 0)} / {c.get('1', 0)} / {c.get('2', 0)} | {g['pause_total_ms']:g}"
            f"{_cpu(g.get('pause_cpu_ms'))} | {g['pauses_over_5ms']} | {g['max_pause_ms']:g}"
            f"{_cpu(g.get('max_pause_cpu_ms'))} |"
        )
    lines.append("")
    lines.append(
        "(CPU: the collecting thread's own CPU time within the pauses; the rest of a pause was the "
        "process waiting for a core or for the GIL.)"
    )
    return lines


def _cpu(ms: float | None) -> str:
    return f" ({ms:g})" if ms is not None else ""


def markdown_summary(result: dict[str, Any]) -> str:
    """The human summary of a run (also printed at the end)."""
    machine = result["machine"]
    lines = [
        f"# Parley benchmark: {result['scenario']} ({result['started_at']})",
        "",
        f"{result['description']}",
        "",
        f"- Machine: {machine['cpus']} cores ({machine['cpu_model']}), {machine['memory_gb']} GB RAM, "
        f"Python {machine['python']}; load generator, services, Redis and Cassandra share the cores.",
        f"- Load: {result['load']}",
    ]
    code = result.get("code", {})
    if code.get("commit"):
        modified = code.get("services_modified") or []
        lines.append(
            f"- Code: commit {code['commit']}"
            + (f" plus local changes to {', '.join(modified)}" if modified else "")
            + (f"; services imported from {code['services_root']}" if code.get("services_root") else "")
        )
    for note in result.get("notes", []):
        # A note's further lines (a log tail) are kept as they were, in a block under it.
        first, _, rest = note.partition("\n")
        lines.append(f"- {first}")
        if rest:
            lines += ["", "  ```", *(f"  {line}" for line in rest.splitlines()), "  ```", ""]
    lines += ["", "## Headline", ""]
    lines += [f"- {h}" for h in result["headline"]]
    for target in result["targets"]:
        lines += ["", f"## {target['name']}", ""]
        lines.append(
            f"- Services: {', '.join(target['services']) or '-'}"
            + (f"; not running: {', '.join(target['missing'])}" if target.get("missing") else "")
        )
        connect = target.get("connect", {})
        if connect:
            lines.append(
                f"- Streams: {connect.get('connected')} of {connect.get('users')} connected "
                f"in {connect.get('seconds')} s"
                + (f" (failures: {connect['connect_failures']})" if connect.get("connect_failures") else "")
            )
        settle = target.get("settle")
        if settle:
            lines.append(
                f"- Before the first step: the history writer stored the setup's {settle['backlog']} log "
                f"entries (conversations, members) in {settle['seconds']} s ({settle['left']} left)"
            )
        stalls = [s for s in target["steps"] if "redis_latency" in s]
        if stalls:
            lines.append(
                "- Redis stalls during each step (latency monitor, events over "
                f"{redislatency.THRESHOLD_MS} ms; seconds with one, longest): "
                + "; ".join(f"{s['rate']:g}/s: {redislatency.describe(s['redis_latency'])}" for s in stalls)
            )
        speeds = [s for s in target["steps"] if s.get("resources", {}).get("box_speed_ms")]
        if speeds:
            lines.append(
                "- Box speed during each step (bench/boxspeed.py: CPU ms of a fixed workload, once a "
                "second; lower is faster; mean / slowest): "
                + "; ".join(
                    f"{s['rate']:g}/s: {s['resources']['box_speed_ms']['mean']:g} / "
                    f"{s['resources']['box_speed_ms']['max']:g} ms"
                    for s in speeds
                )
            )
        braked = [s for s in target["steps"] if s.get("brake")]
        if braked:
            lines.append(
                "- Delivery brake during each step (gateway gauges once a second, bench/brakewatch.py; "
                "mean (range)): "
                + "; ".join(f"{s['rate']:g}/s: {brakewatch.describe(s['brake'])}" for s in braked)
            )
        history = [s["history"] for s in target["steps"] if s.get("history")]
        if history:
            lines.append(
                "- History (Cassandra) writer backlog when each step's deliveries were done: "
                + ", ".join(
                    f"{s['rate']:g}/s: {s['history']['lag_at_drain_end']} entries, caught up in "
                    f"{s['history']['catch_up_s']:g} s"
                    + (
                        ""
                        if not s["history"]["lag_after_wait"]
                        else f" (NOT: {s['history']['lag_after_wait']} left)"
                    )
                    for s in target["steps"]
                    if s.get("history")
                )
            )
        memory = target.get("memory", {})
        if memory.get("per_stream_kb") is not None:
            lines.append(
                f"- {memory['process']} memory: {memory['rss_before_mb']} MB before streams, "
                f"{memory['rss_after_mb']} MB with {memory['streams']} streams: "
                f"**{memory['per_stream_kb']} KB per stream**"
            )
        if target.get("best_rate") is not None and result.get("config", {}).get("search"):
            lines.append(f"- Highest sustained rate: **{target['best_rate']:g} msg/s**")
        lines += ["", *_steps_table(target["steps"])]
        if any(step.get("retries") or step["errors"] for step in target["steps"]):
            lines += ["", "Shed and resent sends (overload):", "", *_overload_table(target["steps"])]
        if target["steps"]:
            heaviest = max(target["steps"], key=lambda s: s["rate"] if s["passed"] else -1)
            table = _resources_table(heaviest)
            if table:
                lines += ["", f"Resources during the {heaviest['rate']:g} msg/s step:", "", *table]
            gc = _gc_table(heaviest.get("gc", {}))
            if gc:
                lines += ["", f"Garbage collection during the {heaviest['rate']:g} msg/s step:", "", *gc]
        ramp_gc = _gc_table(connect.get("gc", {}))
        if ramp_gc:
            lines += ["", "Garbage collection while the streams were opened:", "", *ramp_gc]
        for profile in target.get("profiles", []):
            lines += [
                "",
                f"Profile of {profile['process']} at {profile['rate']:g} msg/s "
                f"({profile['samples']} samples, py-spy; % of samples):",
                "",
            ]
            lines += ["| self % | total % | function |", "|---:|---:|---|"]
            for row in profile["top"][:15]:
                lines.append(f"| {row['self_pct']:.1f} | {row['total_pct']:.1f} | `{row['frame']}` |")
    lines.append("")
    return "\n".join(lines)


def plot_latency(result: dict[str, Any], hists: dict[str, dict[str, Latency]], path: Path) -> None:
    """Latency by percentile (log scale of 1/(1-p)) for every step's send-to-delivery and send-to-ack."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 6))
    colors = plt.get_cmap("tab20" if len(hists) > 10 else "tab10")
    for index, (label, by_name) in enumerate(hists.items()):
        # One colour per step: solid send-to-delivery, dotted send-to-ack.
        for name, style in (("send_to_delivery", "-"), ("send_to_ack", ":")):
            points = by_name[name].distribution()
            if not points:
                continue
            xs = [1.0 / (1.0 - p / 100.0) if p < 100 else 1e5 for p, _ in points]
            ys = [max(ms, 0.001) for _, ms in points]
            ax.plot(xs, ys, style, color=colors(index % colors.N), label=f"{label} {name.replace('_', ' ')}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ticks = [1, 2, 10, 100, 1000, 10000, 100000]
    ax.set_xticks(ticks)
    ax.set_xticklabels(["p0", "p50", "p90", "p99", "p99.9", "p99.99", "p99.999"])
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms, from intended send time)")
    ax.set_title(f"Parley {result['scenario']} - {result['started_at']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_results(
    result: dict[str, Any], hists: dict[str, dict[str, Latency]], out_dir: Path
) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{result['scenario']}-{result['started_at'].replace(':', '').replace('-', '')}"
    paths = {
        "json": out_dir / f"{stem}.json",
        "md": out_dir / f"{stem}.md",
        "png": out_dir / f"{stem}.png",
        "latest": out_dir / f"latest-{result['scenario']}.md",
    }
    result = {**result, "files": {k: p.name for k, p in paths.items()}}
    paths["json"].write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    summary = markdown_summary(result)
    paths["md"].write_text(summary + f"\nPlot: `{paths['png'].name}`; raw data: `{paths['json'].name}`.\n")
    shutil.copyfile(paths["md"], paths["latest"])
    try:
        plot_latency(result, hists, paths["png"])
    except Exception as exc:  # a plot must not lose the numbers
        paths["md"].write_text(paths["md"].read_text() + f"\n(plot failed: {exc})\n")
        del paths["png"]
    return paths
