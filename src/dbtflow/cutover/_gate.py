"""The parity gate of `dbtflow cutover`: one passing, recent parity report per target.

Contract
- `parse_reports(["prod=parity-prod.json", ...])` -> {target: path}; `parse_age("7d")` -> timedelta
  (`s`, `m`, `h`, `d`, `w`; a bare number is days).
- `check_reports(targets, reports, max_age, now)` returns one `ParityEvidence` per target, or raises
  `UserError` (one line: which target, what is wrong, how to fix it) for the first target whose
  report is missing, unreadable, not a `dbtflow parity --json-out` report, failing or too old.
- Passing means what `dbtflow parity`'s exit status 0 means: nothing unexplained
  (`exit_code == 0`, `counts.unexplained == 0`, and no difference neither explained nor accepted).
- A report's time is its `generated_at` (ISO 8601) when it has one, else the file's modification
  time; `ParityEvidence.clock` says which. A `target` in the report, when present, must match.

Pitfalls
- `dbtflow parity --json-out` writes `generated_at` (and the Prefect run's `target` when its run
  folder says). Only a report without it (an older dbtflow's) is aged by the file's modification
  time, which copying with `cp -p` or `touch`-ing makes look newer: re-run parity instead.
- A report without `target` (artifacts from a folder that does not say) is trusted to be the
  target the operator's `target=path` names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dbtflow._text import parse_duration
from dbtflow.errors import UserError

FUTURE_SLACK = timedelta(minutes=5)


@dataclass(frozen=True)
class ParityEvidence:
    """A passing parity report accepted for one target."""

    target: str
    path: Path
    generated_at: datetime
    age: timedelta
    clock: str  # "generated_at" or "file modified"
    verdict: str
    compared: int | None

    def describe(self) -> str:
        compared = f", {self.compared} nodes compared" if self.compared is not None else ""
        return (
            f"parity {self.target}: {self.path} passes ({self.verdict}{compared}), "
            f"{human_age(self.age)} old by its {self.clock} time"
        )


def parse_age(text: str) -> timedelta:
    """`--max-parity-age`: `7d`, `36h`, `90m`, `2w`, or a plain number of days."""
    return parse_duration(text, "--max-parity-age", noun="an age", bare_unit="d")


def human_age(age: timedelta) -> str:
    seconds = max(0, int(age.total_seconds()))
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def parse_reports(values: list[str] | None) -> dict[str, Path]:
    reports: dict[str, Path] = {}
    for value in values or []:
        target, sep, path = value.partition("=")
        if not sep or not target.strip() or not path.strip():
            raise UserError(f"--parity-report {value!r} is not TARGET=PATH: pass e.g. --parity-report prod=parity.json")
        if target.strip() in reports:
            raise UserError(f"--parity-report names target {target.strip()!r} twice: pass one report per target")
        reports[target.strip()] = Path(path.strip())
    return reports


def check_reports(
    targets: list[str], reports: dict[str, Path], max_age: timedelta, now: datetime | None = None
) -> list[ParityEvidence]:
    now = now or datetime.now(UTC)
    evidence = []
    for target in targets:
        path = reports.get(target)
        if path is None:
            raise UserError(
                f"no parity report for target {target!r}: run `dbtflow parity ... --json-out parity-{target}.json` "
                f"against a {target} run and pass --parity-report {target}=parity-{target}.json"
            )
        evidence.append(check_report(target, path, max_age, now))
    return evidence


def check_report(target: str, path: Path, max_age: timedelta, now: datetime) -> ParityEvidence:
    fix = f"re-run `dbtflow parity ... --json-out {path}` against a {target} run"
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise UserError(f"cannot read the parity report for {target!r} ({path}: {exc.strerror}): {fix}") from None
    except ValueError:
        raise UserError(f"the parity report for {target!r} ({path}) is not JSON: {fix}") from None
    if not isinstance(doc, dict) or "exit_code" not in doc or "verdict" not in doc:
        raise UserError(f"{path} is not a `dbtflow parity --json-out` report (no verdict/exit_code): {fix}")
    prefect_side: dict[str, Any] = doc["prefect"] if isinstance(doc.get("prefect"), dict) else {}
    named = doc.get("target") or prefect_side.get("target")
    if named and named != target:
        raise UserError(f"the parity report {path} is for target {named!r}, not {target!r}: pass {named}={path}")
    counts: dict[str, Any] = doc["counts"] if isinstance(doc.get("counts"), dict) else {}
    open_diffs = [d for d in doc.get("differences") or [] if isinstance(d, dict) and not _settled(d)]
    unexplained = max(int(counts.get("unexplained") or 0), len(open_diffs))
    if doc.get("exit_code") != 0 or unexplained:
        first = f" (first: {open_diffs[0].get('unique_id')} {open_diffs[0].get('kind')})" if open_diffs else ""
        raise UserError(
            f"the parity report for {target!r} ({path}) fails: {doc.get('verdict')}, {unexplained} unexplained "
            f"difference(s){first}; fix them or accept the reviewed ones (--accept), then {fix}"
        )
    generated, clock = _generated_at(doc, path)
    age = now - generated
    if age < -FUTURE_SLACK:
        raise UserError(
            f"the parity report for {target!r} ({path}) is dated in the future "
            f"({generated:%Y-%m-%d %H:%M} UTC): check the clock, then {fix}"
        )
    if age > max_age:
        raise UserError(
            f"the parity report for {target!r} ({path}) is {human_age(age)} old by its {clock} time, older than "
            f"--max-parity-age {human_age(max_age)}: {fix}"
        )
    compared = counts.get("compared")
    number = int(compared) if isinstance(compared, int) else None
    return ParityEvidence(target, path, generated, max(age, timedelta(0)), clock, str(doc.get("verdict")), number)


def _settled(difference: dict[str, Any]) -> bool:
    return bool(difference.get("explained") or difference.get("accepted"))


def _generated_at(doc: dict[str, Any], path: Path) -> tuple[datetime, str]:
    raw = doc.get("generated_at")
    if isinstance(raw, str) and raw:
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise UserError(f"{path}: generated_at {raw!r} is not an ISO 8601 time: re-run `dbtflow parity`") from None
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC), "generated_at"
    return datetime.fromtimestamp(path.stat().st_mtime, UTC), "file modified"
