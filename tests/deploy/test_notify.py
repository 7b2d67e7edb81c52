"""Failure alerts and `dbtflow status` against a real Prefect server (the session's) and real dbt runs.

Runs are runs *of a deployment* (created on the server, executed in this process by Prefect's own
engine), so their state-change events carry the deployment as Prefect's worker would. The alert
goes through the server's triggers and actions services to a webhook receiver on loopback.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from typer.testing import CliRunner

from dbtflow.cli import app

pytestmark = pytest.mark.usefixtures("prefect_api")
runner = CliRunner()
BAD_DATE = {"reporting_start_date": "not-a-date"}  # int_months casts it: the model fails in DuckDB
SECRET_PATH = "/hooks/s3cr3t-t0ken"


class Receiver:
    """A webhook receiver on loopback that keeps every JSON body posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                received.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, fragment: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in list(self.bodies):
                if fragment in json.dumps(body):
                    return body
            time.sleep(1)
        raise AssertionError(f"no notification mentioning {fragment!r} within {timeout} s; got {self.bodies}")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def make_deployment(flow_name: str, name: str = "dbt_wg") -> str:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(flow_name)
        client.create_deployment(
            flow_id=flow_id,
            name=name,
            entrypoint="flows/dbt_wg_flow.py:run_dbt_wg",
            parameters={"command": "build", "target": "local"},
        )
    return f"{flow_name}/{name}"


def run_deployment(tenant: Path, deployment: str, **parameters: Any) -> Any:
    """A run of the deployment, executed here by Prefect's engine as a worker's process would."""
    from prefect import get_client
    from prefect.flow_engine import run_flow

    from dbtflow.run._flow import dbt_flow

    flow = dbt_flow(tenant, name=deployment.split("/")[0])
    with get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(deployment)
        flow_run = client.create_flow_run_from_deployment(found.id, parameters=parameters)
    return run_flow(flow, flow_run=flow_run, parameters=flow_run.parameters, return_type="state")


def cli(*argv: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(argv), env=env)


def automations(name: str) -> list[Any]:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return list(client.read_automations_by_name(name))


def test_a_failed_run_notifies_the_webhook_with_target_nodes_and_link(tenant: Path, receiver: Receiver) -> None:
    deployment = make_deployment("run_dbt_wg_alerts")
    setup = cli("notify", "setup", "--deployment", deployment, "--channel", "webhook", "--block", "test-alerts",
                env={"DBTFLOW_ALERT_URL": receiver.url})  # fmt: skip
    assert setup.exit_code == 0, setup.output
    assert "block custom-webhook/test-alerts: saved" in setup.stdout
    assert f"automation 'dbtflow alerts: {deployment}': created" in setup.stdout
    assert SECRET_PATH not in setup.output  # the URL is a secret: never echoed

    state = run_deployment(tenant, deployment, select="int_months", vars=BAD_DATE)

    assert state.is_failed() and "int_months" in state.message
    flow_run_id = str(state.state_details.flow_run_id)
    ended = time.monotonic()
    body = receiver.wait_for(flow_run_id)
    print(f"notification received {time.monotonic() - ended:.1f} s after the failed run ended")
    assert body["subject"].startswith("dbt local: Failed") and "run_dbt_wg_alerts/dbt_wg" in body["subject"]
    text = body["body"]
    assert "on target local ended Failed" in text
    assert "model int_months error" in text and "not-a-date" in text  # the failing node and its error
    assert f"/runs/flow-run/{flow_run_id}" in text and "http://127.0.0.1:" in text  # a link to the run
    assert body["text"] == f"{body['subject']}\n{text}"  # Slack-compatible `text` for generic receivers

    from prefect import get_client

    with get_client(sync_client=True) as client:  # the block keeps the URL as a secret field
        document = client.read_block_document_by_name("test-alerts", "custom-webhook", include_secrets=False)
    assert SECRET_PATH not in json.dumps(document.data, default=str)


def test_a_timed_out_run_notifies_too(tenant: Path, receiver: Receiver) -> None:
    deployment = make_deployment("run_dbt_wg_timeouts")
    setup = cli("notify", "setup", "--deployment", deployment, "--channel", "webhook", "--block", "timeouts",
                env={"DBTFLOW_ALERT_URL": receiver.url})  # fmt: skip
    assert setup.exit_code == 0, setup.output

    state = run_deployment(tenant, deployment, select="int_months", timeout_seconds=1)  # dbt parses for longer

    assert state.is_failed() and state.name == "TimedOut", state
    flow_run_id = str(state.state_details.flow_run_id)
    body = receiver.wait_for(flow_run_id)
    assert body["subject"].startswith("dbt local: TimedOut")
    assert "ended TimedOut." in body["body"] and "timeout_seconds=1" in body["body"]


def test_a_run_with_warnings_notifies_with_on_warning(tenant: Path, receiver: Receiver) -> None:
    deployment = make_deployment("run_dbt_wg_warns")
    env = {"DBTFLOW_ALERT_URL": receiver.url}
    setup = cli("notify", "setup", "--deployment", deployment, "--channel", "webhook", "--on-warning", env=env)
    assert setup.exit_code == 0, setup.output
    assert "dbtflow.run.warned" in setup.stdout

    state = run_deployment(
        tenant, deployment, command="build --indirect-selection cautious", select="+fct_net_revenue_gbp"
    )

    assert state.is_completed(), state.message
    assert " warn" in state.message
    flow_run_id = str(state.state_details.flow_run_id)
    body = receiver.wait_for(flow_run_id)
    assert body["subject"].startswith("dbt local: completed with warnings")
    assert "(run_dbt_wg_warns/dbt_wg, " in body["subject"]  # the flow's event carries its run's deployment
    assert "completed with 1 warning(s): test not_null_fct_net_revenue_gbp_net_revenue_gbp warn" in body["body"]
    assert f"/runs/flow-run/{flow_run_id}" in body["body"]


def test_setup_twice_is_one_automation_and_changes_update_it(receiver: Receiver) -> None:
    deployment = make_deployment("run_dbt_wg_idem")
    name = f"dbtflow alerts: {deployment}"
    env = {"DBTFLOW_ALERT_URL": receiver.url}
    first = cli("notify", "setup", "--deployment", deployment, "--channel", "webhook", "--block", "idem", env=env)
    assert first.exit_code == 0 and ": created" in first.stdout, first.output
    # no URL the second time: the block exists and is reused
    again = cli("notify", "setup", "--deployment", deployment, "--channel", "webhook", "--block", "idem", env={})
    assert again.exit_code == 0, again.output
    assert "block custom-webhook/idem: reused" in again.stdout and ": unchanged" in again.stdout
    by_ref = cli("notify", "setup", "--deployment", deployment, "--block", "custom-webhook/idem")
    assert ": unchanged" in by_ref.stdout, by_ref.output
    assert len(automations(name)) == 1

    warn = cli("notify", "setup", "--deployment", deployment, "--block", "idem", "--on-warning")
    assert warn.exit_code == 0 and ": updated" in warn.stdout, warn.output
    (automation,) = automations(name)
    assert "dbtflow.run.warned" in automation.trigger.expect and automation.enabled
    assert set(automation.trigger.expect) >= {"prefect.flow-run.Failed", "prefect.flow-run.Crashed",
                                               "prefect.flow-run.TimedOut"}  # fmt: skip


def test_status_counts_runs_rates_and_the_failing_node(tenant: Path, tmp_path: Path) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import ArtifactCreate
    from prefect.states import Scheduled
    from prefect.types._datetime import now

    deployment = make_deployment("run_dbt_wg_status")
    ok = run_deployment(tenant, deployment, command="seed --select brands")
    bad = run_deployment(tenant, deployment, select="int_months", vars=BAD_DATE)
    bad_again = run_deployment(tenant, deployment, select="int_months", vars=BAD_DATE)
    other = run_deployment(tenant, deployment, command="seed --select brands", target="dev2")  # unknown target
    assert ok.is_completed() and bad.is_failed() and bad_again.is_failed() and other.is_failed()
    with get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(deployment)
        client.create_flow_run_from_deployment(
            found.id, parameters={"target": "prod"}, state=Scheduled(scheduled_time=now("UTC") + timedelta(days=1))
        )
        client.create_artifact(
            ArtifactCreate(key="parity-test", type="markdown", data="# parity", description="parity holds",
                           flow_run_id=UUID(str(ok.state_details.flow_run_id)))
        )  # fmt: skip
    runbook = tmp_path / "runbook.md"
    runbook.write_text(
        "# criteria\n\n```yaml\nexit_criteria:\n  target: local\n  min_scheduled_runs: 1\n  min_success_rate: 30\n"
        "  max_timed_out: 0\n  max_duration_minutes: 30\n  parity_artifact_key: parity-test\n  alerts: true\n```\n"
    )

    result = cli("status", "--since", "1d", "--deployment", deployment, "--runbook", str(runbook), "--json")

    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    targets = {t["target"]: t for t in status["targets"]}
    assert set(targets) == {"local", "dev2"}
    local = targets["local"]
    assert (local["runs"], local["completed"], local["failed"], local["crashed"]) == (3, 1, 2, 0)
    assert local["success_rate"] == 33.3
    assert local["top_failed_nodes"] == [{"node": "model int_months", "failures": 2}]
    assert 0 < local["median_seconds"] <= local["worst_seconds"] < 600
    assert targets["dev2"]["runs"] == 1 and targets["dev2"]["success_rate"] == 0
    assert [u["target"] for u in status["upcoming"]] == ["prod"]
    criteria = {c["name"]: c["passed"] for c in status["criteria"]}
    assert criteria == {
        "scheduled local runs >= 1": False,  # ad-hoc runs only
        "local success rate >= 30%": True,
        "local runs timed out <= 0": True,
        "local worst duration <= 30 min": True,
        "local parity report passes": True,
        "failure alerts on": False,  # no `notify setup` for this deployment
    }
    assert status["exit_criteria_met"] is False

    text = cli("status", "--since", "1d", "--deployment", deployment, "--runbook", str(runbook), "--check")
    print(text.stdout)
    assert text.exit_code == 1
    assert "failed most on local: model int_months (2x)" in text.stdout
    assert "FAIL  scheduled local runs >= 1: 0 in the last 1d" in text.stdout
    assert "NOT MET" in text.stdout


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["notify", "setup", "--deployment", "nope/nope", "--block", "x"], {}, "deployment 'nope/nope' not found"),
        (["notify", "setup", "--deployment", "nope"], {}, "is not <flow>/<deployment>"),
        (["notify", "setup"], {}, "say where alerts go: --block"),
        (["notify", "setup", "--channel", "pager"], {}, "channel 'pager' is unknown"),
        (["notify", "setup", "--bogus"], {}, "No such option '--bogus'"),
        (["notify", "setup", "--block", "no-such-block"], {}, "no notification block named 'no-such-block'"),
        (["notify", "setup", "--channel", "slack", "--block", "nothing-yet"], {}, "set DBTFLOW_ALERT_URL"),
        (["notify", "setup", "--channel", "webhook", "--block", "x"], {"DBTFLOW_ALERT_URL": "ftp://h"}, "https://"),
        (["status", "--since", "7x"], {}, "--since '7x' is not a duration"),
        (["status", "--deployment", "nope/nope"], {}, "deployment 'nope/nope' not found"),
        (["status", "--runbook", "/no/such/runbook.md"], {}, "cannot read the exit criteria"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], env: dict[str, str], expected: str) -> None:
    if argv[:2] == ["notify", "setup"] and "--deployment" not in argv:
        argv = [*argv, "--deployment", make_deployment_once()]
    result = cli(*argv, env=env)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr


_ONCE: list[str] = []


def make_deployment_once() -> str:
    if not _ONCE:
        _ONCE.append(make_deployment("run_dbt_wg_bad_input"))
    return _ONCE[0]
