"""Artifacts: dbt's JSON files read into one small model, and kept per flow run.

Contract
- `read_step(folder)` reads run_results.json (schema v4-v6) and, when present, manifest.json
  (v10-v12) or sources.json into `StepArtifacts`: one `NodeResult` per executed node with its
  resource type, status, message, timings and compiled-SQL path, plus the manifest's nodes and
  parent map. Only fields that exist in every supported version are used.
- `RunStore` owns one run's folder (default `.dbtflow/runs/<flow-run-id>/`, root from
  `DBTFLOW_RUNS_DIR`): `run.json` (the request and each step's outcome), `dbt.log`, and one
  sub-folder per step (`01-build/`, ...) with the step's manifest, run_results, sources,
  catalog and the compiled SQL of its failed nodes. Later steps never overwrite earlier ones.

Pitfalls
- `dbt compile` and `dbt docs generate` write run_results with every node `success`; callers
  that want what was *built* use the step whose `builds` is true (see `request.BUILDING`).
- Ephemeral models never appear in run_results; tests have `relation_name: null`.
- `source freshness` writes sources.json, not run_results.json.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ARTIFACT_FILES = ("manifest.json", "run_results.json", "sources.json", "catalog.json", "index.html")
FAILED = frozenset({"error", "fail", "runtime error"})


@dataclass(frozen=True)
class ManifestNode:
    unique_id: str
    resource_type: str
    name: str
    materialized: str | None
    checksum: str | None
    relation_name: str | None
    compiled_path: str | None
    original_file_path: str | None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeResult:
    unique_id: str
    resource_type: str
    name: str
    status: str
    message: str | None
    execution_time: float
    started_at: str | None
    completed_at: str | None
    failures: int | None = None
    compiled_path: str | None = None

    @property
    def failed(self) -> bool:
        return self.status in FAILED


@dataclass
class StepArtifacts:
    folder: Path
    command: str | None
    args: dict[str, Any]
    dbt_version: str | None
    elapsed_time: float
    results: list[NodeResult]
    nodes: dict[str, ManifestNode] = field(default_factory=dict)
    parent_map: dict[str, list[str]] = field(default_factory=dict)


def read_step(folder: Path) -> StepArtifacts:
    """Read one step's artifacts; a folder without run_results/sources yields no results."""
    manifest = _load(folder / "manifest.json")
    nodes = _manifest_nodes(manifest) if manifest else {}
    run_results = _load(folder / "run_results.json") or _load(folder / "sources.json") or {}
    metadata = run_results.get("metadata") or (manifest or {}).get("metadata") or {}
    results = [_node_result(r, nodes) for r in run_results.get("results") or []]
    return StepArtifacts(
        folder=folder,
        command=(run_results.get("args") or {}).get("which"),
        args=run_results.get("args") or {},
        dbt_version=metadata.get("dbt_version"),
        elapsed_time=float(run_results.get("elapsed_time") or 0.0),
        results=results,
        nodes=nodes,
        parent_map=(manifest or {}).get("parent_map") or {},
    )


def _load(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else None


def _manifest_nodes(manifest: dict[str, Any]) -> dict[str, ManifestNode]:
    nodes: dict[str, ManifestNode] = {}
    for section in ("nodes", "sources", "unit_tests", "exposures"):
        for uid, node in (manifest.get(section) or {}).items():
            config = node.get("config") or {}
            nodes[uid] = ManifestNode(
                unique_id=uid,
                resource_type=node.get("resource_type") or uid.split(".")[0],
                name=node.get("name") or uid.rsplit(".", 1)[-1],
                materialized=config.get("materialized"),
                checksum=(node.get("checksum") or {}).get("checksum"),
                relation_name=node.get("relation_name"),
                compiled_path=node.get("compiled_path"),
                original_file_path=node.get("original_file_path"),
                tags=tuple(node.get("tags") or ()),
            )
    return nodes


def _node_result(raw: dict[str, Any], nodes: dict[str, ManifestNode]) -> NodeResult:
    uid = raw["unique_id"]
    node = nodes.get(uid)
    timing = {t.get("name"): t for t in raw.get("timing") or []}
    execute = timing.get("execute") or timing.get("compile") or {}
    first = (raw.get("timing") or [{}])[0]
    return NodeResult(
        unique_id=uid,
        resource_type=node.resource_type if node else uid.split(".")[0],
        name=node.name if node else uid.rsplit(".", 1)[-1],
        status=str(raw.get("status")),
        message=raw.get("message") or raw.get("error"),
        execution_time=float(raw.get("execution_time") or 0.0),
        started_at=first.get("started_at"),
        completed_at=execute.get("completed_at"),
        failures=raw.get("failures"),
        compiled_path=node.compiled_path if node else None,
    )


class RunStore:
    """One flow run's artifact folder."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.folder = (root / run_id).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)

    def step_folder(self, index: int, command: str) -> Path:
        return self.folder / f"{index + 1:02d}-{command.replace(' ', '-')}"

    def keep_step(self, index: int, command: str, target_path: Path) -> StepArtifacts:
        """Copy a finished step's artifacts (and its failed nodes' compiled SQL) out of target/."""
        dest = self.step_folder(index, command)
        dest.mkdir(parents=True, exist_ok=True)
        for name in ARTIFACT_FILES:
            source = target_path / name
            if source.is_file():
                shutil.copy2(source, dest / name)
        step = read_step(dest)
        for result in step.results:
            if result.failed and result.compiled_path:
                self._keep_compiled(Path(result.compiled_path), target_path, dest)
        return step

    def _keep_compiled(self, compiled: Path, target_path: Path, dest: Path) -> None:
        """Copy target/compiled/<path> and, when dbt wrote one, target/run/<path> of a failed node."""
        relative = compiled.parts[compiled.parts.index("compiled") + 1 :] if "compiled" in compiled.parts else ()
        for kind in ("compiled", "run"):
            source = target_path.joinpath(kind, *relative)
            if relative and source.is_file():
                (dest / kind).joinpath(*relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, (dest / kind).joinpath(*relative))

    def write_json(self, name: str, data: Any) -> Path:
        path = self.folder / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=_jsonable))
        tmp.replace(path)
        return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return str(value)
