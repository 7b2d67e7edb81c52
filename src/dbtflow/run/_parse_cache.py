"""Partial-parse cache in the run store: a cold clone starts from the parse an earlier run made.

Contract
- `cache_key(request)` hashes what dbt's parse depends on: the dbt version, the target's adapter
  type, the target, the vars, the project's absolute path and the contents (and names) of every
  file of the project but its build outputs (target/, logs/, dbt_packages/, .duckdb/, .user.yml).
- `restore(store, request, target_path)`: when the target path has no partial_parse.msgpack and
  the store holds one under `_parse-cache/<key>/`, it is put there before dbt's parse, so dbt
  parses partially; returns what it did, for the log. `save(...)` stores the msgpack a run left
  when the store has none for its key. Both are best effort: a store error is a warning in the
  log, never a failed run, and never a wrong parse (a missing cache only means a full parse).
- Only for block stores: the local default store's runs already keep target/ between runs.

Pitfalls
- dbt's partial_parse.msgpack holds absolute paths (seeds' `root_path`, the project root): a
  cache made in another folder could report "nothing changed" and point dbt at files that are
  not there. The key includes the project's absolute path, so a clone at another path never
  gets it (the cost: a pool whose clones land in a new temporary folder each run always parses
  in full; a managed pool's clones land at the same path). The key also covers every file's
  contents, so a changed file is a different key: dbt never skips parsing a change.
- dbt checks its own validity too (vars, profile, env vars, version) and parses in full when
  they differ; the cache never makes dbt skip that check.
- Cache entries are not runs: `dbtflow runs list` and `prune` ignore them (no marker).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import dbt.version

from dbtflow.run._request import RunRequest
from dbtflow.run._storage import FolderStore, Store, one_line

MSGPACK = "partial_parse.msgpack"
PREFIX = "_parse-cache"
SKIP = frozenset({"target", "logs", "dbt_packages", ".duckdb", ".user.yml", "__pycache__", ".git"})
logger = logging.getLogger(__name__)


def cache_key(request: RunRequest) -> str:

    project = request.project
    vars_ = next((s.argv[s.argv.index("--vars") + 1] for s in request.steps if "--vars" in s.argv), "")
    parts = {
        "dbt": dbt.version.__version__,
        "adapter": str(project.output(request.target).get("type") or "unknown"),
        "target": request.target,
        "vars": vars_,
        "path": str(project.project_dir.resolve()),
        "files": _files_hash(project.project_dir),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def restore(store: Store, request: RunRequest, target_path: Path) -> str | None:
    if isinstance(store, FolderStore) or (target_path / MSGPACK).exists():
        return None
    key = cache_key(request)
    try:
        if f"{PREFIX}/{key}/{MSGPACK}" not in store.find(f"{PREFIX}/{key}/"):
            return f"no partial-parse cache for this project state in {store.where}: dbt parses in full"
        data = store.read(f"{PREFIX}/{key}/{MSGPACK}")
    except Exception as exc:
        logger.warning("could not read the partial-parse cache from %s: %s", store.where, one_line(exc))
        return None
    target_path.mkdir(parents=True, exist_ok=True)
    (target_path / MSGPACK).write_bytes(data)
    return f"partial-parse cache restored from {store.where} ({len(data)} bytes)"


def save(store: Store, request: RunRequest, target_path: Path) -> None:
    msgpack = target_path / MSGPACK
    if isinstance(store, FolderStore) or not msgpack.exists():
        return
    key = cache_key(request)
    try:
        if f"{PREFIX}/{key}/{MSGPACK}" not in store.find(f"{PREFIX}/{key}/"):
            store.write(f"{PREFIX}/{key}/{MSGPACK}", msgpack.read_bytes())
    except Exception as exc:
        logger.warning("could not store the partial-parse cache in %s: %s", store.where, one_line(exc))


def _files_hash(project_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(_project_files(project_dir)):
        digest.update(path.relative_to(project_dir).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _project_files(folder: Path) -> list[Path]:
    found = []
    for path in folder.iterdir():
        if path.name in SKIP:
            continue
        if path.is_dir():
            found += _project_files(path)
        elif path.is_file():
            found.append(path)
    return found
