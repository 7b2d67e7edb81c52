"""Durable runs: what the flow does with the run store at its start and at its end.

Contract
- `open_checked(request, run_id)` opens the request's run store and probes it (a small write
  and read-back of `<run-id>/started.json`) before dbt starts: `StoreError`, one line, when it
  cannot be used.
- `forget(store, run_id)` removes that probe record again when the run never takes its slot
  (`on_overlap="cancel"`, or a timeout while waiting): such a run is not listed as incomplete.
- `store_state(request, store, parameters, project)` turns `state="latest-success[:target]"`
  into a temporary folder holding the manifest of the newest successful complete run of that
  target (the request's own target when none is named) and returns the request rebuilt on it,
  plus that folder (the caller removes it). Other requests are returned as they are.
- `restore_attempt(store, run_id, folder)`: a flow retry on a fresh worker (no local run.json)
  gets the run's files back from the store, so `attempts.plan_attempt` resumes from the failure
  as it does on the same worker.
- `keep(store, folder, run_id, record)` uploads the run (see `runstore.upload_run`) and returns
  the line the summary carries: where the run is stored, or why the upload failed and where the
  local copy is. With the local default store it only writes the completion marker and returns
  None (the summary already names the folder).

Pitfalls
- The probe runs before the target's slot is taken: wrong credentials fail at once instead of
  after a wait for another run.
- A run's final state is dbt's own: a failed upload is a warning in the log and the summary.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from prefect.logging import get_run_logger

from dbtflow.dbt._project import Project
from dbtflow.errors import UserError
from dbtflow.run._parameters import STORE_STATE
from dbtflow.run._request import RunRequest, build_request
from dbtflow.run._storage import FolderStore, Store, StoreError, fetch, one_line, open_store, probe, resolve, upload_run


def open_checked(request: RunRequest, run_id: str) -> Store:
    store = open_store(request.run_storage)
    probe(store, run_id, {"project": request.project.name, "target": request.target})
    return store


def forget(store: Store, run_id: str) -> None:
    """Remove what `open_checked` wrote for a run that never took its slot (cancelled, or timed out waiting)."""
    try:
        store.delete(store.find(f"{run_id}/"))
    except Exception as exc:  # a leftover started record is listed as incomplete; nothing else depends on it
        get_run_logger().warning(
            "could not remove the started record of %s from %s: %s", run_id, store.where, one_line(exc)
        )


def store_state(
    request: RunRequest, store: Store, parameters: dict[str, Any], project: Project
) -> tuple[RunRequest, Path | None]:
    value = parameters.get("state")
    if not isinstance(value, str) or not STORE_STATE.match(value):
        return request, None
    target = value.partition(":")[2] or request.target
    run = resolve(store, f"latest-success:{target}")
    folder = Path(tempfile.mkdtemp(prefix="dbtflow-state-"))
    try:
        fetch(store, run.run_id, folder / "run", only=["/manifest.json"])
        manifests = sorted((folder / "run").glob("*/manifest.json"))
        if not manifests:
            raise StoreError(f"state {value!r}: run {run.run_id} in {store.where} kept no manifest.json")
        shutil.copy2(manifests[-1], folder / "manifest.json")
        shutil.rmtree(folder / "run")
        return build_request(project, **{**parameters, "state": str(folder)}), folder
    except UserError:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise StoreError(f"state {value!r}: cannot fetch run {run.run_id} from {store.where}: {exc}") from None


def restore_attempt(store: Store, run_id: str, folder: Path) -> bool:
    """Fetch a retried run's earlier attempt into `folder` when this worker has none of it."""
    if (folder / "run.json").exists() or isinstance(store, FolderStore):
        return False
    fetch(store, run_id, folder)
    return (folder / "run.json").exists()


def keep(store: Store, folder: Path, run_id: str, record: dict[str, Any]) -> tuple[str | None, str | None]:
    """Upload the run; returns (the summary's line, a warning when the upload failed)."""
    marker = {k: record.get(k) for k in ("project", "target", "status", "message", "attempt")}
    upload = upload_run(store, folder, run_id, marker)
    if isinstance(store, FolderStore) and upload.ok:
        return None, None
    if upload.ok:
        return f"Stored in the run store `{upload.where}` (`dbtflow runs show {run_id}`).", None
    warning = (
        f"could not upload the run to the run store {store.where!r}: {upload.error}; the local copy is kept in {folder}"
    )
    return f"⚠️ Not stored: {warning}.", warning
