"""Run store: each flow run's artifacts kept where a stateless worker's next run (or a laptop) finds them.

Contract
- `open_store(slug)` returns a `Store`: with no slug (the flow's `run_storage`, else the env
  `DBTFLOW_RUN_STORAGE`, empty) the local runs folder (`artifacts.runs_root()`), else the
  Prefect storage block `Block.load(slug)` (`s3-bucket/dbtflow-runs`, `remote-file-system/x`,
  `local-file-system/x`), used only through the block's own interface: `write_path`,
  `read_path`, and for listing `list_objects` (prefect-aws S3Bucket) or the fsspec `filesystem`
  (RemoteFileSystem) or `basepath` (LocalFileSystem). A block that cannot list is refused.
- `probe(store, run_id)` writes `<run_id>/started.json` and reads it back before dbt starts; a
  store that cannot be written (wrong credentials, no bucket, unreachable) raises `StoreError`,
  one line naming the block and what to check.
- `upload_run(store, folder, run_id, summary)` copies every file of the run folder to
  `<run_id>/...` (run.json, summary.md, dbt.log, each step's manifest/run_results/sources/
  catalog and the compiled SQL of failed nodes), each write retried `ATTEMPTS` times, then
  writes the completion marker `<run_id>/complete.json` last. It never raises: it returns an
  `Upload` saying what happened; the local copy stays either way.
- Reading (no local folder needed): `list_runs` (newest first; a run without its marker is
  `complete=False`), `resolve(store, ref)` for `<id>`, `latest`, `latest:<target>`,
  `latest-success`, `latest-success:<target>` (only complete runs count as latest), `fetch`
  (a run, or only some of its files, into a folder), `prune(older_than)`.

Pitfalls
- The marker is written last and only when every other file was written: a run whose upload was
  cut, or whose worker died, has `started.json` and maybe some files, never `complete.json`, so
  `latest` never points at a half-uploaded run.
- Runs never share an object: every key is under the run's own flow-run id, so two runs at once
  (and a flow retry's second upload of the same run) need no lock; the marker is rewritten by
  each attempt.
- S3Bucket has no delete method: `prune` deletes through the client the block's own credentials
  hand out (`credentials.get_s3_client()`), the same way prefect-aws's `move_object` does.
- A store that is down costs, per object, ATTEMPTS tries times the block client's own retries
  (botocore's default: a few connection attempts with backoff, tens of seconds in all); the
  upload stops at the first object that still fails, so an outage delays the run's end once.
- Block errors are reduced to one line (`type: first line`); botocore's messages name the key id
  at most, never the secret, and the block's credentials are never written to the store.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from dbtflow.dbt._artifacts import runs_root
from dbtflow.errors import UserError
from dbtflow.settings import RUN_STORAGE

MARKER = "complete.json"
STARTED = "started.json"
ATTEMPTS = 3  # tries per object when uploading
BACKOFF_SECONDS = 1.0  # first wait between tries; doubles


class StoreError(UserError):
    """The run store cannot be used: one line naming it and what to check."""


def storage_slug(run_storage: str | None) -> str | None:
    """The run store's block slug: the parameter, else DBTFLOW_RUN_STORAGE, else None (the local folder)."""
    return (run_storage or os.environ.get(RUN_STORAGE) or "").strip() or None


class Store:
    """What dbtflow needs of a store: write, read, list and delete objects by key (`<run-id>/<path>`)."""

    where: str

    def write(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def read(self, key: str) -> bytes:
        raise NotImplementedError

    def find(self, prefix: str = "") -> list[str]:
        raise NotImplementedError

    def delete(self, keys: list[str]) -> None:
        raise NotImplementedError


class FolderStore(Store):
    """A folder on this machine (the default: the local runs folder)."""

    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().resolve()
        self.where = str(self.root)

    def write(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def find(self, prefix: str = "") -> list[str]:
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            (self.root / key).unlink(missing_ok=True)
        for run in {k.split("/", 1)[0] for k in keys}:
            shutil.rmtree(self.root / run, ignore_errors=True)


class BlockStore(Store):
    """A Prefect storage block, through its own interface."""

    def __init__(self, slug: str, block: Any) -> None:
        self.slug, self.block = slug, block
        self.where = slug
        if not (hasattr(block, "list_objects") or _is_remote(block) or _is_local(block)):
            raise StoreError(
                f"run_storage {slug!r}: a {type(block).__name__} block cannot list its files; "
                "use an s3-bucket, remote-file-system or local-file-system block"
            )

    def write(self, key: str, data: bytes) -> None:
        self.block.write_path(key, data)

    def read(self, key: str) -> bytes:
        return bytes(self.block.read_path(key))

    def find(self, prefix: str = "") -> list[str]:
        if hasattr(self.block, "list_objects"):  # prefect-aws S3Bucket (keys include its bucket_folder)
            folder = str(getattr(self.block, "bucket_folder", "") or "").strip("/")
            listed = [str(o["Key"]) for o in self.block.list_objects(prefix)]
            return sorted(_relative(k, folder) for k in listed if not k.endswith("/"))
        if _is_local(self.block):
            return FolderStore(Path(self.block.basepath or ".")).find(prefix)
        base = str(self.block._resolve_path(prefix)).rstrip("/")  # RemoteFileSystem: fsspec under its basepath
        root = str(self.block._resolve_path("")).rstrip("/")
        fs = self.block.filesystem
        found = fs.find(base) if fs.exists(base) else []
        root_path = fs._strip_protocol(root).rstrip("/")
        return sorted(_relative(fs._strip_protocol(p), root_path) for p in found)

    def delete(self, keys: list[str]) -> None:
        if hasattr(self.block, "list_objects"):
            folder = str(getattr(self.block, "bucket_folder", "") or "").strip("/")
            client = self.block.credentials.get_s3_client()
            for start in range(0, len(keys), 1000):
                chunk = [{"Key": f"{folder}/{k}" if folder else k} for k in keys[start : start + 1000]]
                client.delete_objects(Bucket=self.block.bucket_name, Delete={"Objects": chunk, "Quiet": True})
        elif _is_local(self.block):
            FolderStore(Path(self.block.basepath or ".")).delete(keys)
        else:
            for key in keys:
                self.block.filesystem.rm(str(self.block._resolve_path(key)))


def open_store(slug: str | None) -> Store:
    """The store named by `slug` (a block document slug), or the local runs folder when there is none."""
    if not slug:
        return FolderStore(runs_root())
    if slug.count("/") != 1 or not all(slug.split("/")):
        raise StoreError(f"run_storage {slug!r} is not a block slug; use <block-type>/<name>, e.g. s3-bucket/runs")
    # lazy: prefect loads when a store is opened; `dbtflow runs` imports this module at start-up
    from prefect.blocks.core import Block

    try:
        block = Block.load(slug)
    except (ValueError, KeyError) as exc:
        raise StoreError(
            f"run_storage {slug!r}: no such Prefect block ({one_line(exc)}); create it in the Prefect UI "
            "or with `prefect block create`, or leave run_storage empty to keep runs in the local folder"
        ) from None
    except Exception as exc:
        raise StoreError(f"run_storage {slug!r}: cannot load the block from Prefect: {one_line(exc)}") from None
    return BlockStore(slug, block)


def probe(store: Store, run_id: str, record: dict[str, Any]) -> None:
    """Write and read back `<run_id>/started.json` before dbt starts; StoreError when the store is unusable."""
    data = json.dumps({**record, "flow_run_id": run_id, "started_at": _now()}, indent=2).encode()
    try:
        store.write(f"{run_id}/{STARTED}", data)
        if store.read(f"{run_id}/{STARTED}") != data:
            raise OSError("what was read back differs from what was written")
    except Exception as exc:
        raise StoreError(
            f"run_storage {store.where!r} cannot be written ({one_line(exc)}); check the block's credentials, "
            "bucket and endpoint, or leave run_storage empty to keep runs in the local folder"
        ) from None


@dataclass
class Upload:
    where: str  # e.g. s3-bucket/dbtflow-runs:<run-id>/
    files: int = 0
    error: str | None = None  # why the upload stopped; the marker was not written then

    @property
    def ok(self) -> bool:
        return self.error is None


def upload_run(store: Store, folder: Path, run_id: str, marker: dict[str, Any]) -> Upload:
    """Copy the run folder to `<run_id>/` in the store, the completion marker last; never raises."""
    upload = Upload(f"{store.where}:{run_id}/")
    local = isinstance(store, FolderStore) and store.root == folder.parent.resolve()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MARKER and not p.name.endswith(".tmp"))
    try:
        if not local:
            for path in files:
                _retried(store.write, f"{run_id}/{path.relative_to(folder).as_posix()}", path.read_bytes())
                upload.files += 1
        names = [p.relative_to(folder).as_posix() for p in files]
        done = {**marker, "flow_run_id": run_id, "finished_at": _now(), "files": names}
        _retried(store.write, f"{run_id}/{MARKER}", json.dumps(done, indent=2).encode())
    except Exception as exc:
        upload.error = f"{one_line(exc)} (after {ATTEMPTS} tries)"
    return upload


def _retried(write: Any, key: str, data: bytes) -> None:
    wait = BACKOFF_SECONDS
    for attempt in range(1, ATTEMPTS + 1):
        try:
            write(key, data)
            return
        except Exception:
            if attempt == ATTEMPTS:
                raise
            time.sleep(wait)
            wait *= 2


@dataclass
class StoredRun:
    run_id: str
    complete: bool
    record: dict[str, Any] = field(default_factory=dict)  # the marker, else started.json

    @property
    def target(self) -> str | None:
        return self.record.get("target")

    @property
    def status(self) -> str:
        return str(self.record.get("status") or "") if self.complete else "incomplete"

    @property
    def when(self) -> str:
        return str(self.record.get("finished_at") or self.record.get("started_at") or "")


def list_runs(store: Store) -> list[StoredRun]:
    """Every run in the store, newest first; one without its completion marker is incomplete."""
    names: dict[str, set[str]] = {}
    for key in store.find():
        run, _, rest = key.partition("/")
        if rest:
            names.setdefault(run, set()).add(rest)
    runs = []
    for run_id, files in names.items():
        complete = MARKER in files
        if complete or STARTED in files:
            runs.append(StoredRun(run_id, complete, _read_json(store, f"{run_id}/{MARKER if complete else STARTED}")))
    return sorted(runs, key=lambda r: r.when, reverse=True)


def resolve(store: Store, ref: str) -> StoredRun:
    """`<flow-run-id>`, `latest[:target]` or `latest-success[:target]`: the newest complete (successful) run."""
    runs = list_runs(store)
    kind, _, target = ref.partition(":")
    if kind in ("latest", "latest-success"):
        found = [
            r
            for r in runs
            if r.complete and (not target or r.target == target) and (kind == "latest" or r.status == "completed")
        ]
        if not found:
            what = "successful complete" if kind == "latest-success" else "complete"
            of = f" of target {target!r}" if target else ""
            raise StoreError(f"no {what} run{of} in {store.where}; run one first, or pass a flow run id")
        return found[0]
    for run in runs:
        if run.run_id == ref:
            return run
    recent = ", ".join(r.run_id for r in runs[:5]) or "none"
    raise StoreError(f"no run {ref!r} in {store.where}; the latest are: {recent} (or pass latest)")


def fetch(store: Store, run_id: str, dest: Path, only: Iterable[str] | None = None) -> Path:
    """Download a run's files (or those whose path ends with one of `only`) into `dest`."""
    wanted = tuple(only) if only is not None else None
    dest.mkdir(parents=True, exist_ok=True)
    for key in store.find(f"{run_id}/"):
        relative = PurePosixPath(key).relative_to(run_id)
        if wanted is not None and not any(str(relative).endswith(w) for w in wanted):
            continue
        path = dest.joinpath(*relative.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(store.read(key))
    return dest


def prune(store: Store, older_than: timedelta, *, dry_run: bool = False) -> list[StoredRun]:
    """Delete the runs last written before now - older_than; returns them (newest first)."""
    cutoff = (datetime.now(UTC) - older_than).isoformat()
    old = [r for r in list_runs(store) if r.when and r.when < cutoff]
    if not dry_run:
        for run in old:
            store.delete(store.find(f"{run.run_id}/"))
    return old


def _read_json(store: Store, key: str) -> dict[str, Any]:
    try:
        data = json.loads(store.read(key))
    except Exception:
        return {}
    return data if isinstance(data, dict) else {}


def _relative(key: str, folder: str) -> str:
    key, folder = key.lstrip("/"), folder.strip("/")
    return key[len(folder) + 1 :] if folder and key.startswith(folder + "/") else key


def _is_local(block: Any) -> bool:
    from prefect.filesystems import LocalFileSystem  # lazy: see open_store

    return isinstance(block, LocalFileSystem)


def _is_remote(block: Any) -> bool:
    from prefect.filesystems import RemoteFileSystem  # lazy: see open_store

    return isinstance(block, RemoteFileSystem)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no detail"
    return f"{type(exc).__name__}: {text[:300]}"
