"""Cutover of CI and merge jobs: their git webhooks and `on_merge` go off in dbt Cloud with the schedule,
journaled, and rollback puts back exactly what was on (fake dbt Cloud API, real Prefect server)."""

from __future__ import annotations

import json

import pytest

from tests.cutover.conftest import Site
from tests.fakes.dbtcloud_server import JOB_UPDATE

pytestmark = pytest.mark.timeout(300)
CI, MERGE = 1008, 1009  # CI: github_webhook + git_provider_webhook on; merge: on_merge on (fixtures)


def triggers(site: Site, job_id: int) -> dict[str, bool]:
    return dict(json.loads(site.cloud.job_snapshot(job_id))["triggers"])


def test_cutover_switches_the_webhooks_and_on_merge_off_and_rollback_restores_them(site: Site) -> None:
    original = site.cloud.snapshot_jobs()
    assert triggers(site, CI) == {
        "github_webhook": True,
        "schedule": False,
        "git_provider_webhook": True,
        "on_merge": False,
    }
    assert triggers(site, MERGE)["on_merge"] is True
    args = site.cutover_args("--job", str(CI), "--job", str(MERGE))

    plan = site.run(*args, "--plan")
    assert plan.exit_code == 0, plan.output
    assert (
        f"~ dbt Cloud job {CI} 'CI check': triggers.github_webhook true -> false, "
        "triggers.git_provider_webhook true -> false"
    ) in plan.output
    assert f"~ dbt Cloud job {MERGE} 'Merge deploy': triggers.on_merge true -> false" in plan.output
    assert "stay on" not in plan.output and site.job_posts() == 0

    result = site.run(*args, "--apply")
    assert result.exit_code == 0, result.output
    assert "cutover done: 4 change(s)" in result.output
    for job_id in (CI, MERGE):
        assert not any(triggers(site, job_id).values()), triggers(site, job_id)
        before, after = json.loads(original[job_id]), json.loads(site.cloud.job_snapshot(job_id))
        assert {k for k in before if before[k] != after[k]} == {"triggers"}  # nothing else touched
    assert {k: v for k, v in site.cloud.snapshot_jobs().items() if k not in (CI, MERGE)} == {
        k: v for k, v in original.items() if k not in (CI, MERGE)
    }
    entries = site.journal_on_disk()["entries"]
    assert site.journal_in_prefect() == site.journal_on_disk()
    ci = next(e for e in entries if e["object"].get("job_id") == CI)
    assert ci["field"] == "triggers" and ci["before"] == json.loads(original[CI])["triggers"]
    assert ci["after"] == dict.fromkeys(ci["before"], False)

    again = site.run(*args, "--apply")
    assert again.exit_code == 0 and "nothing to do: already cut over" in again.output, again.output

    result = site.run("rollback", "--deployment", site.deployment)
    assert result.exit_code == 0, result.output
    assert site.cloud.snapshot_jobs() == original  # byte for byte: what was on is on, what was off is off
    assert site.schedules() == {"prod": False, "dev": False}


def test_rollback_plan_names_each_trigger_it_turns_back_on(site: Site) -> None:
    assert site.run(*site.cutover_args("--job", str(CI), "--apply")).exit_code == 0
    plan = site.run("rollback", "--deployment", site.deployment, "--plan")
    assert plan.exit_code == 0, plan.output
    line = next(line for line in plan.output.splitlines() if f"dbt Cloud job {CI}" in line)
    assert "triggers.github_webhook false -> true" in line and "triggers.git_provider_webhook false -> true" in line
    assert "on_merge" not in line and "schedule" not in line  # off before cutover: stays off


def test_a_500_on_the_second_job_update_leaves_no_job_half_updated(site: Site) -> None:
    original = site.cloud.snapshot_jobs()
    site.cloud.fail(500, times=None, after=1, method="POST", path=JOB_UPDATE)

    result = site.run(*site.cutover_args("--job", str(CI), "--job", str(MERGE), "--apply"))
    assert result.exit_code == 1, result.output
    assert "cutover stopped after 1 of 4 change(s)" in result.stderr
    assert not any(triggers(site, CI).values())  # the first job: every trigger off in one write
    assert site.cloud.job_snapshot(MERGE) == original[MERGE]  # the second: untouched, on_merge still on
    assert site.schedules() == {"prod": False, "dev": False}
    journal = site.journal_on_disk()
    assert [e["object"]["job_id"] for e in journal["entries"]] == [CI]
    assert journal["pending"]["object"]["job_id"] == MERGE

    site.cloud.clear_faults()
    result = site.run("rollback", "--deployment", site.deployment)
    assert result.exit_code == 0, result.output
    assert "had not happened: dropped" in result.output
    assert site.cloud.snapshot_jobs() == original


def test_a_lost_response_on_a_ci_job_is_found_done_and_rolled_back(site: Site) -> None:
    original = site.cloud.snapshot_jobs()
    site.cloud.inject(status=500, times=None, method="POST", path=JOB_UPDATE, apply=True)
    result = site.run(*site.cutover_args("--job", str(CI), "--apply"))
    assert result.exit_code == 1, result.output
    assert not any(triggers(site, CI).values()) and site.journal_on_disk()["pending"]["object"]["job_id"] == CI

    site.cloud.clear_faults()
    result = site.run("rollback", "--deployment", site.deployment)
    assert result.exit_code == 0, result.output
    assert "had happened: journaled" in result.output
    assert site.cloud.snapshot_jobs() == original
