"""`dbtflow cutover` / `dbtflow rollback` against the fake dbt Cloud API and a real Prefect server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dbtflow.cloud._client import DbtCloudClient
from dbtflow.parity._report import iso_utc
from tests.cutover.conftest import SCHEDULES, Site
from tests.fakes.dbtcloud_server import JOB_UPDATE

pytestmark = pytest.mark.timeout(300)
CUT = (1001, 1002)


def snapshots_except(site: Site, changed: tuple[int, ...] = ()) -> dict[int, bytes]:
    return {k: v for k, v in site.cloud.snapshot_jobs().items() if k not in changed}


def schedule_on(site: Site, job_id: int) -> bool:
    return bool(json.loads(site.cloud.job_snapshot(job_id))["triggers"]["schedule"])


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_cutover_then_rollback_leaves_every_job_byte_for_byte_and_the_schedules_paused(site: Site) -> None:
    original = site.cloud.snapshot_jobs()
    declared = {s["slug"]: s["parameters"] for s in SCHEDULES}
    assert site.schedule_parameters() == declared

    result = site.run(*site.cutover_args("--apply"))
    assert result.exit_code == 0, result.output
    assert "cutover done: 4 change(s)" in result.output
    assert site.schedule_parameters() == declared  # prod still runs target prod, not the deployment's default
    assert not schedule_on(site, 1001) and not schedule_on(site, 1002)
    assert snapshots_except(site, CUT) == {k: v for k, v in original.items() if k not in CUT}
    for job_id in CUT:  # nothing but triggers.schedule changed
        before, after = json.loads(original[job_id]), json.loads(site.cloud.job_snapshot(job_id))
        assert after == {**before, "triggers": {**before["triggers"], "schedule": False}}
    assert site.schedules() == {"prod": True, "dev": True}
    on_disk = site.journal_on_disk()
    assert site.journal_in_prefect() == on_disk
    assert [(e["op"], e["object"].get("job_id") or e["object"].get("slug")) for e in on_disk["entries"]] == [
        ("cutover", 1001),
        ("cutover", 1002),
        ("cutover", "prod"),
        ("cutover", "dev"),
    ]
    assert [r["target"] for r in on_disk["runs"][0]["parity"]] == ["dev", "prod"]
    first = on_disk["entries"][0]
    assert first["before"]["schedule"] is True and first["after"]["schedule"] is False
    command = first["by"]["command"]
    assert command.startswith("dbtflow cutover ") and " --apply" in command and first["by"]["user"] and first["at"]

    result = site.run("rollback", "--deployment", site.deployment)
    assert result.exit_code == 0, result.output
    assert "rollback done: 4 change(s)" in result.output
    assert site.cloud.snapshot_jobs() == original  # byte for byte, every job of the account
    assert site.schedules() == {"prod": False, "dev": False}
    assert site.schedule_parameters() == declared
    assert site.journal_in_prefect() == site.journal_on_disk()

    posts = site.job_posts()
    again = site.run("rollback", "--deployment", site.deployment)
    assert again.exit_code == 0, again.output
    assert "nothing to roll back" in again.output and site.job_posts() == posts
    assert site.cloud.snapshot_jobs() == original


def test_plan_changes_nothing(site: Site) -> None:
    original = site.cloud.snapshot_jobs()
    result = site.run(*site.cutover_args("--plan", "--job", "1001", "--job", "1008"))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "~ dbt Cloud job 1001 'Prod daily build': triggers.schedule true -> false" in out
    assert "~ dbt Cloud job 1008 'CI check': triggers.github_webhook true -> false" in out and "stay on" not in out
    assert "~ Prefect schedule 'prod' (target prod): paused -> active" in out
    assert "ok parity prod:" in out and "plan: 4 change(s); nothing was changed" in out
    assert site.cloud.snapshot_jobs() == original and site.job_posts() == 0
    assert site.schedules() == {"prod": False, "dev": False}
    assert not site.journal_file.exists() and site.journal_in_prefect() is None


def test_cutover_twice_changes_nothing_the_second_time(site: Site) -> None:
    assert site.run(*site.cutover_args("--apply")).exit_code == 0
    jobs, posts, journal = site.cloud.snapshot_jobs(), site.job_posts(), site.journal_on_disk()
    stamp = site.journal_file.stat().st_mtime_ns

    result = site.run(*site.cutover_args("--apply"))
    assert result.exit_code == 0, result.output
    assert "nothing to do: already cut over" in result.output
    assert "= dbt Cloud job 1001 'Prod daily build': triggers already off" in result.output
    assert site.cloud.snapshot_jobs() == jobs and site.job_posts() == posts
    assert site.journal_file.stat().st_mtime_ns == stamp and site.journal_in_prefect() == journal


def test_a_500_on_the_second_job_update_leaves_a_journal_rollback_restores_completely(site: Site) -> None:
    original = site.cloud.snapshot_jobs()
    site.cloud.fail(500, times=None, after=1, method="POST", path=JOB_UPDATE)

    result = site.run(*site.cutover_args("--apply"))
    assert result.exit_code == 1, result.output
    line = one_line(result.stderr)
    assert "cutover stopped after 1 of 4 change(s)" in line and "dbtflow rollback" in line
    assert not schedule_on(site, 1001) and schedule_on(site, 1002)  # half done in dbt Cloud...
    assert site.schedules() == {"prod": False, "dev": False}  # ...and Prefect never switched on
    journal = site.journal_on_disk()
    assert site.journal_in_prefect() == journal
    assert [e["object"]["job_id"] for e in journal["entries"]] == [1001]  # exactly the completed change
    assert journal["pending"]["object"]["job_id"] == 1002  # and the one in flight

    site.cloud.clear_faults()
    result = site.run("rollback", "--deployment", site.deployment)
    assert result.exit_code == 0, result.output
    assert "had not happened: dropped" in result.output
    assert site.cloud.snapshot_jobs() == original
    assert site.schedules() == {"prod": False, "dev": False}
    assert site.journal_on_disk()["pending"] is None


def test_a_lost_response_is_found_done_and_rolled_back_too(site: Site) -> None:
    """The second update is applied but every answer is a 500: the pending change did happen."""
    original = site.cloud.snapshot_jobs()
    site.cloud.inject(status=500, times=None, after=1, method="POST", path=JOB_UPDATE, apply=True)
    result = site.run(*site.cutover_args("--apply"))
    assert result.exit_code == 1
    assert not schedule_on(site, 1002) and [e["seq"] for e in site.journal_on_disk()["entries"]] == [1]

    site.cloud.clear_faults()
    result = site.run("rollback", "--deployment", site.deployment)
    assert result.exit_code == 0, result.output
    assert "had happened: journaled" in result.output
    assert site.cloud.snapshot_jobs() == original


def test_rerunning_cutover_after_a_stop_finishes_it(site: Site) -> None:
    site.cloud.fail(500, times=None, after=1, method="POST", path=JOB_UPDATE)
    assert site.run(*site.cutover_args("--apply")).exit_code == 1
    site.cloud.clear_faults()
    result = site.run(*site.cutover_args("--apply"))
    assert result.exit_code == 0, result.output
    assert not schedule_on(site, 1001) and not schedule_on(site, 1002)
    assert site.schedules() == {"prod": True, "dev": True}
    assert [e["seq"] for e in site.journal_on_disk()["entries"]] == [1, 2, 3, 4]


def test_the_journal_is_in_the_file_and_in_prefect_before_each_next_change(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import SyncPrefectClient

    seen: list[tuple[str, int, int, Any]] = []

    def look(what: str) -> None:
        disk, prefect = site.journal_on_disk(), site.journal_in_prefect()
        assert prefect == disk, what
        seen.append((what, len(disk["entries"]), len(prefect["entries"]), disk["pending"]["object"]))

    real_update, real_schedule = DbtCloudClient.update_job, SyncPrefectClient.update_deployment_schedule

    def update_job(self: DbtCloudClient, job_id: int, *args: Any, **kwargs: Any) -> Any:
        look(f"job {job_id}")
        return real_update(self, job_id, *args, **kwargs)

    def update_schedule(self: SyncPrefectClient, deployment_id: Any, schedule_id: Any, **kwargs: Any) -> Any:
        look("schedule")
        return real_schedule(self, deployment_id, schedule_id, **kwargs)

    monkeypatch.setattr(DbtCloudClient, "update_job", update_job)
    monkeypatch.setattr(SyncPrefectClient, "update_deployment_schedule", update_schedule)
    result = site.run(*site.cutover_args("--apply"))
    assert result.exit_code == 0, result.output
    assert [(w, d, p, o.get("job_id") or o.get("slug")) for w, d, p, o in seen] == [
        ("job 1001", 0, 0, 1001),
        ("job 1002", 1, 1, 1002),
        ("schedule", 2, 2, "prod"),
        ("schedule", 3, 3, "dev"),
    ]

    seen.clear()
    assert site.run("rollback", "--deployment", site.deployment).exit_code == 0
    assert [(w, d, o.get("job_id") or o.get("slug")) for w, d, _, o in seen] == [
        ("schedule", 4, "dev"),
        ("schedule", 5, "prod"),
        ("job 1002", 6, 1002),
        ("job 1001", 7, 1001),
    ]


def _age(path: Path, days: float) -> Path:
    """The report as if `dbtflow parity` had made it `days` ago (its generated_at; the file time no longer counts)."""
    doc = json.loads(path.read_text())
    assert doc["generated_at"], "the real command dates its reports"
    doc["generated_at"] = iso_utc(datetime.now(UTC) - timedelta(days=days))
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda s, reports: reports.pop("prod").unlink(), "no parity report for target 'prod'"),
        (lambda s, reports: reports["dev"].write_text(s["fail"].read_text()), "the parity report for 'dev'"),
        (lambda s, reports: _age(reports["prod"], 8), "older than --max-parity-age 7.0 d"),
        (lambda s, reports: reports["prod"].write_text("{}"), "is not a `dbtflow parity --json-out` report"),
        (lambda s, reports: reports["prod"].write_text("{"), "is not JSON"),
    ],
    ids=["missing", "failing", "too-old", "not-a-report", "not-json"],
)
def test_cutover_refuses_without_a_passing_recent_parity_report_and_changes_nothing(
    site: Site, parity_json: dict[str, Path], damage: Any, message: str
) -> None:
    original = site.cloud.snapshot_jobs()
    damage(parity_json, site.reports)
    result = site.run(*site.cutover_args("--apply"))
    assert result.exit_code == 2, result.output
    line = one_line(result.stderr)
    assert line.startswith("error: ") and message in line, line
    if "fails" in line:
        assert "1 unexplained difference(s) (first: model.wg.stg status)" in line
    assert site.cloud.snapshot_jobs() == original and site.job_posts() == 0
    assert site.schedules() == {"prod": False, "dev": False}
    assert not site.journal_file.exists() and site.journal_in_prefect() is None


def test_a_parity_age_limit_is_honoured(site: Site) -> None:
    _age(site.reports["prod"], 2)
    assert site.run(*site.cutover_args("--plan", "--max-parity-age", "1d")).exit_code == 2
    result = site.run(*site.cutover_args("--plan", "--max-parity-age", "72h"))
    assert result.exit_code == 0, result.output
    assert "2.0 d old by its generated_at time" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--apply", "--schedule", "weekly", "--job", "1001"), "has no schedule 'weekly'"),
        (("--apply", "--schedule", "weekly"), "schedule(s) weekly carry no dbt_cloud_job_id in"),
        (("--apply", "--deployment", "run_dbt_wg/nope", "--schedule", "prod"), "not found on"),
        (("--apply", "--max-parity-age", "soon"), "--max-parity-age 'soon' is not an age"),
        (("--apply", "--job", "12x"), "--job '12x' is not a dbt Cloud id"),
        (("--apply", "--job", "99999"), "404 Not Found"),
        (("--apply", "--parity-report", "prod"), "is not TARGET=PATH"),
        ((), "pass --plan to see what cutover would do, or --apply to do it"),
    ],
)
def test_bad_input_and_missing_objects_are_one_line_exit_2(site: Site, args: tuple[str, ...], message: str) -> None:
    result = site.run(*site.cutover_args(*args))
    assert result.exit_code == 2, result.output
    assert message in one_line(result.stderr)
    assert site.job_posts() == 0 and site.schedules() == {"prod": False, "dev": False}


def test_a_job_edited_between_plan_and_write_is_refused_not_overwritten(site: Site) -> None:
    """`expect`: someone edits job 1002 after cutover read it; cutover stops and journals only job 1001."""
    from prefect import get_client

    from dbtflow.cloud._client import ApiToken
    from dbtflow.cutover._cutover import CutoverStopped, apply_cutover, open_journal, plan_cutover
    from dbtflow.cutover._gate import parse_age
    from dbtflow.cutover._journal import JournalStore
    from dbtflow.deploy._history import Actor
    from tests.fakes.dbtcloud_server import ADMIN_TOKEN

    with (
        get_client(sync_client=True) as prefect,
        DbtCloudClient(site.cloud.url, ApiToken(ADMIN_TOKEN, "t"), 1) as cloud,
    ):
        store = JournalStore(site.journal_file, site.journal_key, prefect)
        journal = open_journal(store, site.deployment, cloud)
        plan = plan_cutover(
            prefect, cloud, site.deployment, ["prod", "dev"], [1001, 1002], site.reports, parse_age("7d")
        )
        edited = site.cloud.apply_job_update(1002, {**site.cloud.jobs[1002], "description": "edited meanwhile"})
        with pytest.raises(CutoverStopped) as stopped:
            apply_cutover(plan, prefect, cloud, store, journal, Actor.current("test"), lambda line: None)
    assert stopped.value.exit_code == 2 and "changed in dbt Cloud since it was read" in str(stopped.value)
    assert site.cloud.jobs[1002] == edited and schedule_on(site, 1002)
    journal_doc = site.journal_on_disk()
    assert [e["object"]["job_id"] for e in journal_doc["entries"]] == [1001] and journal_doc["pending"] is None
    assert site.schedules() == {"prod": False, "dev": False}


def test_rollback_refuses_a_job_edited_since_cutover_unless_forced(site: Site) -> None:
    assert site.run(*site.cutover_args("--apply")).exit_code == 0
    job = site.cloud.jobs[1001]
    site.cloud.apply_job_update(1001, {**job, "triggers": {**job["triggers"], "github_webhook": True}})
    edited = site.cloud.job_snapshot(1001)

    result = site.run("rollback", "--deployment", site.deployment)
    assert result.exit_code == 2
    assert "dbt Cloud job 1001 'Prod daily build' was edited since cutover" in one_line(result.stderr)
    assert site.cloud.job_snapshot(1001) == edited and site.schedules() == {"prod": True, "dev": True}

    result = site.run("rollback", "--deployment", site.deployment, "--force")
    assert result.exit_code == 0, result.output
    triggers = json.loads(site.cloud.job_snapshot(1001))["triggers"]
    assert triggers == {"github_webhook": False, "schedule": True, "git_provider_webhook": False, "on_merge": False}


def test_a_schedule_active_before_cutover_stays_active_after_rollback(site: Site) -> None:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        dev = next(s for s in client.read_deployment_schedules(site.deployment_id) if s.slug == "dev")
        client.update_deployment_schedule(site.deployment_id, dev.id, active=True)
    assert site.run(*site.cutover_args("--apply")).exit_code == 0
    assert len(site.journal_on_disk()["entries"]) == 3  # dev was not changed, so not journaled
    assert site.run("rollback", "--deployment", site.deployment).exit_code == 0
    assert site.schedules() == {"prod": False, "dev": True}


def test_rollback_reads_the_journal_from_prefect_when_the_file_is_gone(site: Site) -> None:
    original = site.cloud.snapshot_jobs()
    assert site.run(*site.cutover_args("--apply")).exit_code == 0
    site.journal_file.unlink()
    result = site.run("rollback", "--deployment", site.deployment)
    assert result.exit_code == 0, result.output
    assert site.cloud.snapshot_jobs() == original and site.journal_on_disk() == site.journal_in_prefect()


def test_rollback_without_any_journal_is_one_line_exit_2(site: Site) -> None:
    result = site.run("rollback", "--deployment", site.deployment)
    assert result.exit_code == 2
    assert "no cutover journal at" in one_line(result.stderr)


def test_a_journal_save_that_fails_stops_cutover_before_the_next_change(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dbtflow.deploy import _prefect_docs as prefect_docs

    original, real_save, saves = site.cloud.snapshot_jobs(), prefect_docs.save, []

    def save(*args: Any, **kwargs: Any) -> None:
        saves.append(1)
        if len(saves) == 3:  # the pending record of the second job
            raise RuntimeError("Prefect API down")
        real_save(*args, **kwargs)

    monkeypatch.setattr(prefect_docs, "save", save)
    result = site.run(*site.cutover_args("--apply"))
    assert result.exit_code == 1, result.output
    assert "cannot write the cutover journal to Prefect" in one_line(result.stderr)
    assert not schedule_on(site, 1001) and schedule_on(site, 1002)  # the second change was never made
    assert site.journal_on_disk()["revision"] == 3 and site.journal_in_prefect()["revision"] == 2  # type: ignore[index]

    monkeypatch.setattr(prefect_docs, "save", real_save)
    result = site.run("rollback", "--deployment", site.deployment)  # the file is newer: it wins
    assert result.exit_code == 0, result.output
    assert site.cloud.snapshot_jobs() == original and site.journal_in_prefect() == site.journal_on_disk()


def test_a_stale_journal_file_loses_to_prefect_and_a_different_one_is_refused(site: Site) -> None:
    original = site.cloud.snapshot_jobs()
    assert site.run(*site.cutover_args("--apply")).exit_code == 0
    stale = site.journal_file.read_text()
    assert site.run("rollback", "--deployment", site.deployment).exit_code == 0
    site.journal_file.write_text(stale)  # e.g. a copy from before the rollback, on another machine
    result = site.run("rollback", "--deployment", site.deployment)
    assert result.exit_code == 0 and "nothing to roll back" in result.output
    assert site.cloud.snapshot_jobs() == original

    doc = json.loads(stale)
    doc["entries"] = doc["entries"][1:]
    site.journal_file.write_text(json.dumps(doc))
    result = site.run("rollback", "--deployment", site.deployment)
    assert result.exit_code == 2 and "disagree" in one_line(result.stderr)


def test_without_a_prefect_api_nothing_starts_and_nothing_changes(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL")
    with temporary_settings(updates={PREFECT_API_URL: None}):
        for args in (site.cutover_args("--apply"), ["rollback"]):
            result = site.run(*args)
            assert result.exit_code == 2 and "PREFECT_API_URL is not set" in one_line(result.stderr)
    assert site.job_posts() == 0
