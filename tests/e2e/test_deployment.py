"""The deployment `dbt_wg` on a real Prefect server with a real process worker (`make deploy-local`)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from dbtflow.run._slot import slot_name_of
from tests.conftest import BIN, REPO
from tests.e2e.conftest import DEPLOYMENT, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SMALL = "+stg_distributors"  # a seed, a model and their tests: a quick real build


def _declared() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load((REPO / "prefect.yaml").read_text())
    return {s["slug"]: s for s in doc["deployments"][0]["schedules"]}


def _schedules(stack: Stack) -> dict[str, dict[str, Any]]:
    return {s["slug"]: s for s in stack.get(f"/deployments/{stack.deployment()['id']}/schedules")}


def _wait_final(stack: Stack, flow_run_ids: list[str], timeout: float = 600) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        runs = [stack.get(f"/flow_runs/{i}") for i in flow_run_ids]
        if all(r["state"] and r["state"]["type"] in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED") for r in runs):
            return runs
        if time.monotonic() > deadline:
            raise AssertionError(f"runs not final after {timeout} s: {[r['state'] for r in runs]}")
        time.sleep(2)


def _task_runs(stack: Stack, flow_run_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while True:
        page = stack.post(
            "/task_runs/filter",
            {"flow_runs": {"id": {"any_": [flow_run_id]}}, "limit": 200, "offset": len(found)},
        )
        found += page
        if len(page) < 200:
            return found


def _dbt_span(stack: Stack, flow_run_id: str) -> tuple[datetime, datetime]:
    """When dbt ran its nodes in this run: from its own per-node timings in run_results.json."""
    results = json.loads(next(stack.run_folder(flow_run_id).glob("*-build/run_results.json")).read_text())
    times = [t for r in results["results"] for t in r["timing"] if t["started_at"]]
    start = min(datetime.fromisoformat(t["started_at"].replace("Z", "+00:00")) for t in times)
    end = max(datetime.fromisoformat(t["completed_at"].replace("Z", "+00:00")) for t in times)
    return start, end


def test_the_deployment_has_its_defaults_and_exactly_the_two_schedules(stack: Stack) -> None:
    deployment = stack.deployment()
    assert deployment["entrypoint"] == "flows/dbt_wg_flow.py:run_dbt_wg"
    assert deployment["parameters"] == {"command": "build", "target": "dev"}
    assert deployment["work_pool_name"] == "local-process"
    steps = [next(iter(s)) for s in deployment["pull_steps"]]
    assert steps == ["prefect.deployments.steps.git_clone", "prefect.deployments.steps.run_shell_script"]
    install = deployment["pull_steps"][1]["prefect.deployments.steps.run_shell_script"]
    assert install["script"] == "uv pip install --quiet -r requirements-prefect.txt"

    schedules = _schedules(stack)
    assert set(schedules) == {"dev", "prod"}
    for slug, declared in _declared().items():
        assert schedules[slug]["schedule"]["cron"] == declared["cron"]
        assert schedules[slug]["schedule"]["timezone"] == "UTC"
        assert schedules[slug]["active"] is declared["active"]
        assert schedules[slug]["parameters"] == declared["parameters"]
    assert schedules["prod"]["parameters"]["target"] == "prod"


def test_schedules_apply_is_exact_idempotent_and_dry_run_changes_nothing(stack: Stack, tmp_path: Path) -> None:
    again = stack.cli(str(BIN / "dbtflow"), "schedules", "apply", "prefect.yaml")
    assert "schedules already match" in again.stdout

    changed = {
        "deployment": DEPLOYMENT,
        "schedules": [
            {**_declared()["prod"], "cron": "30 7 * * 1-5"},
            {"slug": "weekly", "cron": "0 8 * * 0", "parameters": {"target": "prod", "selector": "weekly"}},
        ],
    }
    file = tmp_path / "schedules.yaml"
    file.write_text(yaml.safe_dump(changed))
    before = _schedules(stack)
    dry = stack.cli(str(BIN / "dbtflow"), "schedules", "apply", str(file), "--dry-run")
    assert "~ prod: cron '0 6 * * 1-5' -> '30 7 * * 1-5'" in dry.stdout
    assert "+ weekly" in dry.stdout and "- dev" in dry.stdout
    assert _schedules(stack) == before

    stack.cli(str(BIN / "dbtflow"), "schedules", "apply", str(file))
    now = _schedules(stack)
    assert set(now) == {"prod", "weekly"} and now["prod"]["schedule"]["cron"] == "30 7 * * 1-5"
    assert now["weekly"]["parameters"] == {"target": "prod", "selector": "weekly"}

    stack.cli(str(BIN / "dbtflow"), "schedules", "apply", "prefect.yaml")
    restored = _schedules(stack)
    assert {k: (v["schedule"], v["active"], v["parameters"]) for k, v in restored.items()} == {
        k: (before[k]["schedule"], before[k]["active"], before[k]["parameters"]) for k in before
    }
    assert "schedules already match" in stack.cli(str(BIN / "dbtflow"), "schedules", "apply", "prefect.yaml").stdout


def test_a_bad_schedule_is_refused_before_anything_changes(stack: Stack, tmp_path: Path) -> None:
    file = tmp_path / "schedules.yaml"
    file.write_text(
        yaml.safe_dump(
            {
                "deployment": DEPLOYMENT,
                "schedules": [
                    {"slug": "dev", "cron": "0 5 * * *", "parameters": {"target": "dev"}},
                    {"slug": "prod", "cron": "0 6 * * *", "parameters": {"targte": "prod"}},
                ],
            }
        )
    )
    before = _schedules(stack)
    done = stack.cli(str(BIN / "dbtflow"), "schedules", "apply", str(file), check=False)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: schedule 'prod' sets unknown parameter 'targte'")
    assert len(done.stderr.strip().splitlines()) == 1
    assert _schedules(stack) == before


def test_a_scheduled_run_merges_its_schedule_parameters_and_builds_on_the_worker(stack: Stack, tmp_path: Path) -> None:
    declared = list(_declared().values())
    soon = {"slug": "every-minute", "cron": "* * * * *", "parameters": {"target": "local"}}
    file = tmp_path / "schedules.yaml"
    file.write_text(yaml.safe_dump({"deployment": DEPLOYMENT, "schedules": [*declared, soon]}))
    applied = datetime.now(UTC)
    stack.cli(str(BIN / "dbtflow"), "schedules", "apply", str(file))
    deployment_id = stack.deployment()["id"]
    try:
        deadline = time.monotonic() + 180
        while True:  # the scheduler, not this test, creates the run (runs of other tests on the stack started earlier)
            runs = stack.post(
                "/flow_runs/filter",
                {
                    "deployments": {"id": {"any_": [deployment_id]}},
                    "flow_runs": {
                        "state": {"type": {"any_": ["RUNNING", "COMPLETED", "FAILED", "PENDING"]}},
                        "expected_start_time": {"after_": applied.isoformat()},
                    },
                    "sort": "EXPECTED_START_TIME_ASC",
                    "limit": 5,
                },
            )
            if runs or time.monotonic() > deadline:
                break
            time.sleep(3)
        assert runs, "the scheduler created no run of the every-minute schedule within 3 minutes"
        run = _wait_final(stack, [runs[0]["id"]])[0]
    finally:
        stack.cli(str(BIN / "dbtflow"), "schedules", "apply", "prefect.yaml")

    assert run["parameters"] == {"command": "build", "target": "local"}  # defaults + the schedule's own
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["work_queue_name"] == "default"
    task_runs = _task_runs(stack, run["id"])
    names = {t["name"] for t in task_runs}
    assert "model fct_shipments" in names and "seed distributors" in names
    assert len(task_runs) > 100
    logs = stack.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [run["id"]]}}, "limit": 200})
    assert any("fct_shipments" in line["message"] for line in logs)


def test_an_ad_hoc_run_with_overrides_reaches_dbt(stack: Stack) -> None:
    done = stack.cli(
        str(BIN / "prefect"), "deployment", "run", DEPLOYMENT,
        "-p", "target=local", "-p", 'vars={"k": "v"}', "-p", f"select={SMALL}",
        "-p", "command=build --indirect-selection cautious", "--watch",
        timeout=600,
    )  # fmt: skip
    assert "Completed" in done.stdout, done.stdout[-2000:]
    flow_run_id = next(line.split("UUID:")[1].strip() for line in done.stdout.splitlines() if "UUID:" in line)
    results = json.loads(next(stack.run_folder(flow_run_id).glob("*-build/run_results.json")).read_text())
    assert results["args"]["select"] == [SMALL]
    assert results["args"]["vars"] == {"k": "v"}
    assert results["args"]["target"] == "local"
    assert results["args"]["indirect_selection"] == "cautious"
    assert {r["unique_id"] for r in results["results"]} >= {"seed.dbt_williamgrant.distributors"}


def test_two_prod_runs_never_overlap_and_dev_does_not_wait_for_prod(stack: Stack) -> None:
    deployment_id = stack.deployment()["id"]

    def create(target: str) -> str:  # whole builds: long enough for overlaps to show
        body = {"parameters": {"target": target}}
        return str(stack.post(f"/deployments/{deployment_id}/create_flow_run", body)["id"])

    # prod's slot held throughout dev's run, as a long prod build holds it: dev must not wait for it
    with _slot_held(stack, slot_name_of("dbt_williamgrant", "prod")):
        prod_a, prod_b, dev = create("prod"), create("prod"), create("dev")
        (dev_run,) = _wait_final(stack, [dev])
        assert dev_run["state"]["type"] == "COMPLETED", dev_run["state"]
        for prod in (prod_a, prod_b):
            assert stack.get(f"/flow_runs/{prod}")["state"]["type"] in ("SCHEDULED", "PENDING", "RUNNING")
            assert not _dbt_ran(stack, prod), "a prod run ran dbt while another held prod's slot"
    runs = _wait_final(stack, [prod_a, prod_b])
    assert [r["state"]["type"] for r in runs] == ["COMPLETED"] * 2, [r["state"] for r in runs]

    (a_start, a_end), (b_start, b_end) = _dbt_span(stack, prod_a), _dbt_span(stack, prod_b)
    assert a_end <= b_start or b_end <= a_start, "two prod runs ran dbt at the same time"


@contextlib.contextmanager
def _slot_held(stack: Stack, name: str) -> Iterator[None]:
    """Hold a target's slot (the global concurrency limit of 1 the flow creates if missing) under a lease."""
    if name not in {limit["name"] for limit in stack.post("/v2/concurrency_limits/filter", {})}:
        stack.post("/v2/concurrency_limits/", {"name": name, "limit": 1})
    body = {"names": [name], "slots": 1, "mode": "concurrency", "lease_duration": 900}
    lease_id = stack.post("/v2/concurrency_limits/increment-with-lease", body)["lease_id"]
    try:
        yield
    finally:
        stack.post("/v2/concurrency_limits/decrement-with-lease", {"lease_id": lease_id})


def _dbt_ran(stack: Stack, flow_run_id: str) -> bool:
    return any(stack.run_folder(flow_run_id).glob("*-build/run_results.json"))


def test_a_redeploy_keeps_each_schedule_on_or_off_as_it_was(stack: Stack) -> None:
    """After a cutover prod is active; redeploying (prefect.yaml says paused) must not pause it."""
    deployment_id = stack.deployment()["id"]
    prod = _schedules(stack)["prod"]
    # as cutover does it: with the parameters (Prefect's schedule PATCH resets those it is not given)
    activate = {"active": True, "parameters": prod["parameters"]}
    stack.patch(f"/deployments/{deployment_id}/schedules/{prod['id']}", activate)
    try:
        done = stack.cli(str(BIN / "dbtflow"), "deploy", timeout=600)
        assert "kept schedule prod active, as it was before this deploy" in done.stdout
        assert _schedules(stack)["prod"]["active"] is True
        assert _schedules(stack)["prod"]["parameters"] == _declared()["prod"]["parameters"]  # still a prod build
        assert _schedules(stack)["dev"]["active"] is True
    finally:
        stack.cli(str(BIN / "dbtflow"), "schedules", "apply", "prefect.yaml")
    assert _schedules(stack)["prod"]["active"] is False
