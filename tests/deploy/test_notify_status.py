"""notify's message templates and status's pure parts: durations, failing nodes, stats, exit criteria."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from uuid import uuid4

import pytest

from dbtflow.deploy import _notify as notify
from dbtflow.deploy import _status as status
from dbtflow.errors import UserError
from tests.conftest import REPO

FAILED_MESSAGE = (
    "dbt on prod failed (12 skipped): model int_shipments_priced error: Database Error in model "
    "int_shipments_priced (models/x.sql) column no_such_column not found; test unique_dim_x_id fail: Got 2 results, "
    "configured to fail if != 0; dbt build failed: something"
)


def render(template: str, **context: object) -> str:
    from prefect.server.events.jinja_filters import all_filters
    from prefect.server.utilities.user_templates import register_user_template_filters, render_user_template

    register_user_template_filters(all_filters)
    return asyncio.run(render_user_template(template, context))


def context(event: str, message: str, target: str | None = "prod", payload: dict[str, object] | None = None) -> dict:
    flow_run = SimpleNamespace(
        id=uuid4(),
        name="crimson-otter",
        parameters={"target": target} if target else {},
        state=SimpleNamespace(name=event.rsplit(".", 1)[-1], message=message),
    )
    return {
        "event": SimpleNamespace(event=event, payload=payload or {}),
        "flow_run": flow_run,
        "flow": SimpleNamespace(name="run_dbt_wg"),
        "deployment": SimpleNamespace(name="dbt_wg"),
    }


def test_failure_message_names_target_state_nodes_and_links_the_run() -> None:
    subject, body = notify.templates("http://prefect.example:4200/")
    ctx = context("prefect.flow-run.Failed", FAILED_MESSAGE)
    assert render(subject, **ctx) == "dbt prod: Failed (run_dbt_wg/dbt_wg, crimson-otter)"
    text = render(body, **ctx)
    assert "of run_dbt_wg/dbt_wg on target prod ended Failed." in text
    assert "model int_shipments_priced error" in text and "test unique_dim_x_id fail" in text
    assert text.endswith(f"Run: http://prefect.example:4200/runs/flow-run/{ctx['flow_run'].id}")


def test_timed_out_and_crashed_runs_and_the_default_target() -> None:
    subject, body = notify.templates(None)
    timed_out = context("prefect.flow-run.TimedOut", "dbt on dev failed: timed out (timeout_seconds=60)", target=None)
    assert render(subject, **timed_out).startswith("dbt dev: TimedOut")  # the flow's default target
    crashed = context("prefect.flow-run.Crashed", "Flow run infrastructure exited with non-zero status code 137.")
    assert "ended Crashed.\nFlow run infrastructure exited" in render(body, **crashed)
    assert "(no Prefect UI URL known)/runs/flow-run/" in render(body, **crashed)


def test_warning_message_comes_from_the_event() -> None:
    subject, body = notify.templates("http://ui")
    payload = {"target": "prod", "message": "dbt on prod completed with 1 warning(s): test not_null_x warn: Got 3"}
    ctx = context(notify.WARNED_EVENT, "dbt on prod: 1 warn, 40 success", target="ignored", payload=payload)
    assert render(subject, **ctx).startswith("dbt prod: completed with warnings")
    assert "completed with 1 warning(s): test not_null_x warn: Got 3" in render(body, **ctx)


def test_the_automation_watches_the_deployment_for_each_run() -> None:
    deployment_id, block_id = uuid4(), uuid4()
    automation = notify.build_automation("n", deployment_id, "f/d", block_id, on_warning=False, ui_url=None)
    trigger = automation.trigger
    assert trigger.expect == set(notify.FAILED_EVENTS) and trigger.posture == "Reactive" and trigger.threshold == 1
    assert trigger.for_each == {"prefect.resource.id"}  # one notification per run, never batched
    assert trigger.match_related.model_dump()["prefect.resource.id"] == f"prefect.deployment.{deployment_id}"
    (action,) = automation.actions
    assert action.type == "send-notification" and action.block_document_id == block_id
    with_warnings = notify.build_automation("n", deployment_id, "f/d", block_id, on_warning=True, ui_url=None)
    assert notify.WARNED_EVENT in with_warnings.trigger.expect


def test_the_flow_emits_the_event_notify_listens_to() -> None:
    source = (REPO / "src/dbtflow/run/_flow.py").read_text()  # importing the flow would import dbt
    assert f'WARNED_EVENT = "{notify.WARNED_EVENT}"' in source


@pytest.mark.parametrize(
    ("text", "expected"),
    [("7d", timedelta(days=7)), ("24h", timedelta(hours=24)), ("90m", timedelta(minutes=90)),
     ("2w", timedelta(weeks=2)), ("1d12h", timedelta(days=1, hours=12)), (" 7D ", timedelta(days=7))],
)  # fmt: skip
def test_parse_since(text: str, expected: timedelta) -> None:
    assert status.parse_since(text) == expected


@pytest.mark.parametrize("text", ["7x", "", "d", "-7d", "0d", "7 days"])
def test_parse_since_refuses(text: str) -> None:
    with pytest.raises(UserError, match=r"is not a duration|longer than zero"):
        status.parse_since(text)


def test_nodes_from_the_state_message() -> None:
    assert status.nodes_from_message(FAILED_MESSAGE) == ["model int_shipments_priced", "test unique_dim_x_id"]
    assert status.nodes_from_message("invalid request: unknown target 'qa'") == []
    assert status.nodes_from_message(None) == []


def run(state: str, name: str | None = None, seconds: float | None = 60, auto: bool = True, nodes=()) -> status.Run:
    return status.Run(str(uuid4()), f"run-{state}-{seconds}", "prod", state, name or state.title(), "", None,
                      seconds, auto, list(nodes))  # fmt: skip


def test_target_stats() -> None:
    runs = [
        run("COMPLETED", seconds=60),
        run("COMPLETED", seconds=120),
        run("FAILED", seconds=30, nodes=["model a", "test b"]),
        run("FAILED", "TimedOut", seconds=3600, nodes=["model a"]),
        run("CRASHED", seconds=None, auto=False),
        run("CANCELLED", seconds=5),
    ]
    stats = status.target_stats("prod", runs)
    assert (stats.runs, stats.completed, stats.failed, stats.timed_out, stats.crashed, stats.cancelled) == (
        5, 2, 1, 1, 1, 1,
    )  # fmt: skip
    assert stats.success_rate == 40.0 and stats.scheduled_runs == 4
    assert stats.median_seconds == 90.0 and stats.worst_seconds == 3600 and stats.worst_run == "run-FAILED-3600"
    assert stats.top_failed_nodes == [("model a", 2), ("test b", 1)]
    empty = status.target_stats("dev", [])
    assert empty.runs == 0 and empty.success_rate is None and empty.median_seconds is None


def test_the_runbook_declares_the_exit_criteria() -> None:
    criteria = status.load_criteria(REPO / "docs" / "runbook.md")
    assert criteria["target"] == "prod" and criteria["min_scheduled_runs"] >= 5
    assert set(criteria) == status.CRITERIA_KEYS


def test_unknown_or_missing_criteria_are_errors(tmp_path: Path) -> None:
    bad = tmp_path / "runbook.md"
    bad.write_text("```yaml\nexit_criteria:\n  target: prod\n  min_sucess_rate: 95\n```\n")
    with pytest.raises(UserError, match=r"unknown exit criteria \['min_sucess_rate'\]"):
        status.load_criteria(bad)
    bad.write_text("no criteria here\n")
    with pytest.raises(UserError, match="no ```yaml block with exit_criteria"):
        status.load_criteria(bad)


def test_evaluate() -> None:
    runs = [run("COMPLETED", seconds=600) for _ in range(19)] + [run("FAILED", seconds=4000)]
    report = status.Status("f/d", "7d", "", "", [status.target_stats("prod", runs)], [], [], 0)
    criteria = status.load_criteria(REPO / "docs" / "runbook.md")
    results = {c.name: (c.passed, c.detail) for c in status.evaluate(criteria, report, "parity holds", "enabled")}
    assert results["scheduled prod runs >= 5"] == (True, "20 in the last 7d")
    assert results["prod success rate >= 95%"] == (True, "95% of 20 runs")
    assert results["prod runs timed out <= 0"][0] is True
    assert results["prod worst duration <= 60 min"][0] is False
    assert results["prod parity report passes"] == (True, "parity holds")
    assert results["failure alerts on"] == (True, "enabled")
    nothing = status.Status("f/d", "7d", "", "", [], [], [], 0)
    failing = status.evaluate(criteria, nothing, "3 unexplained differences", None)
    assert not any(c.passed for c in failing if "timed out" not in c.name)


@pytest.mark.parametrize("text", ["99999999w", "9999999999999d", "4000w"])
def test_parse_since_refuses_a_window_beyond_ten_years_in_one_line(text: str) -> None:
    with pytest.raises(UserError, match=r"^--since '.+' is longer than 10 years; use e\.g\. 52w$"):
        status.parse_since(text)


def test_status_since_overflow_is_one_line_and_exit_2() -> None:
    from typer.testing import CliRunner

    from dbtflow.cli import app

    result = CliRunner().invoke(app, ["status", "--since", "99999999w"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "OverflowError" not in result.output
    assert "longer than 10 years" in result.output
