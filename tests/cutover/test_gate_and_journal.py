"""The parity gate and the journal's bookkeeping, without servers."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dbtflow.cli import app
from dbtflow.cutover._gate import check_report, parse_age, parse_reports
from dbtflow.cutover._journal import Journal
from dbtflow.deploy._history import Actor
from dbtflow.errors import UserError
from tests.parity.builders import manifest, node, run_results, write_run, write_step

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def report(tmp_path: Path, **fields: object) -> Path:
    doc = {"verdict": "parity holds", "exit_code": 0, "counts": {"compared": 3, "unexplained": 0}, "differences": []}
    path = tmp_path / "report.json"
    path.write_text(json.dumps({**doc, **fields}))
    return path


@pytest.mark.parametrize(
    ("text", "age"),
    [
        ("7d", timedelta(days=7)),
        ("36h", timedelta(hours=36)),
        ("90m", timedelta(minutes=90)),
        ("2w", timedelta(14)),
        ("3", timedelta(days=3)),
        ("45s", timedelta(seconds=45)),
    ],
)
def test_ages(text: str, age: timedelta) -> None:
    assert parse_age(text) == age


@pytest.mark.parametrize("text", ["", "soon", "7 days", "-1d", "d"])
def test_bad_ages(text: str) -> None:
    with pytest.raises(UserError, match="is not an age"):
        parse_age(text)


def test_report_options() -> None:
    assert parse_reports(["prod=a.json", " dev = b.json"]) == {"prod": Path("a.json"), "dev": Path("b.json")}
    with pytest.raises(UserError, match="twice"):
        parse_reports(["prod=a.json", "prod=b.json"])


def test_generated_at_wins_over_the_file_time(tmp_path: Path) -> None:
    path = report(tmp_path, generated_at="2026-11-21T12:00:00Z")
    evidence = check_report("prod", path, timedelta(days=2), NOW)
    assert evidence.clock == "generated_at" and evidence.age == timedelta(days=1) and evidence.compared == 3
    with pytest.raises(UserError, match=r"24\.0 h old by its generated_at time, older than --max-parity-age 12\.0 h"):
        check_report("prod", path, timedelta(hours=12), NOW)


def test_a_report_of_the_real_command_is_aged_by_its_generated_at_and_bound_to_its_target(tmp_path: Path) -> None:
    """`dbtflow parity --json-out` on a stored prod run: the gate uses the report's own time and target."""
    nodes, results = [node("seed.wg.brands")], [("seed.wg.brands", "success")]
    cloud = write_step(tmp_path / "cloud", manifest(nodes), run_results(results))
    write_run(tmp_path / "runs" / "r1", None, [("build", manifest(nodes), run_results(results))], target="prod")
    path = tmp_path / "parity-prod.json"
    args = ["parity", "--no-publish", "--cloud-artifacts", str(cloud), "--prefect-run", "r1"]
    made = datetime.now(UTC)
    result = CliRunner().invoke(app, [*args, "--runs-dir", str(tmp_path / "runs"), "--json-out", str(path)])
    assert result.exit_code == 0, result.output
    month_ago = (made - timedelta(days=30)).timestamp()
    os.utime(path, (month_ago, month_ago))  # copied with `cp -p`, or touched: the file's time no longer counts

    evidence = check_report("prod", path, timedelta(days=7), datetime.now(UTC))
    assert evidence.clock == "generated_at" and abs(evidence.generated_at - made) < timedelta(seconds=2)
    assert "old by its generated_at time" in evidence.describe()
    with pytest.raises(UserError, match=r"8\.0 d old by its generated_at time, older than --max-parity-age 7\.0 d"):
        check_report("prod", path, timedelta(days=7), evidence.generated_at + timedelta(days=8))
    with pytest.raises(UserError, match="is for target 'prod', not 'dev': pass prod="):
        check_report("dev", path, timedelta(days=7), datetime.now(UTC))


def test_a_report_without_generated_at_is_aged_by_its_file_time(tmp_path: Path) -> None:
    """An older dbtflow's report (no generated_at): its file's modification time stands in."""
    path = report(tmp_path)
    two_days_ago = (NOW - timedelta(days=2)).timestamp()
    os.utime(path, (two_days_ago, two_days_ago))
    evidence = check_report("prod", path, timedelta(days=7), NOW)
    assert evidence.clock == "file modified" and evidence.age == timedelta(days=2)


def test_a_report_dated_in_the_future_or_for_another_target_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="dated in the future"):
        check_report("prod", report(tmp_path, generated_at="2026-11-23T12:00:00+00:00"), timedelta(days=7), NOW)
    with pytest.raises(UserError, match="is for target 'dev', not 'prod'"):
        check_report("prod", report(tmp_path, target="dev", generated_at="2026-11-22T11:00:00"), timedelta(7), NOW)


def test_an_unexplained_difference_fails_even_when_the_exit_code_says_0(tmp_path: Path) -> None:
    diff = {"unique_id": "model.wg.x", "kind": "status", "explained": False, "accepted": False}
    path = report(tmp_path, differences=[diff], generated_at="2026-11-22T11:00:00Z")
    with pytest.raises(UserError, match=r"1 unexplained difference\(s\) \(first: model.wg.x status\)"):
        check_report("prod", path, timedelta(days=7), NOW)
    accepted = report(tmp_path, differences=[{**diff, "accepted": True}], generated_at="2026-11-22T11:00:00Z")
    assert check_report("prod", accepted, timedelta(days=7), NOW).verdict == "parity holds"


def test_open_changes_group_by_object_and_skip_undone_ones() -> None:
    actor = Actor.current("test")
    journal = Journal.new("run_dbt_wg/dbt_wg", {"base_url": "https://cloud.getdbt.com", "account_id": 1})
    job = {"kind": "dbt_cloud_job", "job_id": 1, "name": "a"}
    on, off = {"schedule": True}, {"schedule": False}
    for before, after in ((on, off), (on, off)):  # cut over, someone re-enabled it by hand, cut over again
        journal.begin("cutover", job, "triggers", before, after, actor)
        journal.complete(after)
    sched = {"kind": "prefect_schedule", "deployment": "run_dbt_wg/dbt_wg", "slug": "prod", "schedule_id": "x"}
    journal.begin("cutover", sched, "active", False, True, actor)
    journal.complete(True)
    changes = journal.open_changes()
    assert [(c.object["kind"], c.seqs, c.before, c.after) for c in changes] == [
        ("prefect_schedule", [3], False, True),
        ("dbt_cloud_job", [1, 2], on, off),
    ]
    journal.begin("rollback", sched, "active", True, False, actor, undoes=[3])
    journal.complete(False)
    assert [c.seqs for c in journal.open_changes()] == [[1, 2]]
    assert journal.entries[-1]["undoes"] == [3] and journal.pending is None
