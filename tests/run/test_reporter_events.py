"""Every event and log line the fast engine's reporter sends is valid for Prefect's own models.

The reporter builds them as plain dicts (see `dbtflow.run._reporter`'s pitfalls); here real dbt
events (a DuckDB build with a success, an error, a skip, a warning and a source) go through it,
and each outgoing item is checked by Prefect's `Event` and `LogCreate`, as the server checks them.
"""

from __future__ import annotations

import copy
import json
from typing import Any
from uuid import uuid4

import httpx
import pytest
from dbt.cli.main import dbtRunner
from prefect.client.schemas.actions import LogCreate
from prefect.events import Event
from prefect.settings import PREFECT_EVENTS_MAXIMUM_RELATED_RESOURCES, temporary_settings

from dbtflow.run._reporter import NodeReporter

FILES = {
    "dbt_project.yml": "name: tiny\nversion: '1.0.0'\nprofile: tiny\nconfig-version: 2\n",
    "profiles.yml": (
        "tiny:\n  target: local\n  outputs:\n    local:\n      type: duckdb\n      path: PROJECT/tiny.duckdb\n"
    ),
    "models/ok.sql": "select 1 as id",
    "models/broken.sql": "select no_such_column from {{ ref('ok') }}",
    "models/after_broken.sql": "select * from {{ ref('broken') }}",
    "models/from_source.sql": "select count(*) as n from {{ source('catalog', 'tables') }}",
    "models/sources.yml": (
        "sources:\n  - name: catalog\n    database: system\n    schema: information_schema\n"
        "    tables:\n      - name: tables\n"
    ),
    "tests/warns.sql": "{{ config(severity='warn') }}\nselect * from {{ ref('ok') }}",
    **{f"models/up_{n}.sql": "select 1 as id" for n in range(6)},
    "models/fan_in.sql": " union all ".join(f"select * from {{{{ ref('up_{n}') }}}}" for n in range(6)),
}
MAX_RELATED = 5  # Prefect's limit of related resources per event (100 by default): fan_in has 6 upstream assets


@pytest.fixture(scope="module")
def sent(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """What the reporter would send for one real dbt build of the tiny project."""
    project = tmp_path_factory.mktemp("tiny")
    for name, text in FILES.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text(text.replace("PROJECT", str(project)))
    events: list[Any] = []
    argv = ["--project-dir", str(project), "--profiles-dir", str(project), "--log-level", "none"]
    parsed = dbtRunner().invoke(["parse", *argv, "--log-path", str(project / "logs")])
    assert parsed.success, parsed.exception
    build = dbtRunner(manifest=parsed.result, callbacks=[events.append])
    build.invoke(["build", *argv, "--log-path", str(project / "logs")])
    with temporary_settings(updates={PREFECT_EVENTS_MAXIMUM_RELATED_RESOURCES: MAX_RELATED}):
        reporter = NodeReporter(uuid4(), "tiny-run")
    reporter.set_manifest(parsed.result)
    built: list[dict[str, Any]] = []
    for event in events:
        reporter._handle(event)
        # copied as built: a Running event that its node's end replaces before a flush is dropped from the outbox
        built += copy.deepcopy(reporter._outbox["events"][len(built) :])
    return {"events": built, "logs": reporter._outbox["logs"]}


def test_every_event_is_a_valid_prefect_event(sent: dict[str, list[dict[str, Any]]]):
    with temporary_settings(updates={PREFECT_EVENTS_MAXIMUM_RELATED_RESOURCES: MAX_RELATED}):
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


def test_a_wide_fan_in_relates_what_fits_and_counts_the_rest(sent: dict[str, list[dict[str, Any]]]):
    (fan_in,) = [e for e in sent["events"] if e["resource"]["prefect.resource.id"].endswith("/fan_in")]
    assets = [r for r in fan_in["related"] if r["prefect.resource.role"] == "asset"]
    assert len(fan_in["related"]) == MAX_RELATED
    assert fan_in["payload"]["dbt"]["upstream_assets_not_related"] == 6 - len(assets) > 0


def test_an_item_the_api_refuses_is_dropped_and_counted_not_retried_with_the_rest():
    posted: list[list[dict[str, Any]]] = []

    def api(request: httpx.Request) -> httpx.Response:  # Prefect's API refuses any batch holding an invalid event
        batch = json.loads(request.content)
        posted.append(batch)
        return httpx.Response(422 if any(e["event"] == "invalid" for e in batch) else 200)

    reporter = NodeReporter(uuid4(), "tiny-run")
    reporter._http = httpx.Client(base_url="http://api/", transport=httpx.MockTransport(api))
    reporter._outbox["events"] = [{"event": name} for name in ("first", "invalid", "last")]
    assert reporter._flush()
    assert reporter.sent["events"] == 2 and not reporter._outbox["events"]
    assert reporter.errors == 1 and "refused one event invalid (422)" in str(reporter.last_error)
    assert [e["event"] for batch in posted[1:] for e in batch] == ["first", "invalid", "last"]
