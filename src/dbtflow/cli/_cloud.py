"""`dbtflow cloud ...`: the dbt Cloud side of a migration (typer sub-app; logic in `cloud_import`).

Contract
- `dbtflow cloud import-jobs --account N [--project ID] [--environment ID] [--job ID] [--base-url HOST]
  [--token-block NAME] [--target-map ENV=TARGET] [--project-dir DIR] [--output FILE]` reads the
  jobs, writes the schedules file (default `deploy/schedules.yaml`; `-` prints it) and prints
  what it imported, what it could not translate (why, and what to do instead) and notes.
  With `--project-dir`, a job whose building step selects no node (dbt's `dbt ls`, one parse) is
  refused: one line naming the job and the step, exit 2, nothing written (`cloud._import`).
- dbt Cloud environment variables become each job's `env_vars` parameter; for every
  `DBT_ENV_SECRET_*` one it prints one line naming the Prefect Secret block the runs read and the
  command that stores its value (`dbtflow blocks secret <block>`); a value is never printed.
- Chained, CI and merge jobs are written as their own deployments (`--deployments-output`, default
  prefect.yaml beside `--output`); for each CI and merge job it prints the `prefect deployment run`
  line git CI runs, then the limits of that translation, one line each (`_ci_jobs.LIMITS`).
- Exit 0 when the file is written (1 with `--strict` when a job was not imported); bad input,
  401/403/404 and jobs dbtflow cannot run are one line on stderr with exit 2; dbt Cloud being
  unavailable past the retry bound is one line with exit 1.

Pitfalls
- Ids are taken as text and checked here, so a typo is one line, not click's usage box.
- The token is never an option (it would land in shell history): a Prefect Secret block or an
  environment variable (`--token-env`, default DBT_CLOUD_API_TOKEN).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dbtflow.cli._common import OneLine, err, fail, ids, out
from dbtflow.errors import UserError
from dbtflow.settings import DEPLOYMENT

app = typer.Typer(no_args_is_help=True, add_completion=False, help="dbt Cloud: import its jobs as Prefect schedules.")


@app.command("import-jobs", cls=OneLine)
def import_jobs_command(
    account: Annotated[
        str | None, typer.Option("--account", envvar="DBT_CLOUD_ACCOUNT_ID", help="dbt Cloud account id.")
    ] = None,
    project: Annotated[list[str] | None, typer.Option("--project", help="dbt Cloud project id (repeatable).")] = None,
    environment: Annotated[
        list[str] | None, typer.Option("--environment", help="dbt Cloud environment id (repeatable).")
    ] = None,
    job: Annotated[list[str] | None, typer.Option("--job", help="dbt Cloud job id (repeatable).")] = None,
    base_url: Annotated[
        str,
        typer.Option(
            "--base-url", envvar="DBT_CLOUD_HOST", help="Region (us, emea, au), host (ab123.us1.dbt.com) or URL."
        ),
    ] = "cloud.getdbt.com",
    token_block: Annotated[
        str | None, typer.Option("--token-block", help="Prefect Secret block holding the API token.")
    ] = None,
    token_env: Annotated[str, typer.Option("--token-env", help="Env var holding the token.")] = "DBT_CLOUD_API_TOKEN",
    output: Annotated[str, typer.Option("--output", "-o", help="Schedules file to write; - for stdout.")] = str(
        Path("deploy/schedules.yaml")
    ),
    target_map: Annotated[
        list[str] | None,
        typer.Option("--target-map", help="ENVIRONMENT=TARGET: dbt Cloud environment (name or id) -> profile target."),
    ] = None,
    deployment: Annotated[str, typer.Option(help="The Prefect deployment the schedules belong to.")] = DEPLOYMENT,
    project_dir: Annotated[
        Path | None, typer.Option(help="The dbt project: validate every imported job against it.")
    ] = None,
    profiles_dir: Annotated[Path | None, typer.Option(help="Folder of profiles.yml (with --project-dir).")] = None,
    prefect_yaml: Annotated[
        Path, typer.Option(help="prefect.yaml whose deployment chained jobs copy (entrypoint, work pool, pull).")
    ] = Path("prefect.yaml"),
    deployments_output: Annotated[
        Path | None,
        typer.Option(help="prefect.yaml for chained jobs (one deployment each) [prefect.yaml beside --output]."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a file that has active schedules.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 when any job is not imported.")] = False,
) -> None:
    """Read dbt Cloud's scheduled deploy jobs and write them as (inactive) Prefect schedules."""
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from dbtflow.cloud._client import DbtCloudClient, DbtCloudUnavailable, normalize_base_url, resolve_token
    from dbtflow.cloud._deployments import base_deployment, render_deployments
    from dbtflow.cloud._import import import_jobs, parse_target_map, render, write_schedules

    try:
        if not account:
            raise UserError(
                "--account is required: the dbt Cloud account id (in its URLs), or set DBT_CLOUD_ACCOUNT_ID"
            )
        (account_id,) = ids("--account", [account])
        project_ids, environment_ids, job_ids = (
            ids("--project", project),
            ids("--environment", environment),
            ids("--job", job),
        )
        url = normalize_base_url(base_url)
        mapping = parse_target_map(target_map)
        tenant = None
        if project_dir is not None:
            # lazy: imported on use, so that `dbtflow --help` stays fast
            from dbtflow.dbt._project import load_project

            tenant = load_project(project_dir, profiles_dir)
        token = resolve_token(token_block, token_env)
        with DbtCloudClient(url, token, account_id) as client:
            result = import_jobs(
                client,
                project_ids=project_ids,
                environment_ids=environment_ids,
                job_ids=job_ids,
                target_map=mapping,
                project=tenant,
                deployment=deployment,
            )
        host = url.split("://", 1)[1]
        deployments_output = (
            deployments_output or (Path("deploy") if output == "-" else Path(output).parent) / "prefect.yaml"
        )
        text = render(result, deployment=deployment, host=host, account_id=account_id)
        chained = None
        if any(e.own_deployment for e in result.entries):
            base = base_deployment(prefect_yaml, deployment)
            flow = deployment.split("/")[0]
            chained = render_deployments(result, base, flow=flow, host=host, account_id=account_id)
        if output == "-":
            sys.stdout.write(text)
        else:
            write_schedules(text, Path(output), force=force)
        if chained is not None:
            write_schedules(chained, deployments_output, force=force)
    except UserError as exc:
        raise fail(exc) from None
    except DbtCloudUnavailable as exc:
        raise fail(exc, 1) from None

    _print_result(result, output, deployments_output or Path("deploy/prefect.yaml"), deployment.split("/")[0])
    if strict and result.skipped:
        raise typer.Exit(1)


def _print_result(result: Any, output: str, deployments_output: Path, flow: str) -> None:
    """What was imported, skipped (why, and what instead) and noted; on stderr when the file went to stdout."""
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from dbtflow.cloud import _ci_jobs as ci_jobs

    report = err if output == "-" else out
    where = "stdout" if output == "-" else output
    schedules = len([e for e in result.entries if not e.own_deployment])
    report.print(
        f"imported {schedules} schedule(s) to {where} (inactive; `dbtflow cutover` activates them)",
        markup=False,
    )
    own = [e for e in result.entries if e.own_deployment and e.kind is None]
    for entry in result.entries:
        steps = " | ".join(entry.parameters["steps"])
        when = " and ".join(
            ([f"{entry.cron} UTC"] if entry.cron else [])
            + ([entry.link.describe()] if entry.link else [])
            + ([ci_jobs.WHEN[entry.kind]] if entry.kind else [])
        )
        kind = "deployment " if entry.own_deployment else ""
        report.print(
            f"  job {entry.job.id} -> {kind}{entry.slug}: {when}, target {entry.parameters['target']}: {steps}",
            markup=False,
        )
    if own:
        report.print(
            f"chained jobs: {len(own)} deployment(s) with triggers in {deployments_output} (triggers disabled; "
            f"deploy: prefect --no-prompt deploy --prefect-file {deployments_output} --all; "
            "`dbtflow cutover --chain` enables them)",
            markup=False,
        )
    _print_secrets(report, result)
    _print_ci(report, [e for e in result.entries if e.kind], deployments_output, flow)
    if result.skipped:
        report.print(f"not imported ({len(result.skipped)}):", markup=False)
        for s in result.skipped:
            instead = f"; instead: {s.instead}" if s.instead else ""
            report.print(f"  job {s.job_id} {s.name!r}: {s.reason}{instead}", markup=False)
    if result.notes:
        report.print("notes:", markup=False)
        for job_id, name, note in result.notes:
            report.print(f"  job {job_id} {name!r}: {note}", markup=False)
    if not result.validated:
        report.print("not validated against a dbt project: pass --project-dir to check every job", markup=False)
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from dbtflow.cloud._import import GENERAL_NOTE

    report.print(GENERAL_NOTE, markup=False)


def _print_secrets(report: Any, result: Any) -> None:
    """One line per Secret block the imported jobs' DBT_ENV_SECRET_* variables need: the command that stores it."""
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from dbtflow.cloud._env_vars import secrets_to_set

    needed = secrets_to_set(result.entries)
    if not needed:
        return
    report.print(
        f"secret environment variables ({len(needed)}): dbt Cloud never returns their values; store each once "
        "(hidden prompt, or DBTFLOW_SECRET_VALUE); runs read it when they start:",
        markup=False,
    )
    for secret in needed:
        jobs = ", ".join(str(j) for j in secret.jobs)
        report.print(
            f"  {secret.name} ({secret.level}; job {jobs}): dbtflow blocks secret {secret.block}", markup=False
        )


def _print_ci(report: Any, entries: list[Any], deployments_output: Path, flow: str) -> None:
    """CI and merge jobs: where their deployments are, the command git CI runs for each, the limits."""
    if not entries:
        return
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from dbtflow.cloud import _ci_jobs as ci_jobs

    report.print(
        f"CI and merge jobs: {len(entries)} deployment(s) in {deployments_output} (deploy: prefect --no-prompt "
        f"deploy --prefect-file {deployments_output} --all); git CI starts them (docs/ci-jobs.md):",
        markup=False,
    )
    for entry in entries:
        command = ci_jobs.command(entry.kind, f"{flow}/{entry.slug}", entry.job.id)
        report.print(f"  job {entry.job.id} {entry.kind}: {command}", markup=False)
    for line in ci_jobs.LIMITS:
        report.print(line, markup=False)
