"""docs/runbook.md, executed: every ```bash block runs, in order, against the local stack; none is skipped.

The blocks run with bash -euo pipefail in the stack's checkout (the git repository its runs clone),
with `.venv/bin` on PATH, the stack's PREFECT_API_URL, and the runbook's placeholders set as
environment variables (`runbook` fixture):

- FLOW_RUN_ID: a prod run that failed on `model dim_distributors`; DBTFLOW_RUNS_DIR: the worker's run
  folders; DBTFLOW_ALERT_URL: a Slack-shaped URL (nothing is sent from here).
- DBT_CLOUD_HOST/ACCOUNT_ID/API_TOKEN/JOB_ID: a fake dbt Cloud API on loopback (tests/fakes), job 1001.
  PROD_RUN_ID: a completed prod run on the stack; job 1001's newest successful run serves that
  run's artifacts (as if dbt Cloud had built the same commit), so `dbtflow parity` passes for real
  through the dbt Cloud client and writes the parity-prod.json that cutover requires.
- DBTFLOW_SNOWFLAKE_PRIVATE_KEY (only for the rotation block, never in a file or argv): a new key.
  A gated fakesnow (tests/fakesnowflake.py) stands in for Snowflake; the prod blocks were created
  once with the old key, as a first-time operator does, and the new public key is registered in
  the user's second slot, so the runbook's `--rotate` rotates to it.

After a block, the test checks what an operator would: the rotated block logs in with the new key
(the old one revoked) and holds its fingerprint; after cutover and rollback, dbt Cloud job 1001 is
byte for byte as before (but `updated_at`, which any write moves) and the deployment's schedules
are as before: prod paused, with its parameters (Prefect's schedule PATCH resets those it is not
sent, see dbtflow.deploy._schedules), and the parity report names target prod and when it was made.

Pitfalls
- In the stack's commit, dev and prod are DuckDB (tests/e2e/conftest.py), so the flow runs build
  without Snowflake and never read a block. The checkout's working tree gets the tenant's real
  profiles.yml instead (Snowflake dev/prod naming the `dbt-wg-<target>` blocks), as an operator's
  checkout has: `dbtflow blocks setup` reads the block names there. Runs clone the commit, so the
  prod blocks made here change no run of other e2e tests; they are deleted at the end.
- The stack is shared by the session: the fixture restores what it changes (the deployment's job
  variables, profiles.yml, the files cutover writes, the blocks), and the cutover block must leave
  the prod schedule paused (tests/e2e/test_deployment.py checks the schedules against prefect.yaml).
- Blocks depend on earlier ones (the retry blocks on FLOW_RUN_ID's results): run the module whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import BIN, REPO, TENANT
from tests.e2e.conftest import Stack
from tests.e2e.test_deployment import _wait_final
from tests.fakes.dbtcloud_server import ADMIN_TOKEN, FakeDbtCloud, FakeStep, artifacts_from_dir
from tests.fakesnowflake import FakeSnowflake, public_key_fingerprint, settings_args
from tests.keys import KeyPair, key_env, new_key

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RUNBOOK = REPO / "docs" / "runbook.md"
SLACK_SHAPED = "https://hooks.slack.com/services/" + "T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
BROKEN_SQL = "select no_such_column from no_such_table\n"
JOB = 1001  # the fake dbt Cloud's prod job
PROD_USER = "DBT_WG_PROD"
PROFILES = "tenants/dbt_williamgrant/profiles.yml"
PARITY_COMMAND = "build --select +dim_brands --indirect-selection cautious"  # seeds, models, their own tests
ROTATE = "dbtflow blocks setup --project-dir tenants/dbt_williamgrant --target prod --rotate"
CUTOVER_ARGS = '--job "$DBT_CLOUD_JOB_ID" --schedule prod --parity-report prod=parity-prod.json'
# a command of the runbook -> text the output of its block must contain (beyond exit 0)
EXPECT = {
    "dbtflow status --since 7d": "first-week exit criteria",
    "dbtflow status --since 7d --json": '"exit_criteria_met"',
    "dbtflow notify setup --channel slack --on-warning": "automation 'dbtflow alerts: run_dbt_wg/dbt_wg': created",
    "dbtflow notify setup --block dbtflow-alerts --on-warning": ": unchanged",
    'prefect flow-run inspect "$FLOW_RUN_ID"': "model dim_distributors error",
    'dbtflow runs show "$FLOW_RUN_ID"': "dim_distributors",
    "dbtflow runs list --target prod": "  prod  failed  ",
    "find failed-run -name '*.sql'": "failed-run/01-build/compiled/dbt_williamgrant/models/marts/core/"
    "dim_distributors.sql",
    "dbtflow schedules apply prefect.yaml": "schedules already match",
    ROTATE: "rotated snowflake-credentials/dbt-wg-prod (private_key)",
    'dbtflow parity --cloud-job "$DBT_CLOUD_JOB_ID" --prefect-run "$PROD_RUN_ID" --json-out parity-prod.json': (
        "# dbt parity: ✅ parity holds"
    ),
    f"dbtflow cutover --plan {CUTOVER_ARGS}": "plan: 2 change(s); nothing was changed",
    f"dbtflow cutover --apply {CUTOVER_ARGS}": "cutover done: 2 change(s)",
    "dbtflow rollback": "rollback done: 2 change(s)",
}


@dataclass(frozen=True)
class Block:
    line: int
    script: str
    commands: tuple[str, ...]


def runbook_blocks(text: str) -> list[Block]:
    found = []
    for match in re.finditer(r"^```bash\n(.*?)^```", text, flags=re.M | re.S):
        script = match.group(1)
        joined = re.sub(r"\\\n\s*", " ", script)
        commands = tuple(
            re.sub(r"\s+#.*$", "", line).strip()
            for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#")
        )
        found.append(Block(text[: match.start()].count("\n") + 2, script, commands))
    return found


BLOCKS = runbook_blocks(RUNBOOK.read_text())


def test_the_runbook_has_commands_and_every_expectation_names_one() -> None:
    assert len(BLOCKS) >= 10 and all(b.commands for b in BLOCKS)
    commands = {c for b in BLOCKS for c in b.commands}
    assert set(EXPECT) <= commands, f"EXPECT names commands the runbook no longer has: {set(EXPECT) - commands}"


@dataclass(frozen=True)
class Runbook:
    """The stack, the checkout the blocks run in, their environment and the stand-ins behind it."""

    stack: Stack
    repo: Path
    env: dict[str, str]
    cloud: FakeDbtCloud
    snowflake: FakeSnowflake
    new_key: KeyPair  # registered in Snowflake's second slot; the rotation block gets it in its environment
    job_before: bytes  # job 1001 as the dbt Cloud API served it before any block ran
    schedules_before: dict[str, Any]  # the deployment's schedules before any block ran


def schedules(stack: Stack) -> dict[str, Any]:
    """slug -> what a schedule is (on or off, its cron, the parameters its runs get), as the API returns it."""
    found = stack.get(f"/deployments/{stack.deployment()['id']}/schedules")
    return {s["slug"]: {k: s[k] for k in ("active", "schedule", "parameters")} for s in found}


def fetch_job(cloud: FakeDbtCloud) -> bytes:
    """Job 1001 as `GET .../jobs/1001/` returns it: canonical JSON, without `updated_at` (any write moves it)."""
    response = httpx.get(
        f"{cloud.url}/api/v2/accounts/1/jobs/{JOB}/", headers={"Authorization": f"Token {ADMIN_TOKEN}"}, timeout=30
    )
    data = {k: v for k, v in response.raise_for_status().json()["data"].items() if k != "updated_at"}
    return json.dumps(data, sort_keys=True).encode()


@pytest.fixture(scope="module")
def runbook(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runbook]:
    """The placeholders: failed and completed prod runs, a failed local run, fake dbt Cloud, Snowflake, prod blocks."""
    repo = stack.folder.parent / "repo"
    deployment = stack.deployment()
    # Runs share one working folder here, so the DuckDB "warehouse" persists between runs as a real one does
    # (a process worker's default is a fresh temporary folder, hence a fresh clone and an empty DuckDB, per run).
    work = stack.folder / "runbook-work"
    work.mkdir(exist_ok=True)
    with contextlib.ExitStack() as undo:  # what the stack had before, restored in reverse order
        _patch_job_variables(stack, deployment["id"], {**deployment["job_variables"], "working_dir": str(work)})
        undo.callback(_patch_job_variables, stack, deployment["id"], deployment["job_variables"])
        committed = (repo / PROFILES).read_text()
        assert "prefect.blocks" not in committed  # the stack's runs read no block: the prod blocks made here are unused
        undo.callback((repo / PROFILES).write_text, committed)
        (repo / PROFILES).write_text((TENANT / "profiles.yml").read_text())  # the operator's (see Pitfalls)
        undo.callback(_remove_cutover_files, repo)
        env = {
            **stack.env,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "DBTFLOW_RUNS_DIR": str(stack.folder / "runs"),
            "DBTFLOW_ALERT_URL": SLACK_SHAPED,
        }
        # both prod runs queue on the prod slot while this process runs the local one and makes the blocks
        failing = _prod_run(
            stack,
            deployment["id"],
            command="build --indirect-selection cautious",
            select="+dim_distributors",
            vars={"reporting_end_date": "not-a-date"},  # dim_distributors casts it: fails in DuckDB, compiled
        )
        completed = _prod_run(stack, deployment["id"], command=PARITY_COMMAND)
        _failed_local_run(repo, env)
        snowflake = FakeSnowflake(tmp_path_factory.mktemp("runbook-snowflake"))
        undo.callback(snowflake.stop)
        undo.callback(_delete_prod_blocks, stack)
        old, new = new_key(), new_key()
        _first_prod_blocks(stack, repo, env, snowflake, old)
        snowflake.set_user(PROD_USER, public_keys=[old.public_pem, new.public_pem])  # ALTER USER ... RSA_PUBLIC_KEY_2
        failed_run, completed_run = _wait_final(stack, [failing, completed])
        assert failed_run["state"]["type"] == "FAILED", failed_run["state"]["message"]
        assert "model dim_distributors error" in failed_run["state"]["message"], failed_run["state"]
        assert completed_run["state"]["type"] == "COMPLETED", completed_run["state"]["message"]
        cloud = undo.enter_context(FakeDbtCloud())
        # the runbook cuts over a job that starts no other: a chain's cutover has its own page (docs/cutover.md)
        # and tests (tests/cutover/test_chain_cutover.py); job 1010 of the fixtures runs when 1001 succeeds
        cloud.jobs[1010]["job_completion_trigger_condition"] = None
        # dbt Cloud's newest successful run of the prod job built what the completed prod run built
        step = stack.run_folder(completed) / "01-build"
        cloud.add_run(JOB, [FakeStep(f"dbt {PARITY_COMMAND}", artifacts_from_dir(step))])
        env.update(FLOW_RUN_ID=failing, PROD_RUN_ID=completed, DBT_CLOUD_HOST=cloud.url, DBT_CLOUD_ACCOUNT_ID="1")
        env.update(DBT_CLOUD_API_TOKEN=ADMIN_TOKEN, DBT_CLOUD_JOB_ID=str(JOB))
        yield Runbook(stack, repo, env, cloud, snowflake, new, fetch_job(cloud), schedules(stack))


def _remove_cutover_files(repo: Path) -> None:
    """The parity report and the journal the cutover section writes in the checkout."""
    (repo / "parity-prod.json").unlink(missing_ok=True)
    shutil.rmtree(repo / "failed-run", ignore_errors=True)  # the failure section's `dbtflow runs fetch`
    shutil.rmtree(repo / ".dbtflow" / "cutover", ignore_errors=True)


def _prod_run(stack: Stack, deployment_id: str, **parameters: Any) -> str:
    body = {"parameters": {"target": "prod", **parameters}}
    return str(stack.post(f"/deployments/{deployment_id}/create_flow_run", body)["id"])


def _failed_local_run(repo: Path, env: dict[str, str]) -> None:
    """A `dbtflow run` in the checkout that fails on int_months, then the model is fixed: `dbt retry` has work."""
    model = repo / "tenants/dbt_williamgrant/models/intermediate/int_months.sql"
    original = model.read_text()
    model.write_text(BROKEN_SQL)
    try:
        local = subprocess.run(
            [str(BIN / "dbtflow"), "run", "--project-dir", "tenants/dbt_williamgrant", "--target", "local",
             "--select", "int_months"],
            cwd=repo, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        model.write_text(original)
    assert local.returncode == 1 and "int_months" in local.stdout, local.stdout[-2000:] + local.stderr[-2000:]


def _first_prod_blocks(stack: Stack, repo: Path, env: dict[str, str], snowflake: FakeSnowflake, key: KeyPair) -> None:
    """`dbtflow blocks setup --target prod` with every setting, on the stack's Prefect server: a first-time operator."""
    snowflake.set_user(PROD_USER, public_keys=[key.public_pem])
    argv = [str(BIN / "dbtflow"), "blocks", "setup", "--project-dir", "tenants/dbt_williamgrant", "--target", "prod"]
    done = subprocess.run(
        [*argv, *settings_args(snowflake, PROD_USER)],
        cwd=repo, env={**env, **key_env(key)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert not any(line in output for line in key.secret_lines()), "the key was printed"
    assert done.returncode == 0 and "created snowflake-credentials/dbt-wg-prod" in done.stdout, output
    assert env["PREFECT_API_URL"] == stack.api and _block(stack, "snowflake-credentials")["data"]["user"] == PROD_USER


def _block(stack: Stack, slug: str, include_secrets: bool = False) -> dict[str, Any]:
    """The tenant's prod block of this type on the stack's Prefect server, as its API returns it."""
    path = f"/block_types/slug/{slug}/block_documents/name/dbt-wg-prod"
    return stack.get(path + ("?include_secrets=true" if include_secrets else ""))  # type: ignore[no-any-return]


def _delete_prod_blocks(stack: Stack) -> None:
    for slug in ("dbt-cli-profile", "dbt-cli-snowflake-target-configs", "snowflake-connector", "snowflake-credentials"):
        try:
            block = _block(stack, slug)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 404:
                continue
            raise
        stack.delete(f"/block_documents/{block['id']}")


def _patch_job_variables(stack: Stack, deployment_id: str, job_variables: dict[str, object]) -> None:
    stack.patch(f"/deployments/{deployment_id}", {"job_variables": job_variables})


def _check_rotated(runbook: Runbook) -> None:
    """The old key revoked in Snowflake, the prod blocks log in: with the new key, whose fingerprint they hold."""
    import snowflake.connector as sf
    from cryptography.hazmat.primitives import serialization

    # ALTER USER ... UNSET RSA_PUBLIC_KEY: only the new key may log in now
    runbook.snowflake.set_user(PROD_USER, public_keys=[runbook.new_key.public_pem])
    credentials = _block(runbook.stack, "snowflake-credentials", include_secrets=True)["data"]
    extras = _block(runbook.stack, "dbt-cli-snowflake-target-configs")["data"]["extras"]
    key = serialization.load_pem_private_key(credentials["private_key"].encode(), None)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    stored, wanted = public_key_fingerprint(public.decode()), public_key_fingerprint(runbook.new_key.public_pem)
    assert stored == wanted, f"the prod credentials hold key {stored}, not the new key {wanted}"
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    connection = sf.connect(  # refused (390144 JWT token is invalid) with any other key
        account=credentials["account"], user=credentials["user"], private_key=der,
        host=extras["host"], port=extras["port"], protocol=extras["protocol"],
        session_parameters={"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
    )  # fmt: skip
    connection.close()


def _check_cutover_undone(runbook: Runbook) -> None:
    """Rollback put dbt Cloud's job and the deployment's schedules back as they were before cutover."""
    after = fetch_job(runbook.cloud)
    assert after == runbook.job_before, "dbt Cloud job 1001 differs from before cutover"
    assert json.loads(after)["triggers"]["schedule"] is True
    after_rollback = schedules(runbook.stack)
    assert {slug: s["active"] for slug, s in after_rollback.items()} == {"dev": True, "prod": False}
    assert after_rollback == runbook.schedules_before  # prod's parameters too: it builds target prod when resumed
    report = json.loads((runbook.repo / "parity-prod.json").read_text())
    assert report["target"] == "prod" and report["generated_at"] and report["exit_code"] == 0


@pytest.mark.parametrize("block", BLOCKS, ids=[f"L{b.line}:{b.commands[0][:40]}" for b in BLOCKS])
def test_runbook_block(block: Block, runbook: Runbook) -> None:
    rotates = ROTATE in block.commands
    env = {**runbook.env, **key_env(runbook.new_key)} if rotates else runbook.env
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.script],
        cwd=runbook.repo, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if rotates:  # before anything prints the output
        leaked = [line for line in runbook.new_key.secret_lines() if line in done.stdout + done.stderr]
        assert not leaked, "the new key was printed"
    assert done.returncode == 0, (
        f"runbook line {block.line} failed:\n{block.script}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    for command in block.commands:
        if command in EXPECT:
            assert EXPECT[command] in done.stdout, f"{command}: no {EXPECT[command]!r} in\n{done.stdout[-3000:]}"
    if rotates:
        _check_rotated(runbook)
    if "dbtflow rollback" in block.commands:
        _check_cutover_undone(runbook)
    if "dbtflow status --since 7d --json" in block.commands:
        status = json.loads(done.stdout[done.stdout.index("\n{\n") :])
        assert {t["target"] for t in status["targets"]} >= {"prod"}
        assert any(n["node"] == "model dim_distributors" for t in status["targets"] for n in t["top_failed_nodes"])
