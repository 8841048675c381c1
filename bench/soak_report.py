"""The soak's results, as text tables and as JSON."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.report import Cell, table
from bench.soak_check import Tally, Verdict
from bench.soak_client import SessionLog
from bench.soak_faults import FaultRecord
from bench.soak_stack import ExitRecord

SHOWN_PROBLEMS = 20
TALLY_FIELDS = ["accepted", "finished", "errored", "hung", "lost", "duplicated", "missing", "mismatched"]


@dataclass(frozen=True)
class ProblemSession:
    """An accepted session that did not come through intact, and how."""

    session_id: str
    outcome: str
    error_code: str | None
    lost: bool
    duplicated: list[int]
    missing: list[int]
    mismatch: str | None
    events: int
    connections: int
    drops: dict[str, int]
    status: str | None  # what the service says of it afterwards

    @classmethod
    def of(cls, session: SessionLog, verdict: Verdict, lost: bool, status: str | None) -> ProblemSession:
        return cls(
            session_id=session.session_id,
            outcome=verdict.outcome.value,
            error_code=verdict.error_code,
            lost=lost,
            duplicated=list(verdict.duplicated),
            missing=list(verdict.missing),
            mismatch=verdict.mismatch,
            events=len(session.events),
            connections=session.connections,
            drops=dict(session.drops),
            status=status,
        )

    def findings(self) -> str:
        found = [self.outcome + (f" ({self.error_code})" if self.error_code else "")]
        found += ["lost"] if self.lost else []
        found += [f"duplicated {_indices(self.duplicated)}"] if self.duplicated else []
        found += [f"missing {_indices(self.missing)}"] if self.missing else []
        found += [f"mismatched: {self.mismatch}"] if self.mismatch else []
        return "; ".join(found)


def _indices(indices: list[int]) -> str:
    shown = ",".join(map(str, indices[:8]))
    return shown + (f",... ({len(indices)})" if len(indices) > 8 else "")


@dataclass
class SoakResult:
    settings: dict[str, Any]
    tally: Tally
    faults: list[FaultRecord]
    exits: list[ExitRecord]
    drops: Counter[str]  # connections that ended before [DONE], by why
    connections: int  # every POST and resume
    wall_s: float  # load and drain
    problems: list[ProblemSession]


def render(result: SoakResult) -> str:
    sections = [_heading(result), _faults(result), _exits(result), _sessions(result)]
    sections += [_errors(result), _drops(result), _problems(result)]
    return "\n\n".join(section for section in sections if section) + "\n"


def _heading(result: SoakResult) -> str:
    s = result.settings
    return (
        f"Soak: {s['clients']} clients for {s['duration_s']:g} s (then up to {s['drain_s']:g} s to end), "
        f"{s['gateways']} gateways, {s['workers']} workers; a fault every {_gap(s['fault_gap_s'])} s "
        f"in rotation: {', '.join(s['faults']) or 'none'}. Load and drain took {result.wall_s:g} s."
    )


def _gap(gap: Any) -> str:
    low, high = gap
    return f"{low:g}" if low == high else f"{low:g}-{high:g}"


def _faults(result: SoakResult) -> str:
    if not result.faults:
        return "Faults injected: none"
    rows: list[list[Cell]] = [[f.at_s, f.name, f.took_s, f.detail] for f in result.faults]
    return "Faults injected\n" + table(["at s", "fault", "took s", "what"], rows)


def _exits(result: SoakResult) -> str:
    if not result.exits:
        return "Processes that exited on their own: none"
    rows: list[list[Cell]] = [[e.at_s, e.process, e.returncode, e.log] for e in result.exits]
    return "Processes that exited on their own (restarted)\n" + table(
        ["at s", "process", "code", "log"], rows
    )


def _sessions(result: SoakResult) -> str:
    t = result.tally
    headers = ["started", "rejected", *TALLY_FIELDS]
    row: list[Cell] = [t.started, t.rejected, *(getattr(t, name) for name in TALLY_FIELDS)]
    verdict = (
        "every accepted session came through intact" if t.clean else "NOT every session came through intact"
    )
    return f"Sessions: {verdict}\n" + table(headers, [row])


def _errors(result: SoakResult) -> str:
    t = result.tally
    rows: list[list[Cell]] = [
        ["error event in the stream", code, n] for code, n in t.errors_by_code.most_common()
    ]
    rows += [["POST refused", code, n] for code, n in t.rejections_by_code.most_common()]
    return "Errors by code\n" + table(["where", "code", "sessions"], rows) if rows else "Errors by code: none"


def _drops(result: SoakResult) -> str:
    rows: list[list[Cell]] = [[why, n] for why, n in result.drops.most_common()]
    lead = f"Connections: {result.connections} (POSTs and resumes)"
    return lead + ("; ended before [DONE], by why\n" + table(["why", "times"], rows) if rows else "")


def _problems(result: SoakResult) -> str:
    if not result.problems:
        return ""
    rows: list[list[Cell]] = [
        [p.session_id, p.status, p.events, p.connections, p.findings()]
        for p in result.problems[:SHOWN_PROBLEMS]
    ]
    more = len(result.problems) - SHOWN_PROBLEMS
    tail = f"\n  ... and {more} more (all in the JSON)" if more > 0 else ""
    headers = ["session", "status now", "events", "connections", "findings"]
    return f"Sessions with findings ({len(result.problems)})\n" + table(headers, rows) + tail


def to_json(result: SoakResult) -> dict[str, Any]:
    t = result.tally
    return {
        "settings": result.settings,
        "sessions": {
            "started": t.started,
            "rejected": t.rejected,
            **{name: getattr(t, name) for name in TALLY_FIELDS},
            "clean": t.clean,
        },
        "errors_by_code": dict(t.errors_by_code),
        "rejections_by_code": dict(t.rejections_by_code),
        "faults": [dataclasses.asdict(f) for f in result.faults],
        "unplanned_exits": [dataclasses.asdict(e) for e in result.exits],
        "connections": result.connections,
        "drops": dict(result.drops),
        "wall_s": result.wall_s,
        "problem_sessions": [dataclasses.asdict(p) for p in result.problems],
    }


def write_json(result: SoakResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(result), indent=2) + "\n")
