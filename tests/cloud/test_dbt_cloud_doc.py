"""docs/dbt-cloud.md holds one table, the dbt Cloud job field by field, and it misses none.

Checked against the spec (`shared/reference/dbt-cloud-openapi-v2.yaml`, the job object that
`GET .../jobs/{id}/` returns) and the client's own pydantic model (`dbtflow.cloud._client.Job`):
every field the client reads exists in the spec and has a row; every field of the spec has a row,
except the bookkeeping fields below (each with the reason it is not a job feature).
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from dbtflow.cloud._client import Job
from tests.conftest import REPO
from tests.fakes.dbtcloud_server import SPEC_PATH, Spec

DOC = REPO / "docs" / "dbt-cloud.md"
JOB_SCHEMA = "HumanReadableJobDefinitionResponse"  # the job object of GET/POST .../jobs/{id}/
HEADER = "| dbt Cloud job field | in Prefect |"
BOOKKEEPING = {
    "created_at": "a timestamp of the job object, not a setting",
    "updated_at": "a timestamp; cutover only compares it to refuse a job edited meanwhile",
    "account": "a read-only copy of the related account (`account_id` has the row)",
    "project": "a read-only copy of the related project (`project_id` has the row)",
    "environment": "a read-only copy of the related environment (`environment_id` has the row)",
    "fusion_readiness": "read-only: dbt Cloud's report on the job's readiness for dbt Fusion",
    "is_deferrable": "read-only: dbt Cloud derives it; deferral itself is `deferring_*`, which have rows",
    "lifecycle_webhooks_url": "read-only: derived from `lifecycle_webhooks`, which has the row",
    "raw_dbt_version": "read-only: `dbt_version` as entered, which has the row",
}
NOT_A_FIELD = ("raw",)  # Job.raw is the whole API object kept for read-modify-write, not a field of it


@pytest.fixture(scope="module")
def spec() -> Spec:
    return Spec(SPEC_PATH)


def spec_fields(spec: Spec, schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of the schema's leaf fields; objects with properties are walked into."""
    for name, sub in spec.resolve(schema).get("properties", {}).items():
        path = f"{prefix}{name}"
        if path in BOOKKEEPING:
            continue
        resolved = spec.resolve(sub)
        if resolved.get("properties"):
            yield from spec_fields(spec, resolved, f"{path}.")
        else:
            yield path


def model_fields(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Dotted paths of the fields a pydantic model reads; nested models are walked into."""
    for name, info in model.model_fields.items():
        if not prefix and name in NOT_A_FIELD:
            continue
        nested = _nested_model(info.annotation)
        if nested is None:
            yield f"{prefix}{name}"
        else:
            yield from model_fields(nested, f"{prefix}{name}.")


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model of `Model` or `Model | None`, else None (lists and dicts are leaves)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if len(models) == 1 else None
    return None


def table_rows(text: str) -> list[tuple[str, str]]:
    """(first cell, second cell) of the job table's rows; the doc must have that one table only."""
    lines = text.splitlines()
    separators = [i for i, line in enumerate(lines) if re.match(r"^\|\s*-{3,}", line)]
    assert len(separators) == 1, f"{DOC.name} must hold one table, has {len(separators)}"
    start = separators[0]
    assert lines[start - 1].strip() == HEADER, f"the table's header must be {HEADER!r}"
    rows = []
    for line in lines[start + 1 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        assert len(cells) == 2, f"a row of two cells: {line[:80]}"
        rows.append((cells[0], cells[1]))
    return rows


def rows_by_field(rows: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Each backticked name of a first cell -> the second cells of its rows."""
    found: dict[str, list[str]] = {}
    for first, second in rows:
        for name in re.findall(r"`([^`]+)`", first):
            found.setdefault(name, []).append(second)
    return found


def related_includes(spec: Spec) -> set[str]:
    """The `include_related` values the spec documents for reading one job."""
    operation = spec.doc["paths"]["/api/v2/accounts/{account_id}/jobs/{id}/"]["get"]
    (param,) = [p for p in operation["parameters"] if p.get("name") == "include_related"]
    return set(re.findall(r"`([a-z_]+)`", param["description"]))


def test_every_field_the_client_reads_is_in_the_spec_and_in_the_table(spec: Spec) -> None:
    schema = spec.schema(JOB_SCHEMA)
    in_spec = set(spec_fields(spec, schema)) | set(BOOKKEEPING)
    read = list(model_fields(Job))
    assert {"triggers.on_merge", "schedule.date.cron", "execution.timeout_seconds"} <= set(read)  # walked into
    outside = [f for f in read if f not in in_spec and f not in related_includes(spec)]
    assert not outside, f"the client reads fields the spec's {JOB_SCHEMA} does not have: {outside}"
    documented = rows_by_field(table_rows(DOC.read_text()))
    missing = [f for f in read if f not in documented]
    assert not missing, f"{DOC.name}'s table has no row for the client's field(s) {missing}"


def test_every_field_of_the_spec_is_in_the_table_but_bookkeeping(spec: Spec) -> None:
    schema = spec.schema(JOB_SCHEMA)
    assert set(BOOKKEEPING) <= set(spec.resolve(schema)["properties"]), "a bookkeeping field the spec lost"
    assert not set(BOOKKEEPING) & set(model_fields(Job)), "a field the client reads is not bookkeeping"
    fields = list(spec_fields(spec, schema))
    assert len(fields) > 30 and "triggers.custom_branch_only" in fields
    documented = rows_by_field(table_rows(DOC.read_text()))
    missing = [f for f in fields if f not in documented]
    assert not missing, f"{DOC.name}'s table has no row for the spec's job field(s) {missing}"


def test_each_row_says_what_it_becomes_or_why_not() -> None:
    for first, second in table_rows(DOC.read_text()):
        assert len(second) > 15, f"row {first!r}: say what it becomes in Prefect, or why it is not translated"
        if second.startswith("not translated"):
            reason = second.split(":", 1)[1].strip() if ":" in second else ""
            assert len(reason) > 15, f"row {first!r} is not translated: give the reason after a colon"


def test_dropping_a_row_fails_the_check(spec: Spec) -> None:
    text = DOC.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `triggers.on_merge`"))
    documented = rows_by_field(table_rows(text.replace(row + "\n", "")))
    assert "triggers.on_merge" not in documented
    assert "triggers.on_merge" in set(spec_fields(spec, spec.schema(JOB_SCHEMA)))
