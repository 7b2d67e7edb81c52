"""dbt-snowflake for real, on loopback: blocks made by the setup script, the tenant built through the flow.

Each test gets a fresh fakesnow server (tests/fakesnowflake.py) with Snowflake's login checks
in front of it, so a revoked key or a wrong password fails the way Snowflake fails it. The
Prefect server is the session's. fakesnow cannot re-run incrementals or snapshots, so the
database is reset before every run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from dbtflow.run._flow import dbt_flow, runs_root
from dbtflow.secrets._blocks import CONNECTOR, CREDENTIALS, PROFILE, TARGET_CONFIGS
from tests.conftest import REPO
from tests.fakesnowflake import FakeSnowflake, settings_args
from tests.keys import KeyPair, key_env, new_key

pytestmark = [pytest.mark.usefixtures("prefect_api"), pytest.mark.slow]

SCRIPT = REPO / "scripts" / "prefect" / "setup_dbt_blocks.py"
SMALL = "build --select brands stg_brands --indirect-selection cautious"  # a seed, a view and its tests


@pytest.fixture
def snowflake(tmp_path: Path) -> Iterator[FakeSnowflake]:
    folder = tmp_path / "fakesnowflake"
    folder.mkdir()
    server = FakeSnowflake(folder)
    yield server
    server.stop()


@pytest.fixture
def project_dir(tenant: Path) -> Path:
    """The tenant copy, its block names unique to this test (the session's Prefect server is shared)."""
    profiles = tenant / "profiles.yml"
    profiles.write_text(profiles.read_text().replace("dbt-wg-", f"s{uuid.uuid4().hex[:10]}-"))
    return tenant


def setup_script(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str, env: dict[str, str]):
    """`python scripts/prefect/setup_dbt_blocks.py ARGS` in this process, secrets in its environment only."""
    with monkeypatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("DBTFLOW_SNOWFLAKE_")]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        patch.setattr(sys, "argv", [str(SCRIPT), *args])
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(SCRIPT), run_name="__main__")
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert exit_info.value.code in (0, None), output
    assert not any(value in output for value in env.values())
    return output


def run(project_dir: Path, snowflake: FakeSnowflake, **params: Any):
    snowflake.reset()
    return dbt_flow(project_dir, name="run_dbt_wg")(target="dev", return_state=True, **params)


def results_of(state) -> list[dict[str, Any]]:
    folder = runs_root() / str(state.state_details.flow_run_id)
    step = sorted(p for p in folder.iterdir() if p.is_dir())[0]
    return list(json.loads((step / "run_results.json").read_text())["results"])


def test_setup_script_then_run_dbt_wg_builds_the_tenant_on_snowflake(
    snowflake: FakeSnowflake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The operator's path, as is: the script (a real process) on the tenant's own block names, then `run_dbt_wg`."""
    from flows.dbt_wg_flow import PROJECT_DIR, run_dbt_wg
    from tests.run.test_tenant_flow import expected_build_counts

    key = new_key()
    snowflake.set_user("DBT_WG_DEV", public_keys=[key.public_pem])
    env = {k: v for k, v in os.environ.items() if not k.startswith("DBTFLOW_SNOWFLAKE_")} | key_env(key)
    cmd = [sys.executable, str(SCRIPT), "--target", "dev", *settings_args(snowflake, "DBT_WG_DEV")]
    setup = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    output = setup.stdout + setup.stderr
    assert setup.returncode == 0, output
    for slug in (CREDENTIALS, CONNECTOR, TARGET_CONFIGS, PROFILE):
        assert f"{slug}/dbt-wg-dev" in output
    assert not any(line in output for line in key.secret_lines())
    monkeypatch.setenv("DBTFLOW_RUNS_DIR", str(tmp_path / "runs"))
    target_path = PROJECT_DIR / "target" / "dev"
    try:
        state = run_dbt_wg(target="dev", return_state=True)

        assert state.is_completed(), state.message
        folder = runs_root() / str(state.state_details.flow_run_id)
        manifest = json.loads((folder / "01-build" / "manifest.json").read_text())
        assert manifest["metadata"]["adapter_type"] == "snowflake"
        results = results_of(state)
        executed = Counter(r["unique_id"].split(".")[0] for r in results)
        assert executed == expected_build_counts(manifest)  # every seed, model, snapshot and test, first run
        statuses = Counter(r["status"] for r in results)
        assert set(statuses) == {"success", "pass", "warn", "no-op"} and statuses["warn"] == 1, statuses
    finally:
        shutil.rmtree(target_path, ignore_errors=True)


def test_rotation_needs_no_file_change_and_the_revoked_key_fails_clearly(
    snowflake: FakeSnowflake, project_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    old, new = new_key(), new_key("new passphrase")
    snowflake.set_user("DBT_WG_DEV", public_keys=[old.public_pem])
    base = ["--target", "dev", "--project-dir", str(project_dir)]
    setup_script(monkeypatch, capsys, *base, *settings_args(snowflake, "DBT_WG_DEV"), env=key_env(old))
    first = run(project_dir, snowflake, command=SMALL)
    assert first.is_completed(), first.message
    sources = [p for p in project_dir.rglob("*") if p.is_file() and p.relative_to(project_dir).parts[0] != "target"]
    files = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sources}

    # Snowflake's zero-downtime rotation: register the new key in the second slot, rotate the block, revoke the old key
    snowflake.set_user("DBT_WG_DEV", public_keys=[old.public_pem, new.public_pem])
    output = setup_script(monkeypatch, capsys, *base, "--rotate", env=key_env(new))
    assert "rotated snowflake-credentials/" in output and "(private_key, private_key_passphrase)" in output
    assert "unchanged snowflake-connector/" not in output  # --rotate touches the credentials block only
    snowflake.set_user("DBT_WG_DEV", public_keys=[new.public_pem])

    second = run(project_dir, snowflake, command=SMALL)
    assert second.is_completed(), second.message  # only the new key can log in now
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in files} == files  # no project file changed

    # a worker still holding the old, revoked key
    setup_script(monkeypatch, capsys, *base, "--rotate", env=key_env(old))
    revoked = run(project_dir, snowflake, command=SMALL)
    assert revoked.is_failed()
    assert "Failed to connect to DB" in revoked.message and "JWT token is invalid" in revoked.message, revoked.message


@contextmanager
def rendered_profiles(monkeypatch: pytest.MonkeyPatch, into: list[str]) -> Iterator[None]:
    """Keep a copy of every profiles.yml the flow renders (they are deleted when the run ends)."""
    import dbtflow.run._flow
    from dbtflow.secrets._profiles import resolved_profiles

    @contextmanager
    def spy(project, target):
        with resolved_profiles(project, target) as folder:
            into.append((folder / "profiles.yml").read_text())
            yield folder

    monkeypatch.setattr(dbtflow.run._flow, "resolved_profiles", spy)
    yield


def files_under(root: Path, since: float = 0.0, skip: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Files below `root` written since `since`; tolerant of other processes' files coming and going."""
    for folder, dirs, names in os.walk(root, onerror=lambda _: None):
        dirs[:] = [d for d in dirs if Path(folder, d) not in skip]
        for name in names:
            path = Path(folder, name)
            try:
                if path.stat().st_mtime >= since and path.stat().st_size < 50_000_000:
                    yield path
            except OSError:
                continue


def text_of(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return None


def test_canary_secrets_appear_nowhere_but_in_the_block(
    snowflake: FakeSnowflake,
    project_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
):
    canary = f"canary-{uuid.uuid4().hex}"
    canary_password = f"canary-pw-{uuid.uuid4().hex}"
    key = new_key(canary)
    needles = [canary, canary_password, *key.secret_lines()]
    started = time.time()
    snowflake.set_user("DBT_WG_DEV", public_keys=[key.public_pem])
    base = ["--target", "dev", "--project-dir", str(project_dir)]
    printed = [setup_script(monkeypatch, capfd, *base, *settings_args(snowflake, "DBT_WG_DEV"), env=key_env(key))]
    profiles: list[str] = []
    with rendered_profiles(monkeypatch, profiles):
        good = run(project_dir, snowflake)
        assert good.is_completed(), good.message
        (project_dir / "models" / "staging" / "stg_brands.sql").write_text(
            "select no_such_column from {{ ref('brands') }}\n"
        )
        broken = run(project_dir, snowflake, command=SMALL)
        assert broken.is_failed() and "NO_SUCH_COLUMN" in broken.message, broken.message
        password = {"DBTFLOW_SNOWFLAKE_PASSWORD": canary_password}
        printed.append(setup_script(monkeypatch, capfd, *base, "--rotate", "--auth", "password", env=password))
        refused = run(project_dir, snowflake, command=SMALL)
        assert refused.is_failed() and "Incorrect username or password was specified" in refused.message
    runs = [str(s.state_details.flow_run_id) for s in (good, broken, refused)]

    haystacks: dict[str, str] = {"rendered profiles": "\n".join(profiles), "environment": json.dumps(dict(os.environ))}
    captured = capfd.readouterr()
    haystacks["stdout/stderr"] = "".join(printed) + captured.out + captured.err
    haystacks["log records"] = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    haystacks |= prefect_records(runs)
    # this test's folders (the tenant copy with target/, the runs, the fake server's), Prefect's client home,
    # what this pytest session wrote meanwhile (the Prefect server's database: it stores blocks encrypted),
    # and every file written since the test started in the temp dir (not other pytest sessions: other people's)
    # and in the cache the Snowflake connector uses
    session, sessions = tmp_path.parent, tmp_path.parent.parent
    searched = [(root, 0.0, ()) for root in (tmp_path, runs_root(), Path(os.environ["PREFECT_HOME"]))]
    searched += [(session, started, ()), (Path(tempfile.gettempdir()), started, (sessions,))]
    searched += [(Path.home() / ".cache", started, ())]
    for root, since, skip in searched:
        for path in files_under(root, since, skip):
            text = text_of(path)
            if text is not None:
                haystacks[str(path)] = text
    assert (
        len(profiles) == 3
        and any("dbt.log" in name for name in haystacks)
        and any("prefect.db" in n for n in haystacks)
    )
    assert sum(name.startswith("/logs/ ") for name in haystacks) == 3  # the three runs' API logs

    leaks = sorted({where for where, text in haystacks.items() for needle in needles if needle in text})
    assert leaks == [], f"a canary secret leaked into: {leaks}"


def prefect_records(flow_run_ids: list[str]) -> dict[str, str]:
    """Everything Prefect keeps about the runs, as the UI reads it, plus every block as a viewer reads it."""
    url = os.environ["PREFECT_API_URL"]

    def post(path: str, body: dict[str, Any]) -> Any:
        response = httpx.post(f"{url}{path}", json=body, timeout=60)
        response.raise_for_status()
        return response.json()

    def pages(path: str, body: dict[str, Any]) -> list[Any]:
        items: list[Any] = []
        while True:
            page = post(path, {**body, "limit": 200, "offset": len(items)})
            items += page
            if len(page) < 200:
                return items

    records: dict[str, str] = {}
    time.sleep(3)  # the server persists logs and events in the background
    for run_id in flow_run_ids:
        this_run = {"any_": [run_id]}
        records[f"/flow_runs/{run_id}"] = httpx.get(f"{url}/flow_runs/{run_id}", timeout=30).text
        states = httpx.get(f"{url}/flow_run_states/", params={"flow_run_id": run_id}, timeout=30)
        records[f"/flow_run_states {run_id}"] = states.text
        records[f"/task_runs {run_id}"] = json.dumps(pages("/task_runs/filter", {"flow_runs": {"id": this_run}}))
        records[f"/logs/ {run_id}"] = json.dumps(pages("/logs/filter", {"logs": {"flow_run_id": this_run}}))
        artifacts = pages("/artifacts/filter", {"artifacts": {"flow_run_id": this_run}})
        records[f"/artifacts {run_id}"] = json.dumps(artifacts)
        related = {"resources_in_roles": [[f"prefect.flow-run.{run_id}", "flow-run"]]}
        records[f"/events {run_id}"] = json.dumps(post("/events/filter", {"filter": {"related": related}, "limit": 50}))
    records["/block_documents (as a viewer)"] = json.dumps(pages("/block_documents/filter", {"include_secrets": False}))
    return records


def test_the_fake_checks_logins_and_deduplicates_retries_like_snowflake(snowflake: FakeSnowflake):
    import snowflake.connector as sf

    key, other = new_key(), new_key()
    snowflake.set_user("SVC", public_keys=[key.public_pem], passwords=["right"])
    where = dict(account=snowflake.account, user="svc", host=snowflake.host, port=snowflake.port, protocol="http")
    where |= dict(database="DB", schema="S", session_parameters={"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False})

    def der(pair: KeyPair) -> bytes:
        return base64.b64decode(pair.plain_der_b64)

    for credentials in (dict(private_key=der(other)), dict(password="wrong")):
        with pytest.raises(sf.errors.DatabaseError) as refused:
            sf.connect(**where, **credentials)
        assert str(refused.value.errno) in ("390144", "390100")
    connection = sf.connect(**where, private_key=der(key))
    cursor = connection.cursor()
    cursor.execute("create table t (a int)")
    request_id = str(uuid.uuid4())
    for _ in range(2):  # the second is what the connector sends when the first answer was too slow
        cursor.execute("insert into t values (1)", _statement_params={"requestId": request_id})
    assert cursor.execute("select count(*) from t").fetchone() == (1,)
    connection.close()
    snowflake.reset()
    with sf.connect(**where, password="right") as fresh, pytest.raises(sf.errors.ProgrammingError):
        fresh.cursor().execute("select * from t")


def test_a_dev_run_needs_no_prod_block(
    snowflake: FakeSnowflake, project_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from dbtflow.dbt._project import load_project
    from dbtflow.secrets._blocks import block_names

    dev_key, prod_key = new_key(), new_key()
    snowflake.set_user("DBT_WG_DEV", public_keys=[dev_key.public_pem])
    snowflake.set_user("DBT_WG_PROD", public_keys=[prod_key.public_pem])
    for target, user, key in (("dev", "DBT_WG_DEV", dev_key), ("prod", "DBT_WG_PROD", prod_key)):
        args = ["--target", target, "--project-dir", str(project_dir), *settings_args(snowflake, user)]
        setup_script(monkeypatch, capsys, *args, env=key_env(key))
    prod = block_names(load_project(project_dir), "prod")
    url = os.environ["PREFECT_API_URL"]
    for slug, name in ((PROFILE, prod.profile), (TARGET_CONFIGS, prod.target_configs), (CONNECTOR, prod.connector),
                       (CREDENTIALS, prod.credentials)):  # fmt: skip
        document = httpx.get(f"{url}/block_types/slug/{slug}/block_documents/name/{name}", timeout=30).json()
        httpx.delete(f"{url}/block_documents/{document['id']}", timeout=30).raise_for_status()

    state = run(project_dir, snowflake, command=SMALL)
    assert state.is_completed(), state.message

    prod_state = dbt_flow(project_dir, name="run_dbt_wg")(target="prod", return_state=True)
    assert prod_state.is_failed()
    assert prod_state.message == (
        f"target 'prod' has no Prefect blocks yet (profiles.yml needs {CREDENTIALS}/{prod.credentials}): "
        "create them with `dbtflow blocks setup --target prod`"
    )
