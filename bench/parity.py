"""How long `dbtflow parity` takes on a large project, and how much memory: load + compare + report.

What it measures
- A generated pair of artifact sets of N nodes each (default 20,000; the goal is <= 3 s and
  <= 1.5 GB peak RSS): a "dbt Cloud" step folder (dbt 1.9, manifest v12, run_results v6, a
  `--exclude tag:weekly` build) and a "Prefect" run folder (dbt 1.11, run.json, `01-build/`
  with manifest + run_results, and a `02-docs-generate/` step that must be ignored).
- The timed part runs in this process, as `dbtflow parity` does: `load_artifact_set` for both
  sides (JSON parsing, the node model, selection re-evaluation), `compare`, `report_markdown`
  and `report_json` serialised with `json.dumps`. Imports happen before the clock starts.
- Peak RSS is this process's `ru_maxrss`. The artifacts are generated in a child process first
  so that generating them does not count; the files are read from the page cache (written just
  before), as a second `dbtflow parity` on the same files would.
- The last line is `RESULT nodes=<N> seconds=<x> peak_rss_mb=<x>` (seconds = median of
  `--repeat` rounds). The script checks the report found every planted difference with the
  right reason, and exits 1 if not: a fast wrong answer is not a result.

Shapes (per side)
- 30% models (5% of them ephemeral, 5% tagged weekly), 60% tests (generic, on 1-2 models; 3%
  singular), 1.5% seeds, 1% snapshots, 6% sources, 0.5% exposures, 1% unit tests, plus 1,500
  macros. Nodes carry the fields dbt 1.10/1.11 writes (config with ~35 keys, columns, raw and
  compiled code of a few hundred bytes, docs, contracts); run_results carry timing, adapter
  responses and compiled code. About 4-5 KB of manifest JSON per node.
- Planted differences: weekly models (and their tests) only in Prefect (selection); models
  added and removed; seeds disabled; models whose checksum changed; models made ephemeral;
  exposures run by dbt 1.11 only (dbt_version); model failures with their downstream skipped
  (status, upstream).

Usage: `python bench/parity.py [--nodes 20000] [--repeat 3] [--keep DIR]` (`make bench-parity`).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

P = "wg_big"
SCHEMA = "https://schemas.getdbt.com/dbt/{kind}/v{version}.json"
SQL = (
    "with source as (\n    select * from {{{{ ref('{parent}') }}}}\n),\nrenamed as (\n    select\n"
    + "".join(f"        cast(col_{i} as varchar) as column_{i},\n" for i in range(12))
    + "        current_timestamp as loaded_at\n    from source\n    where col_0 is not null\n)\nselect * from renamed\n"
)


def plan(n: int) -> dict[str, int]:
    counts = {
        "model": int(n * 0.30),
        "seed": int(n * 0.015),
        "snapshot": int(n * 0.01),
        "source": int(n * 0.06),
        "exposure": int(n * 0.005),
        "unit_test": int(n * 0.01),
    }
    counts["test"] = n - sum(counts.values())
    return counts


def _config(materialized: str, tags: list[str], rtype: str) -> dict[str, Any]:
    return {
        "enabled": True,
        "alias": None,
        "schema": "marts",
        "database": None,
        "tags": tags,
        "meta": {},
        "group": None,
        "materialized": materialized,
        "incremental_strategy": None,
        "batch_size": None,
        "lookback": 1,
        "begin": None,
        "persist_docs": {},
        "post-hook": [],
        "pre-hook": [],
        "quoting": {},
        "column_types": {},
        "full_refresh": None,
        "unique_key": None,
        "on_schema_change": "ignore",
        "on_configuration_change": "apply",
        "grants": {},
        "packages": [],
        "docs": {"show": True, "node_color": None},
        "contract": {"enforced": False, "alias_types": True},
        "event_time": None,
        "concurrent_batches": None,
        "access": "protected" if rtype == "model" else None,
        "freshness": None,
        **(
            {
                "severity": "ERROR",
                "store_failures": None,
                "where": None,
                "limit": None,
                "fail_calc": "count(*)",
                "warn_if": "!= 0",
                "error_if": "!= 0",
            }
            if rtype == "test"
            else {}
        ),
    }


def _node(
    uid: str, rtype: str, name: str, parents: list[str], tags: list[str], materialized: str, sql: str
) -> dict[str, Any]:
    folder = {"seed": "seeds", "snapshot": "snapshots", "test": "tests"}.get(rtype, "models")
    sub = f"area_{hash(name) % 40}"
    columns = {
        f"column_{i}": {
            "name": f"column_{i}",
            "description": f"Column {i} of {name}.",
            "meta": {},
            "data_type": None,
            "constraints": [],
            "quote": None,
            "config": {"meta": {}, "tags": []},
            "tags": [],
            "granularity": None,
            "doc_blocks": [],
        }
        for i in range(4 if rtype == "model" else 0)
    }
    return {
        "database": "analytics",
        "schema": "marts",
        "name": name,
        "resource_type": rtype,
        "package_name": P,
        "path": f"{sub}/{name}.sql",
        "original_file_path": f"{folder}/{sub}/{name}.sql",
        "unique_id": uid,
        "fqn": [P, sub, name],
        "alias": name,
        "checksum": {"name": "sha256", "checksum": f"{hash(uid) & 0xFFFFFFFFFFFF:064x}"},
        "config": _config(materialized, tags, rtype),
        "tags": tags,
        "description": f"The {name} {rtype}.",
        "columns": columns,
        "meta": {},
        "group": None,
        "docs": {"show": True, "node_color": None},
        "patch_path": f"{P}://{folder}/{sub}/_schema.yml",
        "build_path": None,
        "unrendered_config": {"materialized": materialized, "tags": tags},
        "created_at": 1767000000.0,
        "relation_name": None if rtype == "test" or materialized == "ephemeral" else f'"analytics"."marts"."{name}"',
        "raw_code": sql,
        "doc_blocks": [],
        "language": "sql",
        "refs": [
            {"name": p.split(".")[-1], "package": None, "version": None} for p in parents if p.startswith("model.")
        ],
        "sources": [],
        "metrics": [],
        "functions": [],
        "depends_on": {"macros": ["macro.dbt.test_not_null"] if rtype == "test" else [], "nodes": parents},
        "compiled_path": f"target/compiled/{P}/{folder}/{sub}/{name}.sql",
        "compiled": True,
        "compiled_code": sql.replace("{{", "").replace("}}", ""),
        "extra_ctes_injected": True,
        "extra_ctes": [],
        "contract": {"enforced": False, "alias_types": True, "checksum": None},
        "access": "protected",
        "constraints": [],
        "version": None,
        "latest_version": None,
        "deprecation_date": None,
        "primary_key": [],
        "time_spine": None,
        **(
            {
                "test_metadata": {"name": "not_null", "kwargs": {"column_name": "column_0"}, "namespace": None},
                "column_name": "column_0",
                "file_key_name": f"models.{parents[0].split('.')[-1]}",
                "attached_node": parents[0],
            }
            if rtype == "test" and name.startswith("not_null")
            else {}
        ),
    }


def generate(n: int, side: str, seed: int = 7) -> tuple[dict[str, Any], dict[str, Any]]:
    """One side's manifest and run_results; both sides share the random draws, then diverge."""
    rng = random.Random(seed)
    counts = plan(n)
    prefect = side == "prefect"
    sections: dict[str, dict[str, Any]] = {k: {} for k in ("nodes", "sources", "exposures", "unit_tests")}
    disabled: dict[str, list[dict[str, Any]]] = {}
    results: list[dict[str, Any]] = []
    seeds = [f"seed.{P}.seed_{i}" for i in range(counts["seed"])]
    sources = [f"source.{P}.raw.table_{i}" for i in range(counts["source"])]
    for i, uid in enumerate(seeds):
        node = _node(uid, "seed", f"seed_{i}", [], ["raw"], "seed", "")
        if prefect and i < 20:  # disabled in Prefect's project
            disabled[uid] = [{**node, "config": {**node["config"], "enabled": False}}]
        else:
            sections["nodes"][uid] = node
    for i, uid in enumerate(sources):
        sections["sources"][uid] = {**_node(uid, "source", f"table_{i}", [], [], "", ""), "source_name": "raw"}
    models: list[str] = []
    status_of: dict[str, str] = {}
    for i in range(counts["model"]):
        name = f"model_{i}"
        uid = f"model.{P}.{name}"
        pool = models[-400:] if models and rng.random() < 0.8 else seeds + sources[:200]
        parents = rng.sample(pool, k=min(len(pool), rng.randint(1, 3)))
        weekly = i % 20 == 7
        materialized = "ephemeral" if i % 20 == 3 else "table"
        if prefect and i % 300 == 11:
            materialized = "ephemeral"  # made ephemeral in Prefect's project
        added, removed = i % 120 == 5, i % 120 == 65
        if (added and not prefect) or (removed and prefect):
            models.append(uid)
            continue
        node = _node(
            uid,
            "model",
            name,
            parents,
            ["weekly" if weekly else "daily"],
            materialized,
            SQL.format(parent=parents[0].split(".")[-1]),
        )
        if prefect and i % 30 == 13:
            node["checksum"] = {"name": "sha256", "checksum": "f" * 64}  # changed code
        sections["nodes"][uid] = node
        models.append(uid)
    for i in range(counts["test"]):
        target = models[rng.randrange(len(models))]
        uid = f"test.{P}.not_null_{target.split('.')[-1]}_c{i}.{i:010x}"
        parents = [target] if i % 10 else [target, models[rng.randrange(len(models))]]
        if any(p not in sections["nodes"] for p in parents):
            continue
        name = uid.split(".")[2] if i % 33 else f"assert_singular_{i}"
        sections["nodes"][uid] = _node(uid, "test", name, parents, [], "test", "select 1 where false")
    for i in range(counts["unit_test"]):
        target = models[(i * 7) % len(models)]
        if target in sections["nodes"]:
            uid = f"unit_test.{P}.{target.split('.')[-1]}.ut_{i}"
            sections["unit_tests"][uid] = {
                **_node(uid, "unit_test", f"ut_{i}", [target], [], "", ""),
                "checksum": f"{i:064x}",
            }
    for i in range(counts["snapshot"]):
        uid = f"snapshot.{P}.snp_{i}"
        sections["nodes"][uid] = _node(
            uid, "snapshot", f"snp_{i}", [sources[i % len(sources)]], ["daily"], "snapshot", SQL
        )
    for i in range(counts["exposure"]):
        uid = f"exposure.{P}.dash_{i}"
        sections["exposures"][uid] = _node(uid, "exposure", f"dash_{i}", [models[i * 11 % len(models)]], [], "", "")
    parent_map = {u: list(d["depends_on"]["nodes"]) for s in sections.values() for u, d in s.items()}
    child_map: dict[str, list[str]] = {u: [] for u in parent_map}
    for u, ps in parent_map.items():
        for p in ps:
            child_map.setdefault(p, []).append(u)
    # a few failures in the last layer of models (as in a real incident), their tests and children skipped
    late = models[int(len(models) * 0.9) :]
    failing = {m for k, m in enumerate(late) if k % 60 == 40 and m in sections["nodes"]} if prefect else set()
    # what a `dbt build` (Prefect) or `dbt build --exclude tag:weekly` (dbt Cloud) executes, in order
    for section in ("nodes", "unit_tests", "exposures"):
        for uid, d in sections[section].items():
            rtype = d["resource_type"]
            if d["config"].get("materialized") == "ephemeral" or (rtype == "exposure" and not prefect):
                continue
            if not prefect and _excluded_weekly(d, sections["nodes"]):
                continue
            upstream_failed = any(status_of.get(p) in ("error", "skipped") for p in d["depends_on"]["nodes"])
            status = (
                "skipped"
                if upstream_failed
                else "error"
                if uid in failing
                else ("pass" if rtype in ("test", "unit_test") else "no-op" if rtype == "exposure" else "success")
            )
            status_of[uid] = status
            results.append(_result(uid, status, d.get("compiled_code", "")))
    version = "1.11.2" if prefect else "1.9.4"
    manifest = {
        "metadata": {
            "dbt_schema_version": SCHEMA.format(kind="manifest", version=12),
            "dbt_version": version,
            "generated_at": "2026-11-20T06:00:00Z",
            "invocation_id": side,
            "project_name": P,
            "adapter_type": "snowflake",
            "env": {},
        },
        **sections,
        "macros": {
            f"macro.dbt.m_{i}": {
                "name": f"m_{i}",
                "resource_type": "macro",
                "package_name": "dbt",
                "macro_sql": "{% macro m() %}" + "select 1;\n" * 40 + "{% endmacro %}",
                "depends_on": {"macros": []},
                "description": "",
                "meta": {},
                "arguments": [],
            }
            for i in range(1500)
        },
        "docs": {},
        "metrics": {},
        "groups": {},
        "selectors": {},
        "disabled": disabled,
        "parent_map": parent_map,
        "child_map": child_map,
        "group_map": {},
        "saved_queries": {},
        "semantic_models": {},
    }
    args = {
        "which": "build",
        "select": [],
        "exclude": [] if prefect else ["tag:weekly"],
        "indirect_selection": "eager",
        "resource_types": [],
        "invocation_command": "dbt build",
    }
    run_results = {
        "metadata": {
            "dbt_schema_version": SCHEMA.format(kind="run-results", version=6),
            "dbt_version": version,
            "generated_at": "2026-11-20T06:30:00Z",
        },
        "results": results,
        "elapsed_time": 1800.0,
        "args": args,
    }
    return manifest, run_results


def _excluded_weekly(node: dict[str, Any], nodes: dict[str, Any]) -> bool:
    """`--exclude tag:weekly`: the weekly models and (eager indirect selection) the tests on them."""
    if "weekly" in node["tags"]:
        return True
    tested = node["depends_on"]["nodes"] if node["resource_type"] in ("test", "unit_test") else []
    return any("weekly" in nodes.get(p, {}).get("tags", []) for p in tested)


def _result(uid: str, status: str, code: str) -> dict[str, Any]:
    message = {"error": f"Database Error in {uid}: division by zero", "skipped": None}.get(status, "SUCCESS 1")
    stamp = "2026-11-20T06:01:00.000000Z"
    return {
        "status": status,
        "timing": [
            {"name": "compile", "started_at": stamp, "completed_at": stamp},
            {"name": "execute", "started_at": stamp, "completed_at": stamp},
        ],
        "thread_id": "Thread-3 (worker)",
        "execution_time": 1.25,
        "adapter_response": {"_message": "SUCCESS 1", "code": "SUCCESS", "rows_affected": 1, "query_id": "01b2"},
        "message": message,
        "failures": 0 if status == "pass" else None,
        "unique_id": uid,
        "compiled": True,
        "compiled_code": code,
        "relation_name": None,
        "batch_results": None,
    }


def write(folder: Path, n: int) -> None:
    import orjson

    cloud = folder / "cloud"
    run = folder / "runs" / "3f1e6f7a-0b5c-4d8e-9f10-111213141516"
    for side, step in (("cloud", cloud), ("prefect", run / "01-build")):
        manifest, results = generate(n, side)
        step.mkdir(parents=True, exist_ok=True)
        (step / "manifest.json").write_bytes(orjson.dumps(manifest))
        (step / "run_results.json").write_bytes(orjson.dumps(results))
        if side == "prefect":
            docs = run / "02-docs-generate"
            docs.mkdir()
            shutil.copy(step / "manifest.json", docs / "manifest.json")
            everything = [_result(u, "success", "") for u in manifest["nodes"]]
            (docs / "run_results.json").write_bytes(
                orjson.dumps({**results, "results": everything, "args": {"which": "generate"}})
            )
            steps = [
                {"command": "build", "folder": "01-build"},
                {"command": "docs generate", "folder": "02-docs-generate"},
            ]
            (run / "run.json").write_text(json.dumps({"flow_run_id": run.name, "project": P, "steps": steps}))


def measure(folder: Path) -> tuple[float, float, dict[str, Any]]:
    from dbtflow.dbt._artifacts import no_gc
    from dbtflow.parity._compare import compare
    from dbtflow.parity._load import load_artifact_set
    from dbtflow.parity._report import report_json, report_markdown

    start, cpu = time.perf_counter(), time.process_time()
    with no_gc():  # as `dbtflow parity` runs it
        cloud = load_artifact_set(folder / "cloud", "dbt Cloud")
        prefect = load_artifact_set(folder / "runs" / "3f1e6f7a-0b5c-4d8e-9f10-111213141516", "Prefect")
        report = compare(cloud, prefect)
        markdown = report_markdown(report)
        data = report_json(report)
        text = json.dumps(data)
        del cloud, prefect, report
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert markdown and text
    return seconds, cpu, data


def check(data: dict[str, Any]) -> list[str]:
    """Every planted kind of difference found, with its reason; nothing unexplained but the failures."""
    reasons: dict[str, int] = {}
    for d in data["differences"]:
        reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
    wanted = (
        "selection",
        "added",
        "removed",
        "disabled",
        "changed_code",
        "ephemeral",
        "dbt_version",
        "upstream",
        "status",
    )
    problems = [f"no difference with reason {r}" for r in wanted if not reasons.get(r)]
    problems += [f"unexpected reason unexplained x{reasons['unexplained']}"] if reasons.get("unexplained") else []
    used = [s["folder"] for s in data["prefect"]["steps"] if s["used"]]
    problems += [] if used == ["01-build"] else [f"used Prefect steps {used}, expected 01-build"]
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="generate into (and keep) this folder")
    parser.add_argument("--generate-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate_only:
        write(args.generate_only, args.nodes)
        return 0
    folder = args.keep or Path(tempfile.mkdtemp(prefix="dbtflow-bench-parity-"))
    try:
        if not (folder / "cloud" / "manifest.json").exists():
            subprocess.run(
                [sys.executable, __file__, "--nodes", str(args.nodes), "--generate-only", str(folder)], check=True
            )
        size = sum(p.stat().st_size for p in folder.rglob("*.json")) / 1e6
        print(f"generated {args.nodes} nodes per side in {folder} ({size:.0f} MB of JSON)", flush=True)
        times = []
        for round_ in range(args.repeat):
            seconds, cpu, data = measure(folder)
            times.append(seconds)
            print(f"round {round_ + 1}: {seconds:.2f} s wall, {cpu:.2f} s CPU, {data['counts']}", flush=True)
        problems = check(data)
        if problems:
            print("WRONG ANSWER: " + "; ".join(problems))
            return 1
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"RESULT nodes={args.nodes} seconds={statistics.median(times):.2f} peak_rss_mb={peak:.0f}")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
