"""dbt Cloud CI jobs (pull requests) and merge jobs -> deployments of the same flow (`dbtflow cloud import-jobs`).

Contract
- `kind(job)` is `"ci"` for a CI job (`job_type: ci`, or `triggers.github_webhook` /
  `git_provider_webhook`), `"merge"` for a merge job (`job_type: merge`, or `triggers.on_merge`),
  else None. Such a job becomes an Entry with `kind` set and a deployment of its own (no
  schedule, no trigger: git CI starts it with `prefect deployment run`, docs/ci-jobs.md).
- `plan(job, environments, jobs, env_target, selects_by_state)` resolves what the job defers to, as dbt Cloud does:
  `deferring_environment_id` (that environment's target, by `--target-map`) or the older
  `deferring_job_definition_id` (that job's environment's target). It raises `UserError` (one line,
  nothing written) for a deferral to an environment or job the account does not have, one that
  is deleted, or one in another dbt Cloud project; `Skip` (reason, what to do instead: the
  importer lists the job as skipped) when the deferral environment has no target (no
  `--target-map` entry; a deferred-to job's own `target_name` is used as dbt Cloud does) or when
  the steps select by state and nothing is deferred to.
- `check_project(plan, project_dir)` (with `--project-dir`) raises `Skip` for a CI job when no
  macro of the project reads the var: its PR runs would build into the usual schemas.
- `read_deferred(client, jobs)` reads the jobs that CI and merge jobs defer to (not imported).
- `parameters(plan, params, steps)` adds to the job's flow parameters: `state: latest-success:<target>`
  and `defer: true` when the job defers, and for CI jobs `vars: {dbtflow_pr_schema: ...}` (default
  `dbt_cloud_pr_<job id>_manual`; git CI passes `dbt_cloud_pr_<job id>_<PR number>`, the name dbt
  Cloud gives its PR schemas). The steps stay as dbt Cloud has them (`build --select
  state:modified+` is dbt Cloud's default CI step). The project's `generate_schema_name` must read
  the var (docs/ci-jobs.md has the macro; the tenant's reads it).
- `adapt_deployment(doc, kind)` adds to the generated prefect.yaml deployment: the tag
  `dbt-cloud-ci` / `dbt-cloud-merge` and, for CI jobs when the pull steps clone with
  `git_clone`, a step right after the clone that fetches and checks out `$DBTFLOW_GIT_REF`
  (`work_pool.job_variables.env`, default the branch the clone step names; git CI passes
  `refs/pull/<N>/head`), so the run builds the pull request's code.
- `command(kind, deployment, job_id)` is the `prefect deployment run` line git CI runs;
  `LIMITS` are the lines import-jobs prints, one each, whenever it imported a CI or merge job.

Pitfalls
- Prefect merges a run's `env` job variable into the deployment's (`BaseWorker`), so passing
  `DBTFLOW_GIT_REF` per run keeps the deployment's other environment variables.
- `$DBTFLOW_GIT_REF` is expanded by the pull step at run time (`expand_env_vars`), never by
  `prefect deploy`: a `{{ $VAR }}` placeholder would be filled in once, when deploying.
- The flow runs one run per target at a time: CI runs of several pull requests on one target
  queue behind each other (and behind that target's scheduled runs).
- `latest-success:<target>` is the newest successful run of that target in the run store, whatever
  deployment ran it; dbt Cloud's "defer to job N" meant that job's last successful run.
- prefect.yaml keeps job variables under `work_pool.job_variables`: `prefect deploy` silently
  ignores a deployment's top-level `job_variables` key.
- dbt Cloud's environment list leaves deleted environments out: a deferral to one reads as missing.
- The per-PR schema only isolates a PR when `generate_schema_name` reads the var: a project whose
  macro does not would build the PR into its usual schemas (docs/ci-jobs.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dbtflow.cloud._client import DbtCloudClient, DbtCloudError, Environment, Job
from dbtflow.errors import UserError

PR_SCHEMA_VAR = "dbtflow_pr_schema"
GIT_REF_ENV = "DBTFLOW_GIT_REF"
GIT_CLONE = "prefect.deployments.steps.git_clone"
SHELL = "prefect.deployments.steps.run_shell_script"
TAGS = {"ci": "dbt-cloud-ci", "merge": "dbt-cloud-merge"}
WHEN = {
    "ci": "on pull requests (start it from git CI: docs/ci-jobs.md)",
    "merge": "on merge (start it from git CI on the default branch: docs/ci-jobs.md)",
}
LIMITS = (
    "limit: no webhook: dbt Cloud starts CI and merge jobs on its git webhook, Prefect does not; "
    "start the deployments from your git CI (docs/ci-jobs.md)",
    "limit: no PR comment and no commit status from Prefect: the git CI step's exit code "
    "(`prefect deployment run ... --watch`) is the check",
    "limit: per-PR schemas are not dropped when the pull request closes (dbt Cloud drops them): "
    "drop them from a `pull_request: closed` workflow (docs/ci-jobs.md)",
    "limit: deferral reads the newest successful run of the target in the run store (run_storage / "
    "DBTFLOW_RUN_STORAGE), whatever deployment ran it; with no such run the CI run fails with one line",
    "limit: runs of one target never overlap: CI runs of several pull requests queue one after another, "
    "and a new push does not cancel the older run (dbt Cloud cancels it)",
)

EnvTarget = Callable[[Environment], str | None]  # the --target-map target of an environment, or None


class Skip(Exception):
    """A CI or merge job that is not imported: `reason` and what to do `instead`."""

    def __init__(self, reason: str, instead: str) -> None:
        super().__init__(reason)
        self.reason, self.instead = reason, instead


@dataclass(frozen=True)
class Plan:
    """A CI or merge job: its kind and the target it defers to (None: no deferral)."""

    kind: str
    job_id: int
    defer_target: str | None
    deferral: str  # e.g. "environment 'Production' (102)", "" without deferral


def kind(job: Job) -> str | None:
    t = job.triggers
    if job.job_type == "ci" or t.github_webhook or t.git_provider_webhook:
        return "ci"
    if job.job_type == "merge" or t.on_merge:
        return "merge"
    return None


def plan(
    job: Job,
    environments: Mapping[int, Environment],
    jobs: Mapping[int, Job],
    env_target: EnvTarget,
    selects_by_state: bool,
) -> Plan | None:
    """The job's Plan, or None when it is no CI or merge job; raises UserError / Skip (Contract)."""
    found = kind(job)
    if found is None:
        return None
    what = f"{'CI' if found == 'ci' else 'merge'} job {job.id} {job.name!r}"
    if job.deferring_environment_id:
        env = _deferral_environment(what, job, job.deferring_environment_id, environments)
        target = env_target(env)
        if not target:
            raise Skip(
                f"it defers to environment {env.name!r} ({env.id}), which has no target",
                f"map it: --target-map '{env.name}=<target>' (the target of your production runs)",
            )
        return Plan(found, job.id, target, f"environment {env.name!r} ({env.id})")
    if job.deferring_job_definition_id:
        other = jobs.get(job.deferring_job_definition_id)
        if other is None:
            raise UserError(
                f"{what} defers to job {job.deferring_job_definition_id}, which dbt Cloud did not return: "
                "set its deferral in dbt Cloud to a live job or environment of its project and import again; "
                "nothing was written"
            )
        if other.state != 1:
            raise UserError(
                f"{what} defers to job {other.id} {other.name!r}, which is deactivated or deleted in dbt Cloud: "
                "defer to a live job or environment of its project in dbt Cloud and import again; nothing was written"
            )
        if other.project_id != job.project_id:
            raise UserError(
                f"{what} (dbt Cloud project {job.project_id}) defers to job {other.id} of project {other.project_id}: "
                "defer to a job or environment of the same project in dbt Cloud and import again; nothing was written"
            )
        env = _deferral_environment(what, job, other.environment_id, environments)
        target = env_target(env) or other.settings.target_name
        if not target:
            raise Skip(
                f"it defers to job {other.id}, whose environment {env.name!r} has no target",
                f"map it: --target-map '{env.name}=<target>'",
            )
        return Plan(found, job.id, target, f"job {other.id} {other.name!r} (environment {env.name!r})")
    if selects_by_state:
        raise Skip(
            "its steps select by state: but it defers to nothing, so there is nothing to compare with",
            "set 'Defer to' (the production environment) on the job in dbt Cloud and import again",
        )
    return Plan(found, job.id, None, "")


def _deferral_environment(what: str, job: Job, env_id: int, environments: Mapping[int, Environment]) -> Environment:
    env = environments.get(env_id)
    if env is None or env.state != 1:
        names = ", ".join(f"{e.name} ({e.id})" for e in sorted(environments.values(), key=lambda e: e.id) if
                          e.project_id == job.project_id and e.state == 1) or "none"  # fmt: skip
        state = "is deleted" if env is not None else "dbt Cloud does not list (missing or deleted)"
        raise UserError(
            f"{what} defers to environment {env_id}, which {state} (live environments of project {job.project_id}: "
            f"{names}): fix 'Defer to' on the job in dbt Cloud and import again; nothing was written"
        )
    if env.project_id != job.project_id:
        raise UserError(
            f"{what} (dbt Cloud project {job.project_id}) defers to environment {env.name!r} ({env.id}) of project "
            f"{env.project_id}: defer to an environment of the same project in dbt Cloud and import again; "
            "nothing was written"
        )
    return env


def read_deferred(client: DbtCloudClient, jobs: Mapping[int, Job]) -> dict[int, Job]:
    """The jobs that the CI and merge jobs of `jobs` defer to and that are not among them (read, not imported).

    A job dbt Cloud does not have (404) is left out: `plan` then says which job defers to it.
    """
    out: dict[int, Job] = {}
    for job in jobs.values():
        wanted = job.deferring_job_definition_id
        if kind(job) and job.state == 1 and wanted and wanted not in jobs and wanted not in out:
            try:
                out[wanted] = client.get_job(wanted)
            except DbtCloudError as exc:
                if exc.status_code != 404:
                    raise
    return out


def parameters(found: Plan, params: Mapping[str, Any], steps: list[str]) -> dict[str, Any]:
    """The job's flow parameters with state, defer and (CI) the per-PR schema var; raises Skip."""
    out = dict(params)
    if found.defer_target:
        out["state"] = f"latest-success:{found.defer_target}"
        out["defer"] = True
    if found.kind == "ci":
        if any("--vars" in s.split() for s in steps):
            raise Skip(
                "its steps pass --vars, and a CI run passes the per-PR schema in vars",
                "move the vars into dbt_project.yml (or the deployment's vars) and import again",
            )
        out["vars"] = {PR_SCHEMA_VAR: f"dbt_cloud_pr_{found.job_id}_manual"}
    return out


_READS_PR_SCHEMA = re.compile(r"""var\(\s*['"]""" + PR_SCHEMA_VAR + r"""['"]""")


def check_project(found: Plan, project_dir: Path) -> None:
    """Raise Skip for a CI job when no macro of the project reads the per-PR schema var (its PRs would
    build into the target's usual schemas)."""
    if found.kind != "ci":
        return
    try:
        config = yaml.safe_load((project_dir / "dbt_project.yml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    folders = config.get("macro-paths") if isinstance(config, dict) else None
    for folder in folders if isinstance(folders, list) else ["macros"]:
        for path in sorted((project_dir / str(folder)).rglob("*.sql")):
            if _READS_PR_SCHEMA.search(path.read_text(errors="replace")):
                return
    raise Skip(
        f"no macro of {project_dir} reads var('{PR_SCHEMA_VAR}'), so its pull requests would build into the "
        "target's usual schemas",
        "add the generate_schema_name macro of docs/ci-jobs.md to the project and import again",
    )


def notes(found: Plan, job: Job) -> list[str]:
    """What the deployment does differently from dbt Cloud, for this job."""
    out: list[str] = []
    if found.defer_target:
        out.append(f"defers to {found.deferral} in dbt Cloud: state latest-success:{found.defer_target} and defer")
    if found.kind == "ci":
        out.append(
            f"per-PR schema: var {PR_SCHEMA_VAR} (generate_schema_name must read it: docs/ci-jobs.md), "
            f"dbt_cloud_pr_{job.id}_<PR number> from git CI"
        )
        if job.triggers_on_draft_pr:
            out.append("runs on draft pull requests in dbt Cloud: drop the workflow's draft condition")
    return out


def command(kind_: str, deployment: str, job_id: int) -> str:
    """The `prefect deployment run` line git CI runs (PR_NUMBER: the pull request's number, CI jobs)."""
    if kind_ == "merge":
        return f"prefect deployment run '{deployment}' --watch"
    return (
        f"prefect deployment run '{deployment}' --watch "
        f'--param vars="{{\\"{PR_SCHEMA_VAR}\\": \\"dbt_cloud_pr_{job_id}_${{PR_NUMBER}}\\"}}" '
        f'--job-variable env="{{\\"{GIT_REF_ENV}\\": \\"refs/pull/${{PR_NUMBER}}/head\\"}}"'
    )


def adapt_deployment(doc: dict[str, Any], kind_: str) -> None:
    """Tag the generated deployment; for a CI job, check out `$DBTFLOW_GIT_REF` right after the clone."""
    doc["tags"] = [*doc.get("tags", []), TAGS[kind_]]
    if kind_ != "ci":
        return
    pull = list(doc.get("pull") or [])
    at = next((i for i, s in enumerate(pull) if isinstance(s, dict) and GIT_CLONE in s), None)
    if at is None:
        return
    clone = dict(pull[at][GIT_CLONE])
    clone.setdefault("id", "clone")
    pull[at] = {GIT_CLONE: clone}
    checkout = {
        SHELL: {
            "directory": f"{{{{ {clone['id']}.directory }}}}",
            "script": f"git fetch --quiet --depth 1 origin ${GIT_REF_ENV}\ngit checkout --quiet --force FETCH_HEAD",
            "expand_env_vars": True,
        }
    }
    pull.insert(at + 1, checkout)
    doc["pull"] = pull
    pool = doc.setdefault("work_pool", {})  # prefect.yaml keeps job variables under work_pool
    env = pool.setdefault("job_variables", {}).setdefault("env", {})
    env.setdefault(GIT_REF_ENV, clone.get("branch") or "HEAD")
