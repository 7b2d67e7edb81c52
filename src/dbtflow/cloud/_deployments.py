"""Imported jobs that need a deployment of their own -> a prefect.yaml (`dbtflow cloud import-jobs`).

Contract
- `base_deployment(path, deployment)` reads the repository's prefect.yaml and returns the
  deployment the schedules belong to (`entrypoint`, `work_pool`, `pull`, ...); every generated
  deployment runs the same flow from the same code, so only its name, parameters, tags,
  schedules, triggers and job variables differ. A missing file or deployment is one `UserError`.
- `render_deployments(result, base, flow, ...)` writes one deployment per entry with
  `own_deployment` (every job of a chain of job-completion triggers): name = the entry's slug,
  tag `dbt-cloud-job-<id>` (how `dbtflow cutover` finds it in Prefect and in this file; prefect.yaml
  schedules take no extra keys, so no `dbt_cloud_job_id` there), the job's parameters,
  its schedule (slug `dbt-cloud`, inactive) when dbt Cloud schedules it, and the trigger
  (`chains.trigger`, disabled) when it runs on its parent's completion. Deploy it with
  `prefect --no-prompt deploy --prefect-file <file> --all`.
- CI and merge jobs (entries with `kind`) are deployments here too, with no schedule and no
  trigger (git CI starts them); `_ci_jobs.adapt_deployment` tags them and, for CI jobs, adds the
  pull step that checks out the pull request's ref.

Pitfalls
- `prefect deploy` re-applies `active: false` from the file on every deploy: after a cutover,
  deploy with `dbtflow cutover` / `dbtflow schedules apply` in mind (re-run the cutover, which
  is idempotent, to turn them back on), as for the main prefect.yaml.
- `prefect deploy` resolves `{{ prefect.blocks... }}` placeholders when it deploys, so a Secret
  block placeholder would put the secret's value into the deployment: nothing secret is written
  as a placeholder here. A job's secret environment variables are in its `env_vars` parameter as
  the names of their Secret blocks, which the run reads when it starts (`dbtflow.secrets._env_vars`).
- Environment variables are a flow parameter (`env_vars`), not `job_variables.env`: the schedules
  of the main deployment can carry parameters only, and one way for both keeps run.json's record
  of the names set, and their checks, the same.
"""

from __future__ import annotations

from copy import deepcopy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from dbtflow.cloud import _chains as chains
from dbtflow.cloud import _ci_jobs as ci_jobs
from dbtflow.cloud._import import Entry, ImportResult
from dbtflow.errors import UserError
from dbtflow.settings import JOB_TAG_PREFIX

DEFAULT_OUTPUT = Path("deploy/prefect.yaml")
SCHEDULE_SLUG = "dbt-cloud"
_KEPT = ("entrypoint", "work_pool", "pull", "version", "concurrency_limit", "enforce_parameter_schema")


def job_tag(job_id: int) -> str:
    """The tag of the deployment that runs dbt Cloud job `job_id`."""
    return f"{JOB_TAG_PREFIX}{int(job_id)}"


def base_deployment(path: Path, deployment: str) -> dict[str, Any]:
    """The deployment named `deployment` (`flow/name` or `name`) of the prefect.yaml at `path`."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"chained, CI and merge jobs need the deployment to copy from {path} ({problem}): "
            "pass --prefect-yaml <your prefect.yaml>"
        ) from None
    name = deployment.split("/")[-1]
    found = [d for d in (doc or {}).get("deployments") or [] if isinstance(d, dict) and d.get("name") == name]
    if not found or not found[0].get("entrypoint"):
        raise UserError(
            f"{path} declares no deployment {name!r} with an entrypoint: pass --prefect-yaml and --deployment "
            "naming the deployment the jobs run as"
        )
    base = {k: deepcopy(found[0][k]) for k in _KEPT if k in found[0]}
    base["prefect-version"] = (doc or {}).get("prefect-version")
    return base


def deployment_doc(entry: Entry, base: dict[str, Any], flow: str, slugs: dict[int, str]) -> dict[str, Any]:
    """One entry as a prefect.yaml deployment."""
    job = entry.job
    doc: dict[str, Any] = {
        "name": entry.slug,
        "description": f"dbt Cloud job {job.id} {job.name!r} (environment {entry.environment!r}), imported by dbtflow",
        "entrypoint": base["entrypoint"],
        "tags": [job_tag(job.id)],
        "parameters": dict(entry.parameters),
    }
    doc.update({k: deepcopy(v) for k, v in base.items() if k in _KEPT and k != "entrypoint"})
    schedules = []
    if entry.cron:
        schedules.append(
            {
                "slug": SCHEDULE_SLUG,
                "cron": entry.cron,
                "timezone": "UTC",
                "active": False,
                "parameters": dict(entry.parameters),
            }
        )
    doc["schedules"] = schedules
    if entry.link is not None:
        doc["triggers"] = [chains.trigger(entry.link, slugs[entry.link.parent], flow, entry.parameters)]
    if entry.kind is not None:
        ci_jobs.adapt_deployment(doc, entry.kind)
    return doc


def render_deployments(
    result: ImportResult,
    base: dict[str, Any],
    *,
    flow: str,
    host: str,
    account_id: int,
    now: datetime | None = None,
) -> str:
    """The prefect.yaml of the entries that need their own deployment (chains, CI and merge jobs)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    own = [e for e in result.entries if e.own_deployment]
    slugs = {e.job.id: e.slug for e in result.entries}
    header = [
        f"# generated by dbtflow cloud import-jobs from {host} account {account_id} at {stamp}",
        "# Chained dbt Cloud jobs, CI jobs and merge jobs, one deployment each.",
        "# Deploy: prefect --no-prompt deploy --prefect-file <this file> --all",
        "# Schedules and triggers start off; `dbtflow cutover --chain` turns them on when dbt Cloud's go off.",
        "# CI and merge jobs run when git CI starts them (docs/ci-jobs.md).",
    ]
    doc = {
        "name": "dbtflow-imported-jobs",
        "prefect-version": base.get("prefect-version"),
        "deployments": [deployment_doc(e, base, flow, slugs) for e in own],
    }
    return "\n".join(header) + "\n" + yaml.safe_dump(doc, sort_keys=False, width=1000)
