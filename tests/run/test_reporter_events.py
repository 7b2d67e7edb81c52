"""Every event and log line the fast engine's reporter sends is valid for Prefect's own models.

The reporter builds them as plain dicts (see `dbtflow.run._reporter`'s pitfalls); here real dbt
events (a DuckDB build with a success, an error, a skip, a warning and a source) go through it,
and each outgoing item is checked by Prefect's `Event` and `LogCreate`, as the server checks them.
"""

from __future__ import annotations

import copy
from typing import Any
from uuid import uuid4

import pytest
from dbt.cli.main import dbtRunner
from prefect.client.schemas.actions import LogCreate
from prefect.events import Event

from dbtflow.run._reporter import NodeReporter

FILES = {
    "dbt_project.yml": "name: tiny\nversion: '1.0.0'\nprofile: tiny\nconfig-version: 2\n",
    "profiles.yml": "tiny:\n  target: local\n  outputs:\n    local:\n      type: duckdb\n      path: tiny.duckdb\n",
    "models/ok.sql": "select 1 as id",
    "models/broken.sql": "select no_such_column from {{ ref('ok') }}",
    "models/after_broken.sql": "select * from {{ ref('broken') }}",
    "models/from_source.sql": "select count(*) as n from {{ source('catalog', 'tables') }}",
    "models/sources.yml": (
        "sources:\n  - name: catalog\n    database: system\n    schema: information_schema\n"
        "    tables:\n      - name: tables\n"
    ),
    "tests/warns.sql": "{{ config(severity='warn') }}\nselect * from {{ ref('ok') }}",
}


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """What the reporter would send for one real dbt build of the tiny project."""
    project = tmp_path_factory.mktemp("tiny")
    for name, text in FILES.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text)
    events: list[Any] = []
    argv = ["--project-dir", str(project), "--profiles-dir", str(project), "--log-level", "none"]
    parsed = dbtRunner().invoke(["parse", *argv, "--log-path", str(project / "logs")])
    assert parsed.success, parsed.exception
    build = dbtRunner(manifest=parsed.result, callbacks=[events.append])
    build.invoke(["build", *argv, "--log-path", str(project / "logs")])
    reporter = NodeReporter(uuid4(), "tiny-run")
    reporter.set_manifest(parsed.result)
    built: list[dict[str, Any]] = []
    for event in events:
        reporter._handle(event)
        # copied as built: a Running event that its node's end replaces before a flush is dropped from the outbox
        built += copy.deepcopy(reporter._outbox["events"][len(built) :])
    return {"events": built, "logs": reporter._outbox["logs"]}


def test_every_event_is_a_valid_prefect_event(sent: dict[str, list[dict[str, Any]]]):
    names = {Event.model_validate(event).event for event in sent["events"]}
    assert {
        "prefect.task-run.Running",
        "prefect.task-run.Completed",
        "prefect.task-run.Failed",
        "prefect.task-run.Skipped",
        "prefect.task-run.Warning",
        "prefect.asset.materialization.succeeded",
        "prefect.asset.materialization.failed",
        "prefect.asset.referenced",
    } <= names, names


def test_every_log_line_is_a_valid_prefect_log(sent: dict[str, list[dict[str, Any]]]):
    logs = [LogCreate.model_validate(line) for line in sent["logs"]]
    assert any(log.task_run_id for log in logs) and any(log.task_run_id is None for log in logs)
