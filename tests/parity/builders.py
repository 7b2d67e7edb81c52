"""Hand-written dbt artifacts for parity tests: the shapes dbt writes, only the fields that matter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA = "https://schemas.getdbt.com/dbt/{kind}/v{version}.json"


def node(
    uid: str,
    *,
    tags: tuple[str, ...] = (),
    materialized: str | None = None,
    checksum: str | None = None,
    depends_on: tuple[str, ...] = (),
    test_name: str | None = None,
    path: str | None = None,
    enabled: bool = True,
) -> dict[str, Any]:
    rtype, package, name = uid.split(".")[0], uid.split(".")[1], uid.split(".")[-1]
    folder = {"seed": "seeds", "snapshot": "snapshots", "test": "tests"}.get(rtype, "models")
    config: dict[str, Any] = {"enabled": enabled, "tags": list(tags)}
    if materialized or rtype in ("model", "seed", "snapshot", "test"):
        config["materialized"] = materialized or {"seed": "seed", "test": "test", "snapshot": "snapshot"}.get(
            rtype, "table"
        )
    doc: dict[str, Any] = {
        "unique_id": uid,
        "resource_type": rtype,
        "name": name,
        "package_name": package,
        "fqn": [package, name] if rtype in ("test", "unit_test") else [package, "marts", name],
        "original_file_path": path or f"{folder}/{name}.sql",
        "tags": list(tags),
        "config": config,
        "checksum": {"name": "sha256", "checksum": checksum or f"sum-{name}"},
        "depends_on": {"nodes": list(depends_on), "macros": []},
    }
    if rtype == "test" and test_name:
        doc["test_metadata"] = {"name": test_name, "kwargs": {}}
        doc["checksum"] = {"name": "none", "checksum": ""}
    if rtype == "unit_test":
        doc["checksum"] = checksum or f"sum-{name}"
    return doc


def manifest(
    nodes: list[dict[str, Any]],
    *,
    dbt_version: str = "1.10.4",
    schema: int = 12,
    disabled: list[dict[str, Any]] = (),  # type: ignore[assignment]
    selectors: dict[str, Any] | None = None,
) -> dict[str, Any]:
    sections: dict[str, dict[str, Any]] = {"nodes": {}, "sources": {}, "exposures": {}, "unit_tests": {}}
    for n in nodes:
        section = {"source": "sources", "exposure": "exposures", "unit_test": "unit_tests"}.get(
            n["resource_type"], "nodes"
        )
        sections[section][n["unique_id"]] = n
    everything = {k: v for section in sections.values() for k, v in section.items()}
    parent_map = {uid: list(n["depends_on"]["nodes"]) for uid, n in everything.items()}
    child_map: dict[str, list[str]] = {uid: [] for uid in everything}
    for uid, parents in parent_map.items():
        for p in parents:
            child_map.setdefault(p, []).append(uid)
    return {
        "metadata": {"dbt_schema_version": SCHEMA.format(kind="manifest", version=schema), "dbt_version": dbt_version},
        **sections,
        "macros": {},
        "disabled": {n["unique_id"]: [{**n, "config": {**n["config"], "enabled": False}}] for n in disabled},
        "selectors": selectors or {},
        "parent_map": parent_map,
        "child_map": child_map,
    }


def run_results(
    results: list[tuple[str, str] | tuple[str, str, str]],
    *,
    which: str = "build",
    select: list[str] | None = None,
    exclude: list[str] | None = None,
    selector: str | None = None,
    target: str | None = None,
    dbt_version: str = "1.10.4",
    schema: int = 6,
) -> dict[str, Any]:
    args: dict[str, Any] = {
        "which": which,
        "select": select or [],
        "exclude": exclude or [],
        "indirect_selection": "eager",
    }
    if selector:
        args["selector"] = selector
    if target:
        args["target"] = target
    return {
        "metadata": {
            "dbt_schema_version": SCHEMA.format(kind="run-results", version=schema),
            "dbt_version": dbt_version,
        },
        "elapsed_time": 12.5,
        "args": args,
        "results": [
            {
                "unique_id": r[0],
                "status": r[1],
                "message": r[2] if len(r) > 2 else ("PASS" if r[1] == "pass" else "OK"),
                "execution_time": 0.5,
                "thread_id": "Thread-1",
                "timing": [],
                "adapter_response": {},
                "failures": 0,
            }
            for r in results
        ],
    }


def write_step(folder: Path, manifest_doc: dict[str, Any] | None, results_doc: dict[str, Any] | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if manifest_doc is not None:
        (folder / "manifest.json").write_text(json.dumps(manifest_doc))
    if results_doc is not None:
        (folder / "run_results.json").write_text(json.dumps(results_doc))
    return folder


def write_run(
    folder: Path,
    flow_run_id: str | None,
    steps: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]],
    target: str | None = None,
) -> Path:
    """A run folder as dbtflow stores it: run.json (with the run's target, if given) and NN-<cmd>/ per step."""
    records = []
    for index, (command, manifest_doc, results_doc) in enumerate(steps, 1):
        name = f"{index:02d}-{command.replace(' ', '-')}"
        write_step(folder / name, manifest_doc, results_doc)
        records.append({"command": command, "folder": name})
    run = {"flow_run_id": flow_run_id, "project": "wg", "status": "completed", "steps": records}
    if target:
        run["target"] = target
    (folder / "run.json").write_text(json.dumps(run))
    return folder
