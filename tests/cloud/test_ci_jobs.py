"""dbt Cloud CI jobs and merge jobs -> deployments of the same flow (docs/ci-jobs.md).

Against the fake dbt Cloud server (jobs 1008 CI and 1009 merge of the fixtures, others added per
test); the per-PR schema macro of the docs on a DuckDB project with real dbt; and the docs'
GitHub Actions command run for real against the local stack (a Prefect server and a process
worker on loopback), deferring to a prod run kept in the run store.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from dbtflow import cli
from tests.conftest import BIN, REPO
from tests.fakes.dbtcloud_server import ADMIN_TOKEN, FakeDbtCloud

runner = CliRunner()
DOC = REPO / "docs" / "ci-jobs.md"
CI_TRIGGERS = {"github_webhook": True, "schedule": False, "git_provider_webhook": True, "on_merge": False}
MAPS = ("--target-map", "Production=prod", "--target-map", "Staging=dev")


def invoke(fake: FakeDbtCloud, folder: Path, *args: str) -> Any:
    env = {"DBT_CLOUD_API_TOKEN": ADMIN_TOKEN, "DBT_CLOUD_ACCOUNT_ID": None, "DBT_CLOUD_HOST": None}
    argv = ["cloud", "import-jobs", "--base-url", fake.url, "--account", "1", "--output", str(folder / "s.yaml")]
    return runner.invoke(cli.app, [*argv, "--prefect-yaml", str(REPO / "prefect.yaml"), *args], env=env)


def ci_job(fake: FakeDbtCloud, **fields: Any) -> int:
    base = {"account_id": 1, "project_id": 10, "environment_id": 101, "job_type": "ci", "triggers": CI_TRIGGERS,
            "execute_steps": ["dbt build --select state:modified+"],
            "settings": {"threads": 4, "target_name": "ci"}}  # fmt: skip
    return int(fake.add_job(**{**base, **fields})["id"])


def deployments(folder: Path) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in yaml.safe_load((folder / "prefect.yaml").read_text())["deployments"]}


def test_ci_and_merge_jobs_become_deployments_with_state_defer_and_the_pr_schema(
    dbt_cloud: FakeDbtCloud, tmp_path: Path
) -> None:
    result = invoke(dbt_cloud, tmp_path, "--job", "1008", "--job", "1009", *MAPS,
                    "--project-dir", str(REPO / "tenants/dbt_williamgrant"))  # fmt: skip
    assert result.exit_code == 0, result.output
    found = deployments(tmp_path)
    ci, merge = found["ci-check"], found["merge-deploy"]
    assert ci["parameters"] == {
        "target": "dev",  # the CI job's own environment (Staging)
        "steps": ["build --select state:modified+"],
        "threads": 4,
        "generate_docs": False,
        "source_freshness": False,
        "state": "latest-success:prod",  # it defers to environment 102, Production -> prod
        "defer": True,
        "vars": {"dbtflow_pr_schema": "dbt_cloud_pr_1008_manual"},
    }
    assert ci["tags"] == ["dbt-cloud-job-1008", "dbt-cloud-ci"] and ci["schedules"] == [] and "triggers" not in ci
    clone, checkout, install = ci["pull"]
    assert clone["prefect.deployments.steps.git_clone"]["id"] == "clone"
    assert checkout["prefect.deployments.steps.run_shell_script"] == {
        "directory": "{{ clone.directory }}",
        "script": "git fetch --quiet --depth 1 origin $DBTFLOW_GIT_REF\ngit checkout --quiet --force FETCH_HEAD",
        "expand_env_vars": True,
    }
    assert "uv pip install" in install["prefect.deployments.steps.run_shell_script"]["script"]
    assert ci["work_pool"] == {
        "name": "{{ $DBTFLOW_WORK_POOL }}",
        "job_variables": {"env": {"DBTFLOW_GIT_REF": "{{ $DBTFLOW_GIT_BRANCH }}"}},
    }
    assert merge["parameters"]["target"] == "prod" and merge["parameters"]["state"] == "latest-success:prod"
    assert merge["parameters"]["defer"] is True and "vars" not in merge["parameters"]
    assert merge["tags"] == ["dbt-cloud-job-1009", "dbt-cloud-merge"] and len(merge["pull"]) == 2
    assert yaml.safe_load((tmp_path / "s.yaml").read_text())["schedules"] == []
    lines = result.output.splitlines()
    assert "  job 1008 -> deployment ci-check: on pull requests (start it from git CI: docs/ci-jobs.md), " \
           "target dev: build --select state:modified+" in lines  # fmt: skip
    limits = [x for x in lines if x.startswith("limit: ")]
    assert len(limits) == 5 and all(x.count("\n") == 0 for x in limits)
    for words in ("no webhook", "no PR comment", "not dropped when the pull request closes", "run store", "queue"):
        assert any(words in x for x in limits), words
    (command,) = [x for x in lines if x.startswith("  job 1008 ci: ")]
    assert command.removeprefix("  job 1008 ci: ") == " ".join(_doc_command().split())  # what the docs show


def test_a_deferral_to_a_job_takes_that_jobs_environment_target(dbt_cloud: FakeDbtCloud, tmp_path: Path) -> None:
    # the older form: "defer to job 1001" (Production): read, not imported
    job = ci_job(dbt_cloud, name="Old CI", deferring_job_definition_id=1001)
    result = invoke(dbt_cloud, tmp_path, "--job", str(job), *MAPS)
    assert result.exit_code == 0, result.output
    assert deployments(tmp_path)["old-ci"]["parameters"]["state"] == "latest-success:prod"
    assert list(deployments(tmp_path)) == ["old-ci"]
    assert f"  job {job} 'Old CI': defers to job 1001 'Prod daily build' (environment 'Production')" in result.output


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"deferring_environment_id": 999}, "defers to environment 999, which dbt Cloud does not list (missing or"),
        ({"deferring_environment_id": 200}, "defers to environment 'Bulk prod' (200) of project 20"),
        ({"deferring_environment_id": 103}, "defers to environment 103, which dbt Cloud does not list (missing or"),
        ({"deferring_job_definition_id": 4242}, "defers to job 4242, which dbt Cloud did not return"),
        ({"deferring_job_definition_id": 2000}, "(dbt Cloud project 10) defers to job 2000 of project 20"),
    ],
)  # fmt: skip
def test_a_deferral_dbtflow_cannot_follow_is_one_line_and_nothing_is_written(
    dbt_cloud: FakeDbtCloud, tmp_path: Path, fields: dict[str, Any], expected: str
) -> None:
    dbt_cloud.environments[103] = {**dbt_cloud.environments[102], "id": 103, "name": "Old prod", "state": 2}
    job = ci_job(dbt_cloud, name="Bad CI", **fields)
    result = invoke(dbt_cloud, tmp_path, "--job", "1001", "--job", str(job), *MAPS)
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and f"CI job {job} 'Bad CI'" in result.output, result.output
    assert expected in result.output and "nothing was written" in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_ci_jobs_that_cannot_be_translated_are_skipped_with_the_reason(dbt_cloud: FakeDbtCloud, tmp_path: Path) -> None:
    unmapped = ci_job(dbt_cloud, name="Unmapped", deferring_environment_id=102)
    nothing = ci_job(dbt_cloud, name="No deferral")
    own_vars = ci_job(dbt_cloud, name="Own vars", deferring_environment_id=102,
                      execute_steps=["dbt build --select state:modified+ --vars '{a: 1}'"])  # fmt: skip
    result = invoke(dbt_cloud, tmp_path, "--job", str(unmapped), "--job", str(nothing))
    assert result.exit_code == 0, result.output
    assert f"  job {unmapped} 'Unmapped': it defers to environment 'Production' (102), which has no target; " \
           "instead: map it: --target-map 'Production=<target>'" in result.output  # fmt: skip
    assert f"  job {nothing} 'No deferral': its steps select by state: but it defers to nothing" in result.output
    result = invoke(dbt_cloud, tmp_path, "--job", str(own_vars), *MAPS)
    assert f"  job {own_vars} 'Own vars': its steps pass --vars" in result.output


def test_a_ci_job_of_a_project_whose_macros_ignore_the_pr_schema_is_skipped(
    dbt_cloud: FakeDbtCloud, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    shutil.copytree(
        REPO / "tenants/dbt_williamgrant", project, ignore=shutil.ignore_patterns("target", ".duckdb", "logs")
    )
    macro = project / "macros" / "generate_schema_name.sql"
    macro.write_text(re.sub(r"var\('dbtflow_pr_schema', none\)", "none", macro.read_text()))
    out = tmp_path / "out"
    out.mkdir()
    result = invoke(dbt_cloud, out, "--job", "1008", *MAPS, "--project-dir", str(project))
    assert result.exit_code == 0, result.output
    assert f"  job 1008 'CI check': no macro of {project} reads var('dbtflow_pr_schema')" in result.output
    assert not (out / "prefect.yaml").exists()


def _doc_workflow() -> dict[str, Any]:
    block = re.search(r"```yaml\n(name: dbt CI\n.*?)```", DOC.read_text(), re.S)
    assert block, "docs/ci-jobs.md has no `name: dbt CI` workflow"
    return yaml.safe_load(block.group(1))  # type: ignore[no-any-return]


def _doc_command() -> str:
    (step,) = [s for s in _doc_workflow()["jobs"]["dbt-ci"]["steps"] if "prefect deployment run" in s.get("run", "")]
    return str(step["run"]).replace("\\\n", " ")


def _doc_macro() -> str:
    block = re.search(r"```sql\n(.*?)```", DOC.read_text(), re.S)
    assert block, "docs/ci-jobs.md has no macro"
    return block.group(1)


def test_the_docs_macro_puts_every_node_in_the_pr_schema_and_nothing_without_the_var(tmp_path: Path) -> None:
    from dbt.cli.main import dbtRunner

    project = tmp_path / "proj"
    (project / "macros").mkdir(parents=True)
    (project / "models" / "marts").mkdir(parents=True)
    (project / "macros" / "generate_schema_name.sql").write_text(_doc_macro())
    (project / "dbt_project.yml").write_text(
        "name: proj\nversion: '1.0'\nconfig-version: 2\nprofile: proj\n"
        "models:\n  proj:\n    marts:\n      +schema: marts\n"
    )
    (project / "profiles.yml").write_text(
        f"proj:\n  target: ci\n  outputs:\n    ci:\n      type: duckdb\n      path: {project / 'db.duckdb'}\n"
        "      schema: main\n      threads: 1\n"
    )
    (project / "models" / "base.sql").write_text("select 1 as id")
    (project / "models" / "marts" / "fct.sql").write_text("select * from {{ ref('base') }}")
    common = ["--project-dir", str(project), "--profiles-dir", str(project)]
    assert dbtRunner().invoke(["build", *common]).success
    pr = json.dumps({"dbtflow_pr_schema": "DBT_Cloud_PR_7_3"})
    assert dbtRunner().invoke(["build", *common, "--vars", pr]).success
    import duckdb

    with duckdb.connect(str(project / "db.duckdb")) as db:  # the same configuration as dbt-duckdb's, still open
        tables = set(db.sql("select table_schema, table_name from information_schema.tables").fetchall())
    assert tables == {
        ("main", "base"), ("main_marts", "fct"),  # dbt's default naming without the var
        ("dbt_cloud_pr_7_3", "base"), ("dbt_cloud_pr_7_3_marts", "fct"),  # the PR's schemas
    }  # fmt: skip


# -- the docs' GitHub Actions command, for real -------------------------------------------------


@pytest.mark.e2e
@pytest.mark.slow
def test_the_docs_github_step_runs_the_ci_deployment_on_the_pr_in_its_schema_deferring_to_prod(
    dbt_cloud: FakeDbtCloud, tmp_path: Path, stack: Any
) -> None:
    import duckdb

    repo = stack.folder.parent / "repo"  # the git repository the stack's deployments clone
    model = "tenants/dbt_williamgrant/models/intermediate/int_months.sql"
    git = ["git", "-C", str(repo), "-c", "user.email=pr@dbtflow", "-c", "user.name=pr"]
    subprocess.run([*git, "checkout", "-q", "-b", "pr-42"], check=True)
    (repo / model).write_text(f"select *, 42 as changed_by_pr from (\n{(repo / model).read_text()}\n) as before_pr\n")
    subprocess.run([*git, "commit", "-qam", "PR 42"], check=True)
    subprocess.run([*git, "update-ref", "refs/pull/42/head", "HEAD"], check=True)  # as GitHub keeps a PR's head
    subprocess.run([*git, "checkout", "-q", "main"], check=True)
    subprocess.run([*git, "branch", "-q", "-D", "pr-42"], check=True)

    # import CI job 1008; its Staging environment shares prod's warehouse here (DuckDB: one file)
    result = invoke(dbt_cloud, tmp_path, "--job", "1008", "--target-map", "Production=prod",
                    "--target-map", "Staging=prod")  # fmt: skip
    assert result.exit_code == 0, result.output
    warehouse = tmp_path / "warehouse"  # both runs clone here, so the DuckDB file outlives each run
    warehouse.mkdir()
    doc = yaml.safe_load((tmp_path / "prefect.yaml").read_text())
    doc["deployments"][0]["work_pool"]["job_variables"]["working_dir"] = str(warehouse)
    (tmp_path / "prefect.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    stack.cli(str(BIN / "prefect"), "--no-prompt", "deploy", "--prefect-file", str(tmp_path / "prefect.yaml"), "--all")

    prod = stack.cli(str(BIN / "prefect"), "deployment", "run", "run_dbt_wg/dbt_wg", "-p", "target=prod",
                     "--job-variable", f"working_dir={warehouse}", "--watch", timeout=900)  # fmt: skip
    assert "Completed" in prod.stdout, prod.stdout

    deployed = stack.get("/deployments/name/run_dbt_wg/ci-check")["job_variables"]
    assert deployed["env"] == {"DBTFLOW_GIT_REF": "main"}  # the deployed branch, unless git CI passes the PR's ref
    env = {**stack.env, "PR_NUMBER": "42", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    ci = subprocess.run(["bash", "-ec", _doc_command()], cwd=tmp_path, env=env, capture_output=True, text=True,
                        timeout=900)  # fmt: skip
    assert ci.returncode == 0, ci.stdout + ci.stderr
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", ci.stdout)
    assert run_id, ci.stdout
    record = json.loads((stack.run_folder(run_id.group(1)) / "run.json").read_text())
    argv = record["steps"][0]["argv"]
    assert "--defer" in argv and "--state" in argv and "state:modified+" in argv
    results = json.loads(next(stack.run_folder(run_id.group(1)).glob("*-build/run_results.json")).read_text())
    built = {r["unique_id"] for r in results["results"] if r["unique_id"].startswith("model.")}
    assert "model.dbt_williamgrant.int_months" in built and "model.dbt_williamgrant.stg_brands" not in built

    (database,) = warehouse.glob("*/tenants/dbt_williamgrant/.duckdb/wg_prod.duckdb")
    with duckdb.connect(str(database), read_only=True) as db:
        query = (
            "select schema_name from duckdb_tables() union select schema_name from duckdb_views() where not internal"
        )
        schemas = {s for (s,) in db.sql(query).fetchall()}
        pr_view = "dbt_cloud_pr_1008_42_intermediate.int_months"
        (marker,) = db.sql(f"select changed_by_pr from {pr_view} limit 1").fetchone() or (None,)
        columns = "select column_name from information_schema.columns where table_schema = 'intermediate' "
        prod_columns = {c for (c,) in db.sql(columns + "and table_name = 'int_months'").fetchall()}
    assert marker == 42 and "changed_by_pr" not in prod_columns  # the PR's code, in the PR's schema only
    assert {"staging", "intermediate", "marts", "dbt_cloud_pr_1008_42_intermediate", "dbt_cloud_pr_1008_42_marts"} \
        <= schemas  # fmt: skip
    assert "dbt_cloud_pr_1008_42_staging" not in schemas  # unchanged staging models: deferred to prod's
