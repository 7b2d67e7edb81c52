"""Durable runs on stateless workers: each run kept in an S3 run store (moto on loopback) and read back
from a fresh clone with no local run folder."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from dbtflow.run._flow import dbt_flow, runs_root
from tests.run.durable.conftest import FOLDER, S3, STORE, WRONG, WRONG_SECRET, dbtflow

FAILING = "select no_such_column from no_such_table\n"
CANARY = f"canary-{uuid.uuid4().hex}"  # a secret var: never in the store


def run(project: Path, **params: Any) -> Any:
    return dbt_flow(project, name="run_dbt_wg_store_test")(**params, return_state=True)


def run_keys(s3: S3, run_id: str) -> set[str]:
    prefix = f"{FOLDER}/{run_id}/"
    return {k[len(prefix) :] for k in s3.objects() if k.startswith(prefix)}


def summary_artifact(flow_run_id: Any) -> str:
    response = httpx.post(
        f"{os.environ['PREFECT_API_URL']}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [str(flow_run_id)]}, "type": {"any_": ["markdown"]}}},
    )
    response.raise_for_status()
    (artifact,) = response.json()
    return str(artifact["data"])


def test_a_failed_run_is_read_back_from_the_store_on_a_fresh_clone(s3: S3, container: Path, tmp_path: Path) -> None:
    (container / "models" / "intermediate" / "int_months.sql").write_text(FAILING)
    state = run(container, target="local", select="int_months", run_storage=STORE, vars={"api_token": CANARY})
    assert state.is_failed() and "int_months" in state.message
    run_id = str(state.state_details.flow_run_id)

    keys = run_keys(s3, run_id)
    assert {"started.json", "run.json", "summary.md", "dbt.log", "complete.json"} <= keys
    assert {"01-build/manifest.json", "01-build/run_results.json"} <= keys
    assert "01-build/compiled/dbt_williamgrant/models/intermediate/int_months.sql" in keys  # the failed node's SQL
    marker = json.loads(s3.body(f"{FOLDER}/{run_id}/complete.json"))
    assert marker["status"] == "failed" and marker["target"] == "local"
    assert set(marker["files"]) == keys - {"complete.json", "started.json"}  # every file, the marker written last
    assert f"`{STORE}:{run_id}/`" in summary_artifact(run_id)  # the Prefect summary names where it is

    # the container is gone: nothing local is left, the store has it all
    shutil.rmtree(runs_root())
    shutil.rmtree(container)
    listed = dbtflow("runs", "list", "--run-storage", STORE)
    assert listed.returncode == 0, listed.stderr
    assert f"{run_id}  local  failed" in listed.stdout
    shown = dbtflow("runs", "show", "latest:local", "--run-storage", STORE)
    assert shown.returncode == 0, shown.stderr
    assert "int_months" in shown.stdout and "no_such_table" in shown.stdout  # the failure with dbt's message
    fetched = dbtflow("runs", "fetch", run_id, "--to", str(tmp_path / "fetched"), "--run-storage", STORE)
    assert fetched.returncode == 0, fetched.stderr
    results = json.loads((tmp_path / "fetched" / "01-build" / "run_results.json").read_text())
    assert {r["unique_id"]: r["status"] for r in results["results"]}["model.dbt_williamgrant.int_months"] == "error"
    assert (tmp_path / "fetched" / "dbt.log").stat().st_size > 0

    # parity reads the Prefect side from the store: the run against its own fetched copy holds
    parity = dbtflow(
        "parity", "--cloud-artifacts", str(tmp_path / "fetched"), "--prefect-run", "latest",
        "--run-storage", STORE, "--no-publish", "--json-out", str(tmp_path / "parity.json"),
    )  # fmt: skip
    assert parity.returncode == 0, parity.stderr
    report = json.loads((tmp_path / "parity.json").read_text())
    assert report["prefect"]["flow_run_id"] == run_id

    # neither the store's own secret nor a secret var (dbt writes vars into run_results' args) is stored
    for secret in (s3.secret_key, CANARY):
        leaks = [k for k in s3.objects() if secret.encode() in s3.body(k)]
        assert leaks == [] and secret not in summary_artifact(run_id)


def test_wrong_credentials_stop_the_run_before_dbt_with_one_line(s3: S3, container: Path) -> None:
    state = run(container, target="local", select="int_months", run_storage=WRONG)
    assert state.is_failed()
    assert state.message.startswith(f"run_storage '{WRONG}' cannot be written (ClientError: ")
    assert "SignatureDoesNotMatch" in state.message and "check the block's credentials" in state.message
    assert "\n" not in state.message and WRONG_SECRET not in state.message
    assert not (container / "target").exists()  # dbt never started

    missing = run(container, target="local", run_storage="s3-bucket/no-such-store")
    assert missing.is_failed() and "no such Prefect block" in missing.message
    bad = dbtflow("run", "--project-dir", str(container), "--target", "local", "--run-storage", "not a slug")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: run_storage 'not a slug' is not a Prefect")
    assert not (container / "target").exists()


def test_storage_down_during_upload_keeps_the_local_copy_and_dbts_state(s3: S3, container: Path) -> None:
    before = set(s3.objects())
    stopped = threading.Event()

    def take_the_store_down_mid_upload() -> None:  # once a first run file (not the probe) has landed
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            new = [k for k in set(s3.objects()) - before if not k.endswith("/started.json")]
            if new:
                s3.stop()
                stopped.set()
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=take_the_store_down_mid_upload, daemon=True)
    watcher.start()
    try:
        state = run(container, target="local", select="int_months", run_storage=STORE)
    finally:
        watcher.join(5)
        if stopped.is_set():
            s3.start()
    assert stopped.is_set()
    run_id = str(state.state_details.flow_run_id)
    assert state.is_completed(), state.message  # dbt's own outcome, not the store's
    folder = runs_root() / run_id
    summary = (folder / "summary.md").read_text()
    assert f"Not stored: could not upload the run to the run store '{STORE}'" in summary
    assert f"the local copy is kept in {folder}" in summary and "after 3 tries" in summary
    assert "Not stored" in summary_artifact(run_id)
    assert (folder / "01-build" / "run_results.json").is_file()

    keys = run_keys(s3, run_id)
    assert "complete.json" not in keys and 0 < len(keys) < 10  # cut halfway
    listed = dbtflow("runs", "list", "--run-storage", STORE)
    assert f"{run_id}  local  incomplete" in listed.stdout
    latest = dbtflow("runs", "show", "latest", "--run-storage", STORE)
    assert run_id not in latest.stdout  # a half-uploaded run is never the latest
    assert latest.returncode == 0 or "no complete run in" in latest.stderr
