"""Artifacts: dbt's JSON files read into one small model, and kept per flow run.

Contract
- `read_step(folder)` reads run_results.json (schema v4-v6) and, when present, manifest.json
  (v10-v12) or sources.json into `StepArtifacts`: one `NodeResult` per executed node with its
  resource type, status, message, timings and compiled-SQL path, plus the manifest's nodes
  (enabled and disabled), parent map and selectors. Only fields that exist in every supported
  version are used.
- `read_step(folder, strict=True)` and `step_from_json(manifest, run_results)` are the checked
  entry points (parity uses them): both files are required and must be JSON objects of a
  supported schema version, else `ArtifactError` (a `UserError`: one line naming the file, what
  is wrong and what to do). Documents may be paths, bytes, text or already-parsed dicts (e.g.
  downloaded from the dbt Cloud API).
- `RunStore` owns one run's folder (default `.dbtflow/runs/<flow-run-id>/`, root from
  `DBTFLOW_RUNS_DIR`, see `runs_root()`): `run.json` (the request and each step's outcome),
  `dbt.log`, and one sub-folder per step (`01-build/`, ...) with the step's manifest,
  run_results, sources, catalog and the compiled SQL of its failed nodes. Later steps never
  overwrite earlier ones.

Pitfalls
- `dbt compile` and `dbt docs generate` write run_results with every node `success`; callers
  that want what was *built* use the step whose `builds` is true (see `dbtflow.dbt._commands.BUILDING`).
- Ephemeral models never appear in run_results; tests have `relation_name: null`; generic
  tests have an empty checksum (`{"name": "none"}`), so a checksum is `None` for them.
- `source freshness` writes sources.json, not run_results.json.
- Run_results v4 (dbt 1.0) args have no `select`/`exclude` when none were given; dbt < 1.8 does
  not list project hooks (`operation.*`) in run_results.
- A 20,000-node manifest is ~100 MB of JSON: it is parsed with orjson when available (Prefect
  depends on it) and only the small model is kept, so the parsed document can be freed.
"""

from __future__ import annotations

import gc
import json
import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dbtflow.errors import UserError
from dbtflow.settings import Settings


def _stdlib_loads(data: bytes | str) -> Any:
    return json.loads(data)


_loads: Callable[[bytes | str], Any]
try:
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - orjson comes with Prefect
    _loads = _stdlib_loads

ARTIFACT_FILES = ("manifest.json", "run_results.json", "sources.json", "catalog.json", "index.html")
FAILED = frozenset({"error", "fail", "runtime error"})
# The schema versions dbtflow reads: manifest v10-v12 (dbt 1.6-1.11), run_results v4-v6 (dbt 1.0-1.11).
SUPPORTED_SCHEMAS = {"manifest": range(10, 13), "run-results": range(4, 7)}
_SCHEMA = re.compile(r"/(manifest|run-results|sources|catalog)/v(\d+)\.json")
# Manifest sections whose entries are graph members (selectable, in parent_map).
_SECTIONS = ("nodes", "sources", "unit_tests", "exposures", "metrics", "semantic_models", "saved_queries", "functions")

Document = Path | bytes | str | Mapping[str, Any]


class ArtifactError(UserError):
    """An artifact that cannot be read: missing, not JSON, truncated, or of an unsupported version."""


def runs_root() -> Path:
    """Where run folders are kept: DBTFLOW_RUNS_DIR, else `.dbtflow/runs` in the current folder."""
    return Settings.from_env().runs_dir


@dataclass(slots=True)
class ManifestNode:
    """One manifest entry (node, source, exposure, unit test, ...). Read-only by convention: not
    frozen, because a frozen dataclass costs 3x to build and a large manifest has 20,000+ of them."""

    unique_id: str
    resource_type: str
    name: str
    materialized: str | None
    checksum: str | None
    relation_name: str | None
    compiled_path: str | None
    original_file_path: str | None
    tags: tuple[str, ...] = ()
    fqn: tuple[str, ...] = ()
    package_name: str | None = None
    depends_on: tuple[str, ...] = ()
    source_name: str | None = None  # sources only
    test_name: str | None = None  # generic tests: the test macro's name (not_null, ...)
    version: str | None = None
    enabled: bool = True
    config: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(slots=True)
class NodeResult:
    """One executed node from run_results. Read-only by convention (not frozen: see ManifestNode)."""

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
    disabled: dict[str, ManifestNode] = field(default_factory=dict)
    selectors: dict[str, Any] = field(default_factory=dict)
    manifest_schema: int | None = None
    run_results_schema: int | None = None
    manifest_dbt_version: str | None = None
    project_name: str | None = None  # manifest metadata (dbt >= 1.8)


@dataclass
class _Manifest:
    nodes: dict[str, ManifestNode]
    disabled: dict[str, ManifestNode]
    parent_map: dict[str, list[str]]
    selectors: dict[str, Any]
    schema: int | None
    dbt_version: str | None
    project_name: str | None


def read_step(folder: Path, *, strict: bool = False) -> StepArtifacts:
    """Read one step's artifacts; a folder without run_results/sources yields no results.

    With `strict`, manifest.json and run_results.json are both required and checked (see
    `step_from_json`); without it, what is there is read as it is (the flow's own store).

    Args:
        folder: the step's folder.
        strict: require and check both files.

    Returns:
        The step's manifest nodes, results and args, in one small model for every artifact version.
    """
    if strict:
        return step_from_json(folder / "manifest.json", folder / "run_results.json", folder=folder)
    raw = _load(folder / "manifest.json")
    manifest = _read_manifest(raw) if raw else None
    del raw
    run_results = _load(folder / "run_results.json") or _load(folder / "sources.json") or {}
    return _step(folder, manifest, run_results, None)


def step_from_json(manifest: Document | None, run_results: Document, *, folder: Path | None = None) -> StepArtifacts:
    """A step from its manifest and run_results, each a path, JSON bytes/text or a parsed dict.

    Raises `ArtifactError` when either is missing, not JSON, not that artifact, or of a schema
    version outside `SUPPORTED_SCHEMAS`. The manifest is reduced to the model before the
    run_results are parsed, so only one large document is in memory at a time. With
    `manifest=None` only the results are read (node types then come from the unique_ids).
    """
    source = manifest if manifest is not None else run_results
    where = folder or (source.parent if isinstance(source, Path) else Path("."))
    with no_gc():  # the parsed documents are freed before the GC runs again: it never scans them
        parsed = _manifest_of(manifest) if manifest is not None else None
        results_doc, results_schema = parse_artifact(run_results, "run-results")
        try:
            step = _step(where, parsed, results_doc, results_schema)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            name = run_results if isinstance(run_results, Path) else "the run-results document"
            raise ArtifactError(
                f"{name} has a malformed result ({type(exc).__name__}: {exc}); fetch it again"
            ) from None
        del results_doc
    return step


def _manifest_of(manifest: Document) -> _Manifest:
    doc, schema = parse_artifact(manifest, "manifest")
    try:
        return _read_manifest(doc, schema)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        name = manifest if isinstance(manifest, Path) else "the manifest document"
        raise ArtifactError(f"{name} has a malformed node ({type(exc).__name__}: {exc}); fetch it again") from None


def parse_artifact(document: Document, kind: str) -> tuple[dict[str, Any], int]:
    """One artifact as a dict and its schema version; `ArtifactError` (one line) when it is not usable."""
    name = str(document) if isinstance(document, Path) else f"the {kind} document"
    if isinstance(document, Path):
        if not document.is_file():
            raise ArtifactError(
                f"{document} not found: give the folder of a dbt step with manifest.json and run_results.json"
            )
        document = document.read_bytes()
    if isinstance(document, (bytes, str)):
        if not document.strip():
            raise ArtifactError(f"{name} is empty: download or copy the artifact again")
        try:
            with no_gc():
                document = _loads(document)
        except ValueError as exc:
            detail = " ".join(str(exc).split())[:120]
            raise ArtifactError(f"{name} is not valid JSON ({detail}); it may be truncated: fetch it again") from None
    if not isinstance(document, Mapping):
        raise ArtifactError(f"{name} is not a dbt {kind} artifact (a JSON object was expected)")
    schema_url = str((document.get("metadata") or {}).get("dbt_schema_version") or "")
    found = _SCHEMA.search(schema_url)
    if not found or found.group(1) != kind:
        raise ArtifactError(f"{name} is not a dbt {kind} artifact (metadata.dbt_schema_version is {schema_url!r})")
    version, supported = int(found.group(2)), SUPPORTED_SCHEMAS[kind]
    if version not in supported:
        span = f"v{supported.start}-v{supported.stop - 1}"
        raise ArtifactError(f"{name} is {kind} v{version}; dbtflow reads {kind} {span} (dbt 1.0-1.11)")
    return dict(document), version


@contextmanager
def no_gc() -> Iterator[None]:
    """Pause the cyclic GC while millions of acyclic JSON objects are allocated (3x faster for a big manifest)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _step(
    folder: Path, manifest: _Manifest | None, run_results: Mapping[str, Any], results_schema: int | None
) -> StepArtifacts:
    nodes = manifest.nodes if manifest else {}
    metadata = run_results.get("metadata") or {}
    if results_schema is None:
        found = _SCHEMA.search(str(metadata.get("dbt_schema_version") or ""))
        results_schema = int(found.group(2)) if found and found.group(1) == "run-results" else None
    args = run_results.get("args") or {}
    return StepArtifacts(
        folder=folder,
        command=args.get("which"),
        args=args,
        dbt_version=metadata.get("dbt_version") or (manifest.dbt_version if manifest else None),
        elapsed_time=float(run_results.get("elapsed_time") or 0.0),
        results=[_node_result(r, nodes) for r in run_results.get("results") or []],
        nodes=nodes,
        parent_map=manifest.parent_map if manifest else {},
        disabled=manifest.disabled if manifest else {},
        selectors=manifest.selectors if manifest else {},
        manifest_schema=manifest.schema if manifest else None,
        run_results_schema=results_schema,
        manifest_dbt_version=manifest.dbt_version if manifest else None,
        project_name=manifest.project_name if manifest else None,
    )


def _load(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = _loads(path.read_bytes())
    return data if isinstance(data, dict) else None


def _read_manifest(manifest: Mapping[str, Any], schema: int | None = None) -> _Manifest:
    metadata = manifest.get("metadata") or {}
    if schema is None:
        found = _SCHEMA.search(str(metadata.get("dbt_schema_version") or ""))
        schema = int(found.group(2)) if found else None
    nodes: dict[str, ManifestNode] = {}
    for section in _SECTIONS:
        for uid, node in (manifest.get(section) or {}).items():
            nodes[uid] = _manifest_node(uid, node)
    disabled: dict[str, ManifestNode] = {}
    for uid, versions in (manifest.get("disabled") or {}).items():
        # one entry per disabled definition (a node can be disabled in several places); the first names it
        first = versions[0] if isinstance(versions, list) and versions else versions
        if isinstance(first, Mapping):
            disabled[uid] = _manifest_node(uid, first, enabled=False)
    return _Manifest(
        nodes=nodes,
        disabled=disabled,
        parent_map=manifest.get("parent_map") or {},
        selectors=manifest.get("selectors") or {},
        schema=schema,
        dbt_version=metadata.get("dbt_version"),
        project_name=metadata.get("project_name"),
    )


def _manifest_node(uid: str, node: Mapping[str, Any], *, enabled: bool = True) -> ManifestNode:
    # hot path (20,000+ calls on a large manifest): plain dict checks, one .get per field
    get = node.get
    config = get("config") or {}
    checksum = get("checksum")
    if type(checksum) is dict:  # generic tests have {"name": "none", "checksum": ""}; unit tests a bare hash
        checksum = checksum.get("checksum") if checksum.get("name") != "none" else None
    depends_on = get("depends_on")
    test_metadata = get("test_metadata")
    version = get("version")
    return ManifestNode(
        uid,
        get("resource_type") or uid.split(".", 1)[0],
        get("name") or uid.rsplit(".", 1)[-1],
        config.get("materialized"),
        checksum or None,
        get("relation_name"),
        get("compiled_path"),
        get("original_file_path"),
        tuple(get("tags") or ()),
        tuple(get("fqn") or ()),
        get("package_name"),
        tuple(depends_on.get("nodes") or ()) if type(depends_on) is dict else (),
        get("source_name"),
        test_metadata.get("name") if type(test_metadata) is dict else None,
        None if version is None else str(version),
        enabled and config.get("enabled", True) is not False,
        config,
    )


def _node_result(raw: dict[str, Any], nodes: dict[str, ManifestNode]) -> NodeResult:
    uid = raw["unique_id"]
    node = nodes.get(uid)
    timing = raw.get("timing") or ()
    started = completed = None
    for entry in timing:  # [compile, execute]: the first start, execute's end (else compile's)
        started = started or entry.get("started_at")
        if entry.get("name") in ("execute", "compile") and (entry.get("name") == "execute" or completed is None):
            completed = entry.get("completed_at")
    get = raw.get
    return NodeResult(
        uid,
        node.resource_type if node else uid.split(".", 1)[0],
        node.name if node else uid.rsplit(".", 1)[-1],
        str(get("status")),
        get("message") or get("error"),
        float(get("execution_time") or 0.0),
        started,
        completed,
        get("failures"),
        node.compiled_path if node else None,
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
        try:
            tmp.write_text(json.dumps(data, indent=2, default=_jsonable))
        except OSError:  # a full disk: no half-written file left behind
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(path)
        return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return str(value)
