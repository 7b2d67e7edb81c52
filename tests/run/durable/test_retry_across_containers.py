"""Retry from the failure on a brand-new worker: the failed attempt's run_results come back from the run store."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

from dbtflow.run._flow import dbt_flow, runs_root
from tests.run.durable.conftest import FOLDER, S3, STORE, dbtflow, fresh_clone

FAILING = "select no_such_column from no_such_table\n"
MODEL = Path("models") / "intermediate" / "int_months.sql"


def names(results_file: Path) -> dict[str, str]:
    results = json.loads(results_file.read_text())["results"]
    return {r["unique_id"].split(".")[2]: r["status"] for r in results}


def test_a_flow_retry_on_a_new_worker_reruns_only_what_failed(s3: S3, container: Path) -> None:
    original = (container / MODEL).read_text()
    (container / MODEL).write_text(FAILING)
    before = set(s3.objects())
    swapped = threading.Event()

    def new_worker() -> None:  # once attempt 1 is stored: its worker is gone, the next has a fresh clone
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not swapped.is_set():
            for key in set(s3.objects()) - before:
                if key.endswith("/complete.json") and json.loads(s3.body(key)).get("attempt") == 1:
                    shutil.rmtree(runs_root())
                    fresh_clone(container)
                    (container / MODEL).write_text(original)
                    swapped.set()
            time.sleep(0.01)

    watcher = threading.Thread(target=new_worker, daemon=True)
    watcher.start()
    flow = dbt_flow(container, name="run_dbt_wg_store_retry_test", retries=1, retry_delay_seconds=8)
    state = flow(target="local", select="int_months", run_storage=STORE, return_state=True)
    watcher.join(5)
    assert swapped.is_set()
    assert state.is_completed(), state.message
    run_id = str(state.state_details.flow_run_id)
    folder = runs_root() / run_id
    assert names(folder / "01-build" / "run_results.json")["int_months"] == "error"  # attempt 1, from the store
    assert names(folder / "02-retry" / "run_results.json") == {
        "int_months": "success", "not_null_int_months_month_start": "pass", "unique_int_months_month_start": "pass",
    }  # fmt: skip
    marker = json.loads(s3.body(f"{FOLDER}/{run_id}/complete.json"))
    assert marker["attempt"] == 2 and marker["status"] == "completed"


def test_dbtflow_retry_on_a_fresh_clone(s3: S3, container: Path, tmp_path: Path) -> None:
    original = (container / MODEL).read_text()
    (container / MODEL).write_text(FAILING)
    failed = dbtflow("run", "--project-dir", str(container), "--target", "local", "--select", "int_months",
                     "--run-storage", STORE)  # fmt: skip
    assert failed.returncode == 1
    (run_id,) = [p.name for p in runs_root().iterdir()]
    shutil.rmtree(runs_root())
    clone = fresh_clone(tmp_path / "new-container")
    assert (clone / MODEL).read_text() == original  # fixed in the repository

    retried = dbtflow("retry", run_id, "--project-dir", str(clone), "--run-storage", STORE)
    assert retried.returncode == 0, retried.stdout + retried.stderr
    (new_id,) = [p.name for p in runs_root().iterdir()]
    shutil.rmtree(runs_root())
    fetched = dbtflow("runs", "fetch", new_id, "--to", str(tmp_path / "fetched"), "--run-storage", STORE)
    assert fetched.returncode == 0, fetched.stderr
    assert names(tmp_path / "fetched" / "01-retry" / "run_results.json") == {
        "int_months": "success", "not_null_int_months_month_start": "pass", "unique_int_months_month_start": "pass",
    }  # fmt: skip

    nothing = dbtflow("retry", new_id, "--project-dir", str(clone), "--run-storage", STORE)
    assert nothing.returncode == 2 and f"run {new_id} did not fail (completed): nothing to retry" in nothing.stderr
