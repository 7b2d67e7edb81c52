"""docs/runbook.md, executed: every ```bash block runs, in order, against the local stack.

The blocks run with bash -euo pipefail in the stack's snapshot of this working tree (dev and prod
on DuckDB there), with `.venv/bin` on PATH and the runbook's placeholders set as environment
variables: FLOW_RUN_ID (a prod run that failed on `model dim_distributors`), DBTFLOW_RUNS_DIR (the
worker's run folders), DBTFLOW_ALERT_URL (a Slack-shaped URL; nothing is sent from here), and the
dbt Cloud settings of a fake dbt Cloud API on loopback for the cutover commands.

Nothing is skipped silently: commands this stack cannot run yet are listed in PENDING with the
reason and the test that runs them instead; each pending block is reported as skipped with it,
and `test_pending_commands_exist` checks each is a real command.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import BIN, REPO
from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RUNBOOK = REPO / "docs" / "runbook.md"
SLACK_SHAPED = "https://hooks.slack.com/services/" + "T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
BROKEN_SQL = "select no_such_column from no_such_table\n"
# command prefix -> why this test does not run it yet, and which test does (remove the entry once this one can)
PENDING = {
    "dbtflow blocks setup": "runs against a Snowflake stand-in in tests/integration/test_snowflake.py and "
    "tests/integration/test_blocks.py; the e2e stack has no fakesnow for prod yet",
    "dbtflow cutover": "runs against the fake dbt Cloud API in tests/cutover/; not yet wired into this stack "
    "(needs DBT_CLOUD_* and a parity-prod.json here)",
    "dbtflow rollback": "runs against the fake dbt Cloud API in tests/cutover/; not yet wired into this stack",
}
# a command of the runbook -> text the output of its block must contain (beyond exit 0)
EXPECT = {
    "dbtflow status --since 7d": "first-week exit criteria",
    "dbtflow status --since 7d --json": '"exit_criteria_met"',
    "dbtflow notify setup --channel slack --on-warning": "automation 'dbtflow alerts: run_dbt_wg/dbt_wg': created",
    "dbtflow notify setup --block dbtflow-alerts --on-warning": ": unchanged",
    'prefect flow-run inspect "$FLOW_RUN_ID"': "model dim_distributors error",
    'cat "$DBTFLOW_RUNS_DIR/$FLOW_RUN_ID/summary.md"': "dim_distributors",
    "find \"$DBTFLOW_RUNS_DIR/$FLOW_RUN_ID\" -name '*.sql'": "/compiled/dbt_williamgrant/models/marts/core/"
    "dim_distributors.sql",
    "dbtflow schedules apply prefect.yaml": "schedules already match",
}


@dataclass(frozen=True)
class Block:
    line: int
    script: str
    commands: tuple[str, ...]

    @property
    def pending(self) -> str | None:
        """Why this block cannot run yet, or None; a block mixing pending and runnable commands is an error."""
        pending = [c for c in self.commands if any(c.startswith(p) for p in PENDING)]
        if not pending:
            return None
        if len(pending) != len(self.commands):
            raise AssertionError(f"runbook line {self.line}: keep pending commands in a block of their own")
        return "; ".join(sorted({PENDING[p] for c in pending for p in PENDING if c.startswith(p)}))


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


def test_the_runbook_has_commands_and_pending_entries_are_used() -> None:
    assert len(BLOCKS) >= 8
    used = {p for b in BLOCKS for c in b.commands for p in PENDING if c.startswith(p)}
    assert used == set(PENDING), f"PENDING entries no command uses: {set(PENDING) - used}"
    for block in BLOCKS:
        block.pending  # noqa: B018  (raises if a block mixes pending and runnable commands)


@pytest.mark.parametrize("prefix", sorted(PENDING))
def test_pending_commands_exist(prefix: str) -> None:
    """A pending command is a real command (tested elsewhere, see PENDING), never a typo in the runbook."""
    argv = [str(BIN / "dbtflow"), *prefix.split()[1:], "--help"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def runbook_env(stack: Stack) -> Iterator[tuple[Path, dict[str, str]]]:
    """The placeholders: a failed prod run of the deployment, a failed local run to retry, a fake dbt Cloud."""
    from tests.fakes.dbtcloud_server import ADMIN_TOKEN, FakeDbtCloud

    repo = stack.folder.parent / "repo"
    deployment = stack.deployment()
    # Runs share one working folder here, so the DuckDB "warehouse" persists between runs as a real one does
    # (a process worker's default is a fresh temporary folder, hence a fresh clone and an empty DuckDB, per run).
    work = stack.folder / "runbook-work"
    work.mkdir(exist_ok=True)
    _patch_job_variables(stack, deployment["id"], {**deployment["job_variables"], "working_dir": str(work)})
    try:
        env = {
            **stack.env,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "DBTFLOW_RUNS_DIR": str(stack.folder / "runs"),
            "DBTFLOW_ALERT_URL": SLACK_SHAPED,
            "FLOW_RUN_ID": _failed_prod_run(stack, deployment["id"]),
        }
        _failed_local_run(repo, env)
        with FakeDbtCloud() as cloud:
            env.update(
                DBT_CLOUD_HOST=cloud.url,
                DBT_CLOUD_ACCOUNT_ID="1",
                DBT_CLOUD_API_TOKEN=ADMIN_TOKEN,
                DBT_CLOUD_JOB_ID="1001",
            )
            yield repo, env
    finally:
        _patch_job_variables(stack, deployment["id"], deployment["job_variables"])


def _failed_prod_run(stack: Stack, deployment_id: str) -> str:
    parameters = {
        "target": "prod",
        "command": "build --indirect-selection cautious",
        "select": "+dim_distributors",
        "vars": {"reporting_end_date": "not-a-date"},  # dim_distributors casts it: fails in DuckDB, compiled
    }
    failed = str(stack.post(f"/deployments/{deployment_id}/create_flow_run", {"parameters": parameters})["id"])
    deadline = time.monotonic() + 600
    while (run := stack.get(f"/flow_runs/{failed}"))["state"]["type"] not in ("COMPLETED", "FAILED", "CRASHED"):
        assert time.monotonic() < deadline, f"the failing prod run did not finish: {run['state']}"
        time.sleep(2)
    assert run["state"]["type"] == "FAILED" and "model dim_distributors error" in run["state"]["message"], run["state"]
    return failed


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


def _patch_job_variables(stack: Stack, deployment_id: str, job_variables: dict[str, object]) -> None:
    for attempt in range(6):  # a loaded SQLite-backed server answers 503 when its database is busy
        response = httpx.patch(
            f"{stack.api}/deployments/{deployment_id}", json={"job_variables": job_variables}, timeout=30
        )
        if response.status_code != 503 or attempt == 5:
            response.raise_for_status()
            return
        time.sleep(2 * (attempt + 1))


@pytest.mark.parametrize("block", BLOCKS, ids=[f"L{b.line}:{b.commands[0][:40]}" for b in BLOCKS])
def test_runbook_block(block: Block, runbook_env: tuple[Path, dict[str, str]]) -> None:
    if block.pending:
        pytest.skip(f"pending (listed in PENDING): {block.pending}")
    repo, env = runbook_env
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.script], cwd=repo, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, (
        f"runbook line {block.line} failed:\n{block.script}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    for command in block.commands:
        if command in EXPECT:
            assert EXPECT[command] in done.stdout, f"{command}: no {EXPECT[command]!r} in\n{done.stdout[-3000:]}"
    if "dbtflow status --since 7d --json" in block.commands:
        status = json.loads(done.stdout[done.stdout.index("\n{\n") :])
        assert {t["target"] for t in status["targets"]} >= {"prod"}
        assert any(n["node"] == "model dim_distributors" for t in status["targets"] for n in t["top_failed_nodes"])
