"""Cutover/rollback fixtures: the fake dbt Cloud API, a deployment on the session's Prefect server, parity reports.

- `site`: a fresh deployment `run_dbt_wg/cut_<hex>` (dev and prod schedules, both paused, as
  `cloud import-jobs` leaves them), a schedules file naming dbt Cloud jobs 1001 (prod) and 1002 (dev)
  (1001 without its chained child 1010, whose cutover has tests of its own),
  passing parity reports for both targets, the token in the environment, the working directory a
  tmp folder (so the default journal file lands there) and `site.run(...)` for the CLI.
- `parity_json`: real `dbtflow parity --json-out` reports, one passing and one failing (built once).
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result
from typer.testing import CliRunner

from dbtflow.cli import _cutover as cli_cutover
from dbtflow.cli import app
from dbtflow.deploy import _prefect_docs as prefect_docs
from tests.fakes.dbtcloud_fixture import dbt_cloud  # noqa: F401
from tests.fakes.dbtcloud_server import ADMIN_TOKEN, FakeDbtCloud
from tests.parity.builders import manifest, node, run_results, write_step

FLOW = "run_dbt_wg"
PARAMS = ("command", "target", "selector", "select", "steps", "threads", "source_freshness", "generate_docs")
SCHEMA = {
    "title": "Parameters",
    "type": "object",
    "properties": {p: {"title": p, "position": i} for i, p in enumerate(PARAMS)},
}
PULL = [
    {
        "prefect.deployments.steps.git_clone": {
            "id": "clone",
            "repository": "https://example.com/wg/dbtflow.git",
            "branch": "main",
        }
    },
    {
        "prefect.deployments.steps.run_shell_script": {
            "directory": "{{ clone.directory }}",
            "script": "uv pip install -r requirements-prefect.txt",
        }
    },
]
SCHEDULES = [
    {"slug": "prod", "cron": "0 6 * * 1-5", "timezone": "UTC", "active": False,
     "parameters": {"target": "prod", "source_freshness": True, "generate_docs": True}, "dbt_cloud_job_id": 1001},
    {"slug": "dev", "cron": "0 5 * * *", "timezone": "UTC", "active": False,
     "parameters": {"target": "dev", "selector": "daily"}, "dbt_cloud_job_id": 1002},
]  # fmt: skip


@pytest.fixture(scope="session")
def parity_json(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"pass": report.json, "fail": report.json} written by the real `dbtflow parity`."""
    root = tmp_path_factory.mktemp("parity")
    nodes = [node("seed.wg.brands"), node("model.wg.stg", depends_on=("seed.wg.brands",))]
    ok = [("seed.wg.brands", "success"), ("model.wg.stg", "success")]
    broken = [("seed.wg.brands", "success"), ("model.wg.stg", "error")]
    cloud = write_step(root / "cloud", manifest(nodes), run_results(ok))
    reports = {}
    for name, results in (("pass", ok), ("fail", broken)):
        prefect = write_step(root / f"prefect-{name}", manifest(nodes), run_results(results))
        out = root / f"{name}.json"
        args = ["parity", "--no-publish", "--cloud-artifacts", str(cloud), "--prefect-artifacts", str(prefect)]
        result = CliRunner().invoke(app, [*args, "--json-out", str(out)])
        assert result.exit_code == (0 if name == "pass" else 1), result.output
        reports[name] = out
    return reports


@dataclass
class Site:
    cloud: FakeDbtCloud
    api_url: str
    deployment: str
    deployment_id: uuid.UUID
    folder: Path
    schedules_file: Path
    reports: dict[str, Path]

    @property
    def short(self) -> str:
        return self.deployment.split("/")[1]

    @property
    def journal_file(self) -> Path:
        return self.folder / ".dbtflow" / "cutover" / f"{self.short}.journal.json"

    @property
    def journal_key(self) -> str:
        return prefect_docs.artifact_key("dbtflow-cutover-journal", self.short)

    def cutover_args(self, *extra: str) -> list[str]:
        args = ["cutover", "--schedules-file", str(self.schedules_file), "--account", "1", "--base-url", self.cloud.url]
        for target, path in self.reports.items():
            args += ["--parity-report", f"{target}={path}"]
        return [*args, *extra]

    def run(self, *args: str) -> Result:
        return CliRunner().invoke(app, list(args), env={"DBT_CLOUD_API_TOKEN": ADMIN_TOKEN})

    def schedules(self) -> dict[str, bool]:
        return {slug: bool(s.active) for slug, s in self._schedules().items()}

    def schedule_parameters(self) -> dict[str, dict[str, Any]]:
        """What each schedule runs with (a schedule activated without them would run the deployment's defaults)."""
        return {slug: dict(s.parameters) for slug, s in self._schedules().items()}

    def _schedules(self) -> dict[str, Any]:
        from prefect import get_client

        with get_client(sync_client=True) as client:
            return {s.slug or "": s for s in client.read_deployment_schedules(self.deployment_id)}

    def journal_in_prefect(self) -> dict[str, Any] | None:
        from prefect import get_client

        with get_client(sync_client=True) as client:
            return prefect_docs.load(client, self.journal_key)

    def journal_on_disk(self) -> dict[str, Any]:
        return dict(json.loads(self.journal_file.read_text()))

    def job_posts(self) -> int:
        return len(self.cloud.requests_to("POST", r"/jobs/\d+/$"))


def create_deployment(name: str, schedules: list[dict[str, Any]]) -> uuid.UUID:
    from prefect import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule

    creates = [
        DeploymentScheduleCreate(
            schedule=CronSchedule(cron=s["cron"], timezone=s["timezone"]),
            active=s["active"],
            parameters=s["parameters"],
            slug=s["slug"],
        )
        for s in schedules
    ]
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(FLOW)
        return client.create_deployment(
            flow_id,
            name.split("/")[1],
            entrypoint="flows/dbt_wg_flow.py:run_dbt_wg",
            parameters={"command": "build", "target": "dev"},
            parameter_openapi_schema=SCHEMA,
            pull_steps=PULL,
            schedules=creates,
        )


@pytest.fixture
def site(
    prefect_api: str,
    dbt_cloud: FakeDbtCloud,  # noqa: F811
    parity_json: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Site]:
    name = f"{FLOW}/cut_{uuid.uuid4().hex[:8]}"
    # job 1010 runs when 1001 succeeds; the chain's own cutover is tested in test_chain_cutover.py
    dbt_cloud.jobs[1010]["job_completion_trigger_condition"] = None
    deployment_id = create_deployment(name, SCHEDULES)
    file = tmp_path / "schedules.yaml"
    file.write_text(yaml.safe_dump({"deployment": name, "schedules": SCHEDULES}, sort_keys=False))
    reports = {}
    for target in ("prod", "dev"):
        reports[target] = tmp_path / f"parity-{target}.json"
        shutil.copy(parity_json["pass"], reports[target])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_cutover, "CLIENT_OPTIONS", {"backoff": 0.01, "max_backoff": 0.02, "timeout": 10.0})
    yield Site(dbt_cloud, prefect_api, name, deployment_id, tmp_path, file, reports)
