"""`dbtflow cloud import-jobs`: schedule forms -> cron, job settings -> parameters, and the CLI end to end."""

from __future__ import annotations

import http.server
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from dbtflow import cli
from dbtflow.cloud._client import Job, JobSchedule
from dbtflow.cloud._import import (
    Untranslatable,
    check_cron,
    job_parameters,
    parse_target_map,
    same_schedule,
    schedule_to_cron,
    translate,
)
from dbtflow.errors import UserError
from tests.conftest import TENANT
from tests.fakes.dbtcloud_server import ADMIN_TOKEN, FakeDbtCloud

runner = CliRunner()


def schedule(date: dict[str, Any], time: dict[str, Any] | None = None, cron: str | None = None) -> JobSchedule:
    return JobSchedule.model_validate({"date": date, "time": time, "cron": cron})


EXACT_6 = {"type": "at_exact_hours", "hours": [6]}


@pytest.mark.parametrize(
    ("form", "cron"),
    [
        (schedule({"type": "every_day"}, EXACT_6, "0 6 * * *"), "0 6 * * *"),
        (schedule({"type": "every_day"}, {"type": "at_exact_hours", "hours": [18, 6, 6]}), "0 6,18 * * *"),
        (schedule({"type": "every_day"}, {"type": "every_hour", "interval": 1}), "0 * * * *"),
        (schedule({"type": "every_day"}, {"type": "every_hour", "interval": 6}), "0 */6 * * *"),
        (schedule({"type": "every_day"}, {"type": "every_hour"}), "0 * * * *"),
        (
            schedule({"type": "days_of_week", "days": [1, 2, 3, 4, 5]}, {"type": "at_exact_hours", "hours": [7, 13]}),
            "0 7,13 * * 1-5",
        ),
        (schedule({"type": "days_of_week", "days": [6, 7]}, {"type": "every_hour", "interval": 4}), "0 */4 * * 0,6"),
        (schedule({"type": "days_of_week", "days": [0, 1, 2, 3, 4, 5, 6]}, EXACT_6), "0 6 * * *"),
        (schedule({"type": "days_of_week", "days": [1, 3, 5]}, EXACT_6), "0 6 * * 1,3,5"),
        (schedule({"type": "custom_cron", "cron": "30 2 1 * *"}, {"type": "every_hour"}, "30 2 1 * *"), "30 2 1 * *"),
        (schedule({"type": "custom_cron"}, None, "0 7 L * 5"), "0 7 L * 5"),
        (schedule({"type": "interval_cron", "cron": "15  */2 * * 1-5"}), "15 */2 * * 1-5"),
        # the API's own cron, written differently but meaning the same: the form's cron, no note
        (schedule({"type": "days_of_week", "days": [1, 2, 3, 4, 5]}, EXACT_6, "0 6 * * 1,2,3,4,5"), "0 6 * * 1-5"),
    ],
)
def test_every_schedule_form_becomes_a_utc_cron(form: JobSchedule, cron: str) -> None:
    assert schedule_to_cron(form) == (cron, None)


def test_dbt_clouds_reported_cron_wins_when_it_means_something_else() -> None:
    form = schedule({"type": "every_day"}, {"type": "every_hour", "interval": 6}, "7 */6 * * *")
    cron, note = schedule_to_cron(form)
    assert cron == "7 */6 * * *" and note is not None and "7 */6 * * *" in note


@pytest.mark.parametrize(
    "form",
    [
        None,
        schedule({"type": "every_day"}, {"type": "at_exact_hours", "hours": [24]}),
        schedule({"type": "every_day"}, {"type": "at_exact_hours", "hours": []}),
        schedule({"type": "every_day"}, {"type": "every_hour", "interval": 0}),
        schedule({"type": "days_of_week", "days": []}, EXACT_6),
        schedule({"type": "days_of_week", "days": [8]}, EXACT_6),
        schedule({"type": "fortnightly"}, EXACT_6),
        schedule({"type": "every_day"}, {"type": "every_minute"}),
        schedule({"type": "custom_cron"}),
        schedule({"type": "custom_cron", "cron": "0 0 6 * * *"}),
        schedule({"type": "custom_cron", "cron": "H 6 * * *"}),
        schedule({"type": "custom_cron", "cron": "0 25 * * *"}),
    ],
)
def test_untranslatable_schedules_say_why(form: JobSchedule | None) -> None:
    with pytest.raises(Untranslatable) as exc:
        schedule_to_cron(form)
    assert exc.value.reason and "\n" not in exc.value.reason


def test_every_cron_we_accept_is_one_prefect_accepts() -> None:
    from prefect.client.schemas.schedules import CronSchedule

    accepted = [
        "0 6 * * *",
        "0 6,18 * * 1-5",
        "*/15 * * * *",
        "0 */4 * * 0,6",
        "30 2 1 * *",
        "0 7 L * 5",
        "0 6 * * 1#2",
        "0 6 * JAN-MAR MON-FRI",
        "5 4 * * sun",
        "0 0 1-15/2 * *",
        "0 6 * * 7",
    ]
    for expr in accepted:
        check_cron(expr)
        assert CronSchedule(cron=expr).cron == expr


def test_crons_that_fire_at_the_same_times_are_the_same_schedule() -> None:
    assert same_schedule("0 6 * * 1-5", "0 6 * * MON-FRI")
    assert same_schedule("0 */6 * * *", "0 0,6,12,18 * * *")
    assert not same_schedule("0 6 * * 1-5", "0 6 * * 1-6")
    assert not same_schedule("0 6 1 * *", "0 6 2 * *")


def test_parameters_from_job_settings() -> None:
    job = Job.from_api(
        {
            "id": 1,
            "account_id": 1,
            "project_id": 1,
            "environment_id": 1,
            "name": "x",
            "execute_steps": ["dbt seed", "  dbt build --select tag:daily", "run-operation grant_select"],
            "settings": {"threads": 8, "target_name": "prod"},
            "execution": {"timeout_seconds": 0},
            "generate_docs": True,
            "run_generate_sources": True,
        }
    )
    assert job_parameters(job, "prod") == {
        "target": "prod",
        "steps": ["seed", "build --select tag:daily", "run-operation grant_select"],
        "threads": 8,
        "generate_docs": True,
        "source_freshness": True,
    }
    job.execution.timeout_seconds = 900
    assert job_parameters(job, "prod")["timeout_seconds"] == 900
    job.execute_steps = []
    with pytest.raises(Untranslatable, match="no steps"):
        job_parameters(job, "prod")


def test_target_map_syntax() -> None:
    assert parse_target_map(["Production=prod", " 101 = dev "]) == {"Production": "prod", "101": "dev"}
    for bad in ("Production", "=prod", "Production="):
        with pytest.raises(UserError, match="ENVIRONMENT=TARGET"):
            parse_target_map([bad])


def test_slugs_are_unique_and_stable(dbt_cloud: FakeDbtCloud) -> None:
    jobs = [Job.from_api(dbt_cloud.render_job(dbt_cloud.jobs[i])) for i in (1001, 1002)]
    jobs[1].name = jobs[0].name
    result = translate(jobs, {})
    assert [e.slug for e in result.entries] == ["prod-daily-build", "prod-daily-build-1002"]


# -- the command, against the fake server --------------------------------------------------------

DAILY = {"target": "prod", "steps": ["seed", "build --select tag:daily"], "threads": 8, "generate_docs": True,
         "source_freshness": True, "timeout_seconds": 3600}  # fmt: skip
EXPOSURES = {"target": "prod", "steps": ["build --select tag:weekly"], "threads": 4, "generate_docs": False,
             "source_freshness": False}  # fmt: skip
CI = {"target": "dev", "steps": ["build --select state:modified+"], "threads": 4, "generate_docs": False,
      "source_freshness": False, "state": "latest-success:prod", "defer": True,
      "vars": {"dbtflow_pr_schema": "dbt_cloud_pr_1008_manual"}}  # fmt: skip
MERGE = {"target": "prod", "steps": ["build --select state:modified+"], "threads": 4, "generate_docs": False,
         "source_freshness": False, "state": "latest-success:prod", "defer": True}  # fmt: skip
EXPECTED = [
    ("prod-hourly-sales", "0 * * * *", 1002,
     {"target": "prod", "steps": ["run --select tag:sales"], "threads": 4, "generate_docs": False,
      "source_freshness": False}),
    ("finance-weekdays", "0 7,13 * * 1-5", 1003,
     {"target": "prod", "steps": ["build --selector finance"], "threads": 6, "generate_docs": False,
      "source_freshness": False}),
    ("weekend-refresh", "0 */4 * * 0,6", 1004,
     {"target": "prod", "steps": ["build --select tag:core"], "threads": 4, "generate_docs": False,
      "source_freshness": False}),
    ("monthly-full-refresh", "30 2 1 * *", 1005,
     {"target": "prod", "steps": ["build --select tag:weekly --full-refresh"], "threads": 4, "generate_docs": False,
      "source_freshness": False, "timeout_seconds": 7200}),
    ("snapshots-every-other-hour", "15 */2 * * 1-5", 1006,
     {"target": "prod", "steps": ["snapshot"], "threads": 4, "generate_docs": False, "source_freshness": False}),
    ("staging-nightly", "0 1 * * *", 1007,
     {"target": "dev", "steps": ["build"], "threads": 4, "generate_docs": False, "source_freshness": False}),
    ("weekly-reporting-deferred", "0 8 * * 1", 1013,
     {"target": "prod", "steps": ["build --select tag:weekly"], "threads": 4, "generate_docs": False,
      "source_freshness": False}),
    ("prod-six-hourly-freshness", "0 */6 * * *", 1017,
     {"target": "prod", "steps": ["source freshness"], "threads": 4, "generate_docs": False,
      "source_freshness": False}),
]  # fmt: skip
NOT_IMPORTED = {
    1011: "state:/result: or defer",
    1012: "not scheduled",
    1014: "'sl' is not an allowed dbt command",
    1016: "--target is not allowed in a step",
}


def invoke(fake: FakeDbtCloud, *args: str, token: str = ADMIN_TOKEN) -> Any:
    env = {"DBT_CLOUD_API_TOKEN": token, "DBT_CLOUD_ACCOUNT_ID": None, "DBT_CLOUD_HOST": None}
    return runner.invoke(cli.app, ["cloud", "import-jobs", "--base-url", fake.url, *args], env=env)


def test_import_jobs_writes_the_schedules_file(dbt_cloud: FakeDbtCloud, tmp_path: Path) -> None:
    output = tmp_path / "deploy" / "schedules.yaml"
    result = invoke(
        dbt_cloud,
        "--account", "1", "--project", "10",
        "--target-map", "Production=prod", "--target-map", "101=dev",
        "--project-dir", str(TENANT), "--output", str(output),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = output.read_text()
    host = dbt_cloud.url.removeprefix("http://")
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert re.match(rf"# generated by dbtflow cloud import-jobs from {re.escape(host)} account 1 at {stamp}\n", text)
    doc = yaml.safe_load(text)
    assert doc["deployment"] == "run_dbt_wg/dbt_wg"
    assert doc["schedules"] == [
        {
            "slug": slug,
            "cron": cron,
            "timezone": "UTC",
            "active": False,
            "parameters": params,
            "dbt_cloud_job_id": job_id,
        }
        for slug, cron, job_id, params in EXPECTED
    ]
    lines = result.output.splitlines()
    for job_id, why in NOT_IMPORTED.items():
        (line,) = [x for x in lines if x.startswith(f"  job {job_id} ")]
        assert why in line and "; instead: " in line, line
        assert f"#   job {job_id} " in text
    for job_id, note in (
        (1003, "target.name is 'prod' in dbtflow, 'default' in dbt Cloud"),
        (1007, "runs branch 'release'"),
        (1013, "defers to job 1001"),
        (1013, "pins dbt 1.7.0-latest"),
        (1013, "failed its last 3 run(s)"),
        (1013, "run_lint"),
        (1013, "lifecycle webhooks"),
    ):
        assert any(x.startswith(f"  job {job_id} ") and note in x for x in lines), note
    assert "imported 8 schedule(s)" in result.output and "not validated" not in result.output
    assert 1015 not in {e["dbt_cloud_job_id"] for e in doc["schedules"]}  # deleted jobs are not listed
    # job 1010 runs when 1001 succeeds: both are deployments of their own, 1010's with Prefect's trigger
    chained = yaml.safe_load((output.parent / "prefect.yaml").read_text())["deployments"]
    assert [(d["name"], d["tags"], d["parameters"]) for d in chained] == [
        ("prod-daily-build", ["dbt-cloud-job-1001"], DAILY),
        ("ci-check", ["dbt-cloud-job-1008", "dbt-cloud-ci"], CI),
        ("merge-deploy", ["dbt-cloud-job-1009", "dbt-cloud-merge"], MERGE),
        ("exposures-after-daily", ["dbt-cloud-job-1010"], EXPOSURES),
    ]
    chained = [d for d in chained if d["name"] not in ("ci-check", "merge-deploy")]  # tests/cloud/test_ci_jobs.py
    assert chained[0]["schedules"][0]["cron"] == "0 6 * * *" and "triggers" not in chained[0]
    assert chained[1]["schedules"] == []
    (trigger,) = chained[1]["triggers"]
    assert trigger["expect"] == ["prefect.flow-run.Completed"] and trigger["enabled"] is False
    assert {"prefect.resource.role": "deployment", "prefect.resource.name": "prod-daily-build"} in trigger[
        "match_related"
    ]
    assert chained[1]["entrypoint"] == "flows/dbt_wg_flow.py:run_dbt_wg"
    assert any(
        x.startswith("  job 1010 -> deployment exposures-after-daily: when job 1001 ends in success") for x in lines
    )


def test_import_without_a_project_writes_unvalidated_entries(dbt_cloud: FakeDbtCloud) -> None:
    result = invoke(dbt_cloud, "--account", "1", "--job", "1014", "--job", "1003,1016", "-o", "-")
    assert result.exit_code == 0, result.output
    doc = yaml.safe_load(result.stdout)
    assert [s["dbt_cloud_job_id"] for s in doc["schedules"]] == [1003, 1014, 1016]
    assert doc["schedules"][0]["parameters"]["target"] == "default"  # no --target-map: target_name as is
    assert "not validated against a dbt project" in result.stderr


def test_import_by_environment(dbt_cloud: FakeDbtCloud, tmp_path: Path) -> None:
    result = invoke(
        dbt_cloud, "--account", "1", "--environment", "101", "--target-map", "staging=dev",
        "--target-map", "Production=prod", "-o", "-", "--deployments-output", str(tmp_path / "prefect.yaml"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [s["dbt_cloud_job_id"] for s in yaml.safe_load(result.stdout)["schedules"]] == [1007]
    assert "  job 1008 -> deployment ci-check: on pull requests" in result.stderr


def test_import_pages_through_a_big_project(dbt_cloud: FakeDbtCloud) -> None:
    result = invoke(dbt_cloud, "--account", "1", "--project", "20", "-o", "-")
    assert result.exit_code == 0, result.output
    schedules = yaml.safe_load(result.stdout)["schedules"]
    assert len(schedules) == 120 and len({s["slug"] for s in schedules}) == 120
    assert {s["cron"] for s in schedules} == {"0 3 * * *", "0 */2 * * 1,3,5", "45 23 * * 0"}


def test_an_active_schedules_file_is_not_overwritten(dbt_cloud: FakeDbtCloud, tmp_path: Path) -> None:
    output = tmp_path / "schedules.yaml"
    output.write_text("deployment: run_dbt_wg/dbt_wg\nschedules:\n  - {slug: prod, cron: '0 6 * * *', active: true}\n")
    result = invoke(dbt_cloud, "--account", "1", "--job", "1001", "--output", str(output))
    assert result.exit_code == 2 and "active schedules (prod)" in result.stderr
    assert "active: true" in output.read_text()
    result = invoke(dbt_cloud, "--account", "1", "--job", "1001", "--output", str(output), "--force")
    assert result.exit_code == 0 and yaml.safe_load(output.read_text())["schedules"][0]["active"] is False


def test_strict_exits_1_when_something_was_not_imported(dbt_cloud: FakeDbtCloud) -> None:
    assert invoke(dbt_cloud, "--account", "1", "--job", "1001", "-o", "-", "--strict").exit_code == 0
    assert invoke(dbt_cloud, "--account", "1", "--job", "1012", "-o", "-", "--strict").exit_code == 1


@pytest.mark.parametrize(
    ("args", "token", "expected"),
    [
        (["--account", "abc"], ADMIN_TOKEN, "--account 'abc' is not a dbt Cloud id"),
        ([], ADMIN_TOKEN, "--account is required"),
        (["--account", "1", "--job", "x1"], ADMIN_TOKEN, "--job 'x1' is not a dbt Cloud id"),
        (["--account", "1", "--target-map", "Production"], ADMIN_TOKEN, "ENVIRONMENT=TARGET"),
        (["--account", "1", "--target-map", "Prodution=prod"], ADMIN_TOKEN, "names environment 'Prodution'"),
        (["--account", "1", "--project-dir", "/nonexistent"], ADMIN_TOKEN, "dbt_project.yml"),
        (["--account", "1"], "dbtc_not_a_valid_token_123", "rejected the API token"),
        (["--account", "1", "--job", "999"], ADMIN_TOKEN, "404 Not Found"),
        (["--account", "2"], ADMIN_TOKEN, "403 Forbidden"),
        (["--account", "1"], "", "no dbt Cloud API token"),
        (["--account", "1", "--foo"], ADMIN_TOKEN, "No such option '--foo'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(dbt_cloud: FakeDbtCloud, args: list[str], token: str, expected: str) -> None:
    result = invoke(dbt_cloud, *args, "-o", "-", token=token)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.output and (not token or token not in result.output)


def test_a_bad_base_url_is_one_line_and_exit_2(dbt_cloud: FakeDbtCloud) -> None:
    result = runner.invoke(
        cli.app,
        ["cloud", "import-jobs", "--account", "1", "--base-url", "http://cloud.getdbt.com"],
        env={"DBT_CLOUD_API_TOKEN": ADMIN_TOKEN},
    )
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "needs https" in result.stderr


def test_dbt_cloud_down_is_one_line_and_exit_1(dbt_cloud: FakeDbtCloud, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("dbtflow.cloud._client.time.sleep", sleeps.append)
    dbt_cloud.fail(503, times=None)
    result = invoke(dbt_cloud, "--account", "1", "-o", "-")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
    assert "failed 5 times" in result.stderr and "503" in result.stderr
    assert len(sleeps) == 4 and sum(sleeps) < 1.1 * (1 + 2 + 4 + 8)


def _break_job(fake: FakeDbtCloud, how: str) -> None:
    job = fake.jobs[1001]
    if how == "execute_steps-null":
        job["execute_steps"] = None
    elif how == "no-name":
        del job["name"]


@pytest.mark.parametrize("how", ["execute_steps-null", "no-name"])
def test_malformed_api_objects_are_one_line_never_a_traceback(dbt_cloud: FakeDbtCloud, how: str) -> None:
    _break_job(dbt_cloud, how)

    result = invoke(dbt_cloud, "--account", "1", "--project", "10", "-o", "-")

    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    if how == "execute_steps-null":  # null is read as "no steps": the job is reported, not imported
        assert result.exit_code == 0, result.output
        assert "job 1001 " in result.stderr and 1001 not in {
            s["dbt_cloud_job_id"] for s in yaml.safe_load(result.stdout)["schedules"]
        }
        return
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: dbt Cloud at "), result.stderr
    assert "dbtflow cannot read" in result.stderr and result.stdout == ""


class _Canned(http.server.BaseHTTPRequestHandler):
    """A dbt Cloud look-alike whose `jobs/` and `environments/` answers are what the test put there."""

    jobs_data: Any = None
    environments_data: Any = ()

    def do_GET(self) -> None:
        data = self.jobs_data if "/jobs/" in self.path else list(self.environments_data)
        body = json.dumps({"status": {"code": 200}, "data": data, "extra": {"pagination": {"total_count": 1}}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


JOB = {"id": 1001, "account_id": 1, "project_id": 10, "environment_id": 100, "name": "Daily"}


@pytest.mark.parametrize(
    ("jobs", "environments", "expected"),
    [
        ({"id": 1, "name": "an object, not a list"}, [], "`data` is not a list of objects"),
        (["a string, not a job"], [], "`data` is not a list of objects"),
        ([{**JOB, "id": "abc"}], [], "object id 'abc': id: Input should be a valid integer"),
        ([JOB], [{"id": "x", "project_id": 10, "name": "Production"}], "object id 'x': id: Input should be"),
    ],
)
def test_api_data_of_the_wrong_shape_is_one_line(jobs: Any, environments: Any, expected: str) -> None:
    handler = type("Canned", (_Canned,), {"jobs_data": jobs, "environments_data": environments})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = runner.invoke(
            cli.app,
            ["cloud", "import-jobs", "--base-url", f"http://127.0.0.1:{server.server_address[1]}", "--account", "1"],
            env={"DBT_CLOUD_API_TOKEN": ADMIN_TOKEN},
        )
    finally:
        server.shutdown()
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and "dbtflow cannot read" in result.stderr, result.stderr
    assert expected in result.stderr and "Traceback" not in result.output


def test_output_to_a_folder_or_a_read_only_place_is_one_line(dbt_cloud: FakeDbtCloud, tmp_path: Path) -> None:
    result = invoke(dbt_cloud, "--account", "1", "--job", "1001", "--output", str(tmp_path))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert f"--output {tmp_path} is a folder" in result.stderr

    result = invoke(dbt_cloud, "--account", "1", "--job", "1001", "--output", "/proc/dbtflow/schedules.yaml")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "cannot write /proc/dbtflow/schedules.yaml" in result.stderr and "Traceback" not in result.output


def test_an_unparseable_schedules_file_is_not_overwritten_without_force(
    dbt_cloud: FakeDbtCloud, tmp_path: Path
) -> None:
    output = tmp_path / "schedules.yaml"
    hand_edited = "deployment: run_dbt_wg/dbt_wg\nschedules:\n  - {slug: prod, cron: '0 6 * * *', active: true\n"
    output.write_text(hand_edited)

    result = invoke(dbt_cloud, "--account", "1", "--job", "1001", "--output", str(output))

    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert f"{output} exists but is not valid YAML" in result.stderr and "--force" in result.stderr
    assert output.read_text() == hand_edited
    forced = invoke(dbt_cloud, "--account", "1", "--job", "1001", "--output", str(output), "--force")
    assert forced.exit_code == 0 and yaml.safe_load(output.read_text())["schedules"][0]["dbt_cloud_job_id"] == 1001


def test_import_jobs_refuses_a_job_whose_selection_matches_no_node(dbt_cloud: FakeDbtCloud, tmp_path: Path) -> None:
    """Issue 19 item 11: dbt runs a typo'd --select green ("nothing to do"); checked against the project, refused."""
    output = tmp_path / "schedules.yaml"
    args = ["--account", "1", "--job", "1001", "--job", "1002", "--target-map", "Production=prod"]
    args += ["--project-dir", str(TENANT), "--output", str(output)]
    dbt_cloud.jobs[1002]["execute_steps"] = ["dbt run --select tag:slaes"]

    refused = invoke(dbt_cloud, *args)

    assert refused.exit_code == 2, refused.output
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error: job 1002 'Prod hourly sales': step `run --select tag:slaes"), line
    assert "selects no node" in line, line
    assert not output.exists() and list(tmp_path.iterdir()) == [], "nothing may be written"

    dbt_cloud.jobs[1002]["execute_steps"] = ["dbt run --select tag:sales"]
    imported = invoke(dbt_cloud, *args)

    assert imported.exit_code == 0, imported.output
    assert [s["dbt_cloud_job_id"] for s in yaml.safe_load(output.read_text())["schedules"]] == [1001, 1002]
