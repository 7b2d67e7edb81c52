"""The partial-parse cache in the run store: a cold clone parses partially; a change or another path never skips."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from dbtflow.run._flow import dbt_flow, runs_root
from tests.run.durable.conftest import FOLDER, S3, STORE, fresh_clone

MODEL = Path("models") / "intermediate" / "int_months.sql"


def run(project: Path, **params: Any) -> dict[str, Any]:
    """One run on `project` with the S3 store; returns its run.json, the container's runs folder then dropped."""
    state = dbt_flow(project, name="run_dbt_wg_parse_cache_test")(
        target="local", select="int_months", run_storage=STORE, return_state=True, **params
    )
    assert state.is_completed(), state.message
    folder = runs_root() / str(state.state_details.flow_run_id)
    record = json.loads((folder / "run.json").read_text())
    record["manifest"] = json.loads((folder / "01-build" / "manifest.json").read_text())
    shutil.rmtree(runs_root())
    return record


def parse(record: dict[str, Any]) -> tuple[str, float]:
    match = re.match(r"(partial|full) parse in ([\d.]+) s", record["steps"][0]["parse"])
    assert match, record["steps"][0]["parse"]
    return match.group(1), float(match.group(2))


def test_cold_clone_restores_the_parse_and_never_skips_a_change(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBTFLOW_RUNS_DIR", str(tmp_path / "runs"))
    where = tmp_path / "clone"  # a managed pool clones to the same path in every container
    fresh_clone(where)
    cache_keys = {k for k in s3.objects() if k.startswith(f"{FOLDER}/_parse-cache/")}
    first = run(where)
    assert parse(first)[0] == "full"
    stored = {k for k in s3.objects() if k.startswith(f"{FOLDER}/_parse-cache/")} - cache_keys
    assert len(stored) == 1 and stored.pop().endswith("/partial_parse.msgpack")

    warm_kind, warm = parse(run(where))  # same clone: dbt's own partial parse, the local baseline
    fresh_clone(where)  # a new container: no target/, no msgpack
    cold_kind, cold = parse(run(where))
    assert (warm_kind, cold_kind) == ("partial", "partial")
    print(f"PARSE warm-local={warm:.2f}s cold-clone-from-store={cold:.2f}s ratio={cold / warm:.2f}")

    fresh_clone(where)  # a new container with a changed model: its parse must see the change
    (where / MODEL).write_text((where / MODEL).read_text() + "\n-- parsed again\n")
    changed = run(where)
    assert parse(changed)[0] == "full"
    assert "-- parsed again" in changed["manifest"]["nodes"]["model.dbt_williamgrant.int_months"]["raw_code"]

    elsewhere = fresh_clone(tmp_path / "another-path")  # a clone at another path never gets this cache
    other = run(elsewhere)
    assert parse(other)[0] == "full"
    seeds = [n for n in other["manifest"]["nodes"].values() if n["resource_type"] == "seed"]
    assert seeds and all(n["root_path"] == str(elsewhere) for n in seeds)
