"""The run's report: JSON (everything) and markdown (for people), in tests/chaos/reports/."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.checker import FAILING, INFO, Verdict
from tests.chaos.profiles import PROFILES
from tests.chaos.schedule import Fault


@dataclass
class FaultResult:
    kind: str
    at_s: float  # since the workload started
    healed_after_s: float
    detail: str


@dataclass
class Report:
    run_id: str
    profile: str
    seed: int
    commit: str
    started_utc: str
    duration_s: float
    rate: float
    devices: int
    conversations: int
    schedule: list[Fault]
    faults: list[FaultResult]
    verdict: Verdict
    # Anything else worth keeping: phase timings, writer status, client statistics.
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.verdict.passed and not self.notes.get("errors")

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "result": "PASS" if self.passed else "FAIL",
            "profile": self.profile,
            "seed": self.seed,
            "replay": f"{PROFILES[self.profile].replay} SEED={self.seed}",
            "commit": self.commit,
            "started_utc": self.started_utc,
            "duration_s": round(self.duration_s, 1),
            "rate_per_s": self.rate,
            "devices": self.devices,
            "conversations": self.conversations,
            "totals": self.verdict.totals,
            "failures": self.verdict.failures,
            "by_fault": dict(sorted(self.verdict.by_fault.items())),
            "examples": dict(self.verdict.examples),
            "where": {name: dict(sorted(places.items())) for name, places in self.verdict.where.items()},
            "schedule": [asdict(f) | {"kind": f.kind} for f in self.schedule],
            "faults": [asdict(f) for f in self.faults],
            "notes": self.notes,
        }

    def to_markdown(self) -> str:
        v = self.verdict
        lines = [
            f"# Fault suite run {self.run_id}: {'PASS' if self.passed else 'FAIL'}",
            "",
            f"Profile `{self.profile}` (topology `{PROFILES[self.profile].topology}`), "
            f"seed `{self.seed}` (replay: `{self.to_json()['replay']}`), "
            f"commit `{self.commit}`, started {self.started_utc}, {self.duration_s:.0f} s. "
            f"{self.devices} devices in {self.conversations} conversations, {self.rate:g} sends/s in total.",
            "",
            "## Counts",
            "",
            "| count | total |",
            "|---|---|",
            *(
                f"| {name}{' (must be 0)' if name in FAILING else ''} | {v.totals[name]} |"
                for name in (*INFO, *FAILING)
            ),
            "",
            "## Per fault kind",
            "",
            "Each send is attributed to the fault during (or up to 10 s before) which it was first sent.",
            "",
            "| fault | " + " | ".join(("acked", *FAILING)) + " |",
            "|---|" + "---|" * (1 + len(FAILING)),
        ]
        for kind, counts in sorted(v.by_fault.items()):
            lines.append(f"| {kind} | " + " | ".join(str(counts[n]) for n in ("acked", *FAILING)) + " |")
        lines += [
            "",
            "## Faults",
            "",
            "| # | at (s) | fault | healed after (s) | what happened |",
            "|---|---|---|---|---|",
        ]
        for index, fault in enumerate(self.faults, 1):
            lines.append(
                f"| {index} | {fault.at_s:.1f} | {fault.kind} | {fault.healed_after_s:.1f} | {fault.detail} |"
            )
        if v.examples:
            lines += ["", "## Examples", ""]
            for name, examples in v.examples.items():
                lines.append(f"- **{name}**")
                lines += [f"  - {e}" for e in examples]
                if v.where.get(name):
                    places = ", ".join(f"{w}: {n}" for w, n in sorted(v.where[name].items()))
                    lines.append(f"  - by device and conversation: {places}")
        if self.notes:
            lines += ["", "## Notes", "", "```json", json.dumps(self.notes, indent=2, sort_keys=True), "```"]
        return "\n".join(lines) + "\n"

    def write(self, directory: Path) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        stem = f"chaos-{self.profile}-{self.run_id}"
        json_path = directory / f"{stem}.json"
        md_path = directory / f"{stem}.md"
        json_path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n")
        md_path.write_text(self.to_markdown())
        return json_path, md_path
