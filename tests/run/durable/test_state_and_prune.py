"""The run store beyond one run: state from the newest successful run, runs at once, prune, other blocks."""

from __future__ import annotations

import contextvars
import json
import shutil
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dbtflow.run._flow import dbt_flow
from dbtflow.run._storage import FolderStore, list_runs, open_store, probe, prune, resolve, upload_run
from tests.run.durable.conftest import BUCKET, FOLDER, S3, STORE, dbtflow, fresh_clone


def run(project: Path, **params: Any) -> Any:
    return dbt_flow(project, name="run_dbt_wg_store_test")(**params, return_state=True)


def executed(folder: Path) -> dict[str, str]:
    results = json.loads((folder / "01-build" / "run_results.json").read_text())["results"]
    return {r["unique_id"]: r["status"] for r in results}


def descendants(manifest: dict[str, Any], uid: str) -> set[str]:
    found, todo = {uid}, [uid]
    while todo:
        for child in manifest["child_map"].get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def test_state_latest_success_defers_to_the_stored_run_on_a_fresh_clone(
    s3: S3, container: Path, tmp_path: Path
) -> None:
    built = run(container, target="local", run_storage=STORE)  # "prod": a full build, stored
    assert built.is_completed(), built.message
    prod_id = str(built.state_details.flow_run_id)

    clone = fresh_clone(tmp_path / "fresh")  # a new container; the warehouse (DuckDB file) outlives it
    shutil.copytree(container / ".duckdb", clone / ".duckdb", dirs_exist_ok=True)
    model = clone / "models" / "intermediate" / "int_months.sql"
    model.write_text(model.read_text() + "\n-- changed\n")
    state = run(
        clone, target="local", select="state:modified+", state="latest-success:local", defer=True, run_storage=STORE
    )
    assert state.is_completed(), state.message
    record = dbtflow("runs", "fetch", str(state.state_details.flow_run_id), "--to", str(tmp_path / "dev"),
                     "--run-storage", STORE)  # fmt: skip
    assert record.returncode == 0, record.stderr
    dbtflow("runs", "fetch", prod_id, "--to", str(tmp_path / "prod"), "--run-storage", STORE)
    manifest = json.loads((tmp_path / "prod" / "01-build" / "manifest.json").read_text())
    ran = executed(tmp_path / "dev")
    expected = {u for u in descendants(manifest, "model.dbt_williamgrant.int_months") if u.split(".")[0] != "exposure"}
    assert set(ran) - {u for u in ran if u.startswith("exposure.")} == expected  # only the change and its children
    assert all(status in ("success", "pass") for uid, status in ran.items() if not uid.startswith("exposure."))
    argv = json.loads((tmp_path / "dev" / "run.json").read_text())["steps"][0]["argv"]
    state_dir = argv[argv.index("--state") + 1]
    assert "--defer" in argv and not Path(state_dir).exists()  # a temporary folder, removed after the run

    none = run(clone, target="local", select="state:modified+", state="latest-success:prod", run_storage=STORE)
    assert none.is_failed() and "no successful complete run of target 'prod'" in none.message


def test_two_runs_at_once_then_prune_older_than_30_days(
    s3: S3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBTFLOW_RUNS_DIR", str(tmp_path / "runs"))
    clones = [fresh_clone(tmp_path / f"clone-{i}") for i in range(2)]
    states: list[Any] = [None, None]

    def one(i: int) -> None:
        states[i] = run(clones[i], target="local", select="int_months", run_storage=STORE)

    # each thread in this context: the session's Prefect server settings (else Prefect starts its own)
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(one, i)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    assert all(s is not None and s.is_completed() for s in states), states
    ids = [str(s.state_details.flow_run_id) for s in states]
    shutil.rmtree(tmp_path / "runs")
    store = open_store(STORE)
    stored = {r.run_id: r for r in list_runs(store)}
    for run_id in ids:  # each complete, with its own files
        assert stored[run_id].complete and stored[run_id].status == "completed"
        files = json.loads(store.read(f"{run_id}/complete.json"))["files"]
        assert "01-build/run_results.json" in files and "summary.md" in files

    # one of them from 40 days ago: prune takes it, and only it
    client = s3.client()
    key = f"{FOLDER}/{ids[0]}/complete.json"
    old = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    old["finished_at"] = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    client.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(old).encode())
    dry = dbtflow("runs", "prune", "--older-than", "30d", "--dry-run", "--run-storage", STORE)
    assert dry.returncode == 0 and f"would delete {ids[0]}" in dry.stdout and ids[1] not in dry.stdout
    assert any(k.startswith(f"{FOLDER}/{ids[0]}/") for k in s3.objects())
    pruned = dbtflow("runs", "prune", "--older-than", "30d", "--run-storage", STORE)
    assert pruned.returncode == 0, pruned.stderr
    assert f"deleted {ids[0]}" in pruned.stdout
    assert not any(k.startswith(f"{FOLDER}/{ids[0]}/") for k in s3.objects())
    assert any(k.startswith(f"{FOLDER}/{ids[1]}/complete.json") for k in s3.objects())
    bad = dbtflow("runs", "prune", "--older-than", "a month", "--run-storage", STORE)
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "error: --older-than 'a month' is not an age: pass e.g. 7d, 36h, 90m or 2w"
    )


@pytest.mark.parametrize("kind", ["remote-file-system", "local-file-system"])
def test_fsspec_and_local_blocks_work_as_run_stores(prefect_api: str, tmp_path: Path, kind: str) -> None:
    from prefect.filesystems import LocalFileSystem, RemoteFileSystem

    root = tmp_path / "bucket"
    block: RemoteFileSystem | LocalFileSystem = (
        RemoteFileSystem(basepath=f"memory://dbtflow-{tmp_path.name}/runs")  # fsspec's in-memory file system
        if kind == "remote-file-system"
        else LocalFileSystem(basepath=str(root))
    )
    block.save("dbtflow-test-runs", overwrite=True)
    store = open_store(f"{kind}/dbtflow-test-runs")
    run_folder = tmp_path / "local" / "run-1"
    (run_folder / "01-build").mkdir(parents=True)
    (run_folder / "run.json").write_text('{"status": "completed"}')
    (run_folder / "01-build" / "run_results.json").write_text('{"results": []}')
    probe(store, "run-1", {"target": "local"})
    probe(store, "run-2", {"target": "local"})  # started, never finished
    upload = upload_run(store, run_folder, "run-1", {"target": "local", "status": "completed"})
    assert upload.ok and upload.files == 2
    assert block.read_path("run-1/01-build/run_results.json") == b'{"results": []}'
    runs = {r.run_id: r for r in list_runs(store)}
    assert runs["run-1"].complete and not runs["run-2"].complete
    assert resolve(store, "latest").run_id == "run-1" == resolve(store, "latest-success:local").run_id
    assert [r.run_id for r in prune(store, timedelta(0))] != []
    assert list_runs(store) == []


def test_the_local_default_store_marks_runs_complete(tmp_path: Path) -> None:
    store = FolderStore(tmp_path)
    folder = tmp_path / "abc"
    folder.mkdir()
    (folder / "run.json").write_text("{}")
    probe(store, "abc", {"target": "dev"})
    assert [r.complete for r in list_runs(store)] == [False]
    assert upload_run(store, folder, "abc", {"target": "dev", "status": "failed"}).ok
    (stored,) = list_runs(store)
    assert stored.complete and stored.status == "failed" and resolve(store, "latest:dev").run_id == "abc"
