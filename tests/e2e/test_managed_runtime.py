"""Prefect Cloud's managed runtime, replayed: what a run of the `uvx prefect-cloud deploy` deployment does.

prefect-cloud 0.1.13 writes two pull steps: a git clone of the repository (Prefect's `git_clone`:
`git clone <url> --branch <ref> --depth 1`) and, in the clone, `uv pip install -r <requirements>`.
Then Prefect's runner loads the entrypoint (`load_flow_from_entrypoint`) and calls the flow. Here
that runs in a brand-new virtualenv (nothing installed) with a fresh Prefect home, against this
session's Prefect server, on the `local` target; the clone is deleted afterwards. The timings
(clone start -> dbt starting, and the whole run) are printed and quoted in docs/deploy.md.

The seed form (`--with prefect --with "prefect-dbt[all_extras]" --with dbt-snowflake==<pin>`, no
requirements file) is decided here too: prefect-cloud checks it with `uv pip install --dry-run`, and
that resolution is what the managed run would install.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from dbtflow.deploy import _cloud_quickstart as cloud_quickstart
from tests.conftest import BIN, REPO
from tests.e2e.conftest import _snapshot

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ENTRYPOINT = "flows/dbt_wg_flow.py:run_dbt_wg"
REQUIREMENTS = "requirements-prefect.txt"
# Run in the new venv from the clone, as Prefect's runner would: load the entrypoint, call the flow.
# dbtRunner.invoke is timed (a probe, not product code): "dbt starting" is its first call.
RUNNER = """
import json, sys, time
began = time.time()
import dbt.cli.main, dbt.version
starts = []
_invoke = dbt.cli.main.dbtRunner.invoke
def invoke(self, *args, **kwargs):
    starts.append(time.time())
    return _invoke(self, *args, **kwargs)
dbt.cli.main.dbtRunner.invoke = invoke
import prefect, dbtflow
from prefect.flows import load_flow_from_entrypoint
flow = load_flow_from_entrypoint(sys.argv[1])
loaded = time.time()
state = flow(target="local", return_state=True)
result = {"began": began, "loaded": loaded, "state": state.type.value, "message": state.message,
          "dbt_started": starts[0] if starts else None, "prefect": prefect.__version__}
print(json.dumps({**result, "dbt": dbt.version.__version__, "dbtflow": dbtflow.__file__}))
"""


def pinned(name: str) -> str:
    found = re.search(rf"^{re.escape(name)}==(\S+)", (REPO / REQUIREMENTS).read_text(), re.M)
    assert found, f"{name} is not pinned in {REQUIREMENTS}"
    return found.group(1)


def new_venv(folder: Path) -> dict[str, str]:
    """A brand-new virtualenv (Python 3.11, nothing installed) and a clean environment that uses it."""
    subprocess.run([str(BIN / "uv"), "venv", "--quiet", "--python", "3.11", str(folder)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "DBTFLOW_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(VIRTUAL_ENV=str(folder), PATH=f"{folder / 'bin'}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}")
    listed = subprocess.run([str(BIN / "uv"), "pip", "list"], env=env, capture_output=True, text=True, check=True)
    assert listed.stdout.strip() == "", f"the new venv is not empty: {listed.stdout}"
    return env


def test_the_pull_steps_are_prefect_clouds():
    """What this file replays is what prefect-cloud 0.1.13 writes."""
    import prefect_cloud.cli.deployments as deploy_cli
    from prefect_cloud.github import GitHubRepo

    (clone,) = GitHubRepo.from_url("acme/dbtflow").public_repo_pull_steps()
    assert clone == {
        "prefect.deployments.steps.git_clone": {
            "id": "git-clone",
            "repository": "https://github.com/acme/dbtflow.git",
            "branch": "main",
        }
    }
    assert 'f"uv pip install -r {with_requirements}"' in inspect.getsource(deploy_cli)


def test_managed_runtime_replay_runs_the_entrypoint_to_completed(prefect_api: str, tmp_path: Path):
    repo = _snapshot(tmp_path / "origin")
    work, venv = tmp_path / "work", tmp_path / "venv"
    work.mkdir()
    env = new_venv(venv)
    env.update(
        PREFECT_API_URL=prefect_api,
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DBTFLOW_RUNS_DIR=str(tmp_path / "runs"),
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
    )
    clone = work / "dbtflow"
    try:
        began = time.time()
        git = ["git", "clone", f"file://{repo}", "--branch", "main", "--depth", "1", str(clone)]
        subprocess.run(git, check=True, capture_output=True, timeout=120)
        cloned = time.time()
        install = f"uv pip install -r {REQUIREMENTS}"  # prefect-cloud's script, run in the clone
        done = subprocess.run(shlex.split(install), cwd=clone, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        installed = time.time()
        python = str(venv / "bin" / "python")
        done = subprocess.run(
            [python, "-c", RUNNER, ENTRYPOINT], cwd=clone, env=env, capture_output=True, text=True, timeout=900
        )
        ended = time.time()
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(venv, ignore_errors=True)

    assert not work.exists()
    assert result["state"] == "COMPLETED", result["message"]
    assert result["prefect"] == pinned("prefect") and result["dbt"] == pinned("dbt-core")
    assert result["dbtflow"].startswith(str(clone / "src")), "dbtflow must come from the clone (`-e .`)"
    assert result["dbt_started"] is not None
    r = result
    phases = {
        "clone": cloned - began,
        f"uv pip install -r {REQUIREMENTS}": installed - cloned,
        "python start": r["began"] - installed,
        "imports + load_flow_from_entrypoint": r["loaded"] - r["began"],
        "flow run to dbt": r["dbt_started"] - r["loaded"],
    }
    print(
        "\nmanaged-runtime replay (Python 3.11, new venv, warm uv cache): "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in phases.items())
        + f"; dbt started {r['dbt_started'] - began:.1f} s after the clone began; total {ended - began:.1f} s;"
        + f" prefect {r['prefect']}, dbt-core {r['dbt']}"
    )


def test_the_seed_form_does_not_install_the_runtime(tmp_path: Path):
    """prefect-cloud's check of `--with` packages is `uv pip install --dry-run`: what it would install, exactly."""
    seed = shlex.split(cloud_quickstart.SEED)[1::2]
    assert seed == ["prefect", "prefect-dbt[all_extras]", f"dbt-snowflake=={pinned('dbt-snowflake')}"]
    env = new_venv(tmp_path / "venv")
    done = subprocess.run(
        [str(BIN / "uv"), "pip", "install", "--dry-run", *seed], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    would = dict(re.findall(r"^ \+ ([A-Za-z0-9_.\-]+)==(\S+)", done.stderr + done.stdout, re.M))
    assert "prefect" in would, done.stderr[-3000:]
    missing = {"dbtflow", "dbt-duckdb"} - set(would)
    assert missing == {"dbtflow", "dbt-duckdb"}, would
    assert would["dbt-core"].startswith("1.12.") and pinned("dbt-core") == "1.11.16", would["dbt-core"]
    assert cloud_quickstart.SEED_FORM in cloud_quickstart.commands(ENTRYPOINT, "<org>/<repo>", [])
