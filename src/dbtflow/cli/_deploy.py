"""`dbtflow deploy` and `dbtflow schedules apply`: the deployment `dbt_wg` and its schedules.

Contract
- `dbtflow deploy` deploys from prefect.yaml through Prefect's own `prefect deploy`, then makes
  the deployment's schedules match the file (`schedules apply`): one command, any Prefect server.
  A redeploy keeps each existing schedule's on/off state (after a cutover, prod stays active);
  only cutover and rollback switch schedules.
  `--print-cloud-commands` prints the Prefect Cloud quickstart instead and changes nothing; it
  first checks the entry file and every `--parameter` as prefect-cloud and the flow would
  (`dbtflow.deploy._cloud_quickstart`): a bad one is one line, exit 2, nothing printed on stdout.
- Before anything, `dbtflow deploy` checks that prefect.yaml declares the `--name` deployment and
  that every `{{ $VAR }}` it uses (DBTFLOW_WORK_POOL, ...) is set: else one line, exit 2, nothing
  recorded or deployed (Prefect's own message would be a work pool named `{{ $DBTFLOW_WORK_POOL }}`).
- Before deploying, `dbtflow deploy` records the deployment's current configuration (if it
  exists) in its deploy history (`dbtflow.deploy._history`), which `dbtflow rollback
  --deployment-version previous` re-applies; if it cannot record, it does not deploy.
- `dbtflow schedules apply [FILE]` makes a deployment's schedules exactly the declared ones
  (see `dbtflow.deploy._schedules`); `--dry-run` prints the diff and changes nothing. Idempotent.
  Without `--project-dir` it says that the parameters were not validated against a dbt project;
  with it, each schedule's request is built and every building step's selection must list a node
  in dbt's own `dbt ls` (`dbtflow.run._selection_check`, one parse): else one line naming the
  schedule and the step, exit 2, no schedule changed.

Pitfalls
- Prefect is imported inside the commands: `dbtflow --help` and bad input stay fast.
- Errors a user can fix are one line on stderr and exit 2; nothing is changed before every
  declared schedule has been read and checked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml

from dbtflow.cli._common import fail, out
from dbtflow.errors import UserError
from dbtflow.settings import DEPLOYMENT, DEPLOYMENT_NAME, ENTRYPOINT

schedules_app = typer.Typer(no_args_is_help=True, add_completion=False, help="A deployment's schedules.")


@schedules_app.command("apply")
def apply_schedules(
    file: Annotated[Path, typer.Argument(help="A schedules file or prefect.yaml.")] = Path("prefect.yaml"),
    deployment: Annotated[str | None, typer.Option(help=f"flow/deployment, e.g. {DEPLOYMENT}.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the changes; change nothing.")] = False,
    project_dir: Annotated[Path | None, typer.Option(help="Check each schedule's parameters against it.")] = None,
) -> None:
    """Make a deployment's schedules exactly match FILE: create, update, pause, delete by slug."""
    try:
        changes = _apply(file, deployment, dry_run, project_dir)
    except UserError as exc:
        raise fail(exc) from None
    for change in changes:
        out.print(str(change), markup=False, soft_wrap=True)
    if not changes:
        out.print(f"schedules already match {file}", markup=False)
    elif dry_run:
        out.print(f"dry run: {len(changes)} change(s) not applied", markup=False)
    if project_dir is None:
        out.print(
            "note: the schedules' parameters were not validated against a dbt project: pass --project-dir to check "
            "them (targets, selectors, steps) before they run",
            markup=False,
            soft_wrap=True,
        )


def _apply(file: Path, deployment: str | None, dry_run: bool, project_dir: Path | None) -> list[object]:
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from prefect import get_client

    from dbtflow.dbt._project import load_project
    from dbtflow.deploy import _schedules as schedules
    from dbtflow.run._request import build_request
    from dbtflow.run._selection_check import SelectionCheck

    name, specs = schedules.load(file, deployment)
    with get_client(sync_client=True) as client:
        found = schedules.find_deployment(client, name)
        properties = (found.parameter_openapi_schema or {}).get("properties") or {}
        schedules.check_parameters(specs, set(properties))
        if project_dir is not None:
            project = load_project(project_dir)
            requests = []
            for spec in specs:
                try:
                    requests.append((spec.slug, build_request(project, **{**found.parameters, **spec.parameters})))
                except UserError as exc:
                    raise UserError(f"schedule {spec.slug!r}: {exc}") from None
            with SelectionCheck(project) as selection:  # dbt parses once; each step's selection must match a node
                for slug, request in requests:
                    selection.check(f"schedule {slug!r}", request)
        changes = schedules.plan(client.read_deployment_schedules(found.id), specs)
        if not dry_run:
            schedules.apply(client, found.id, changes)
    return list(changes)


def deploy(
    prefect_file: Annotated[Path, typer.Option(help="The prefect.yaml to deploy from.")] = Path("prefect.yaml"),
    name: Annotated[str, typer.Option(help="The deployment's name in the file.")] = DEPLOYMENT_NAME,
    print_cloud_commands: Annotated[
        bool, typer.Option("--print-cloud-commands", help="Print the Prefect Cloud quickstart commands.")
    ] = False,
    entrypoint: Annotated[
        str, typer.Option(help="With --print-cloud-commands: the flow, path/to/file.py:function.")
    ] = ENTRYPOINT,
    parameter: Annotated[
        list[str] | None,
        typer.Option("--parameter", "-p", help="With --print-cloud-commands: a deployment default, NAME=VALUE."),
    ] = None,
) -> None:
    """Deploy `dbt_wg` from prefect.yaml and apply its schedules (or print the Prefect Cloud path)."""
    if print_cloud_commands:
        # lazy: the check imports the entry file (Prefect, pydantic), so `dbtflow --help` stays fast
        from dbtflow.deploy import _cloud_quickstart as cloud_quickstart

        try:
            cloud_quickstart.check(entrypoint, Path.cwd(), parameter or [])
        except UserError as exc:
            raise fail(exc) from None
        text = cloud_quickstart.commands(entrypoint, _github_repo(), parameter or [])
        out.print(text, markup=False, soft_wrap=True)
        return
    if not prefect_file.is_file():
        raise fail(UserError(f"{prefect_file} not found: run from the repository root or pass --prefect-file"))
    try:
        _check_deployable(prefect_file, name)  # before anything is recorded or deployed
        _record_history(prefect_file, name)
        was_active = _active_flags(prefect_file, name)
    except UserError as exc:
        raise fail(exc) from None
    argv = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--prefect-file", str(prefect_file)]
    done = subprocess.run([*argv, "--name", name], check=False)
    if done.returncode != 0:
        raise fail(f"`prefect deploy` failed (exit {done.returncode}); see its output above", 1)
    apply_schedules(prefect_file, deployment=None, dry_run=False, project_dir=None)
    _keep_active_flags(prefect_file, name, was_active)


_TEMPLATE_VAR = re.compile(r"\{\{\s*\$(\w+)\s*\}\}")


def _check_deployable(prefect_file: Path, name: str) -> None:
    """The deployment `name` is in the file, and every `{{ $VAR }}` it uses is set in the environment."""
    try:
        doc = yaml.safe_load(prefect_file.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read {prefect_file}: {exc}".splitlines()[0]) from None
    declared = [d for d in (doc.get("deployments") or []) if isinstance(d, dict)] if isinstance(doc, dict) else []
    chosen = [d for d in declared if d.get("name") == name]
    if not chosen:
        names = ", ".join(str(d.get("name")) for d in declared) or "none"
        raise UserError(
            f"{prefect_file} declares no deployment {name!r} (it declares: {names}); pass --name with one of them"
        )
    shared = {k: v for k, v in doc.items() if k != "deployments"}  # build/push/pull sections apply to every deployment
    used = dict.fromkeys(_TEMPLATE_VAR.findall(yaml.safe_dump([shared, chosen[0]])))
    missing = [var for var in used if not os.environ.get(var)]
    if missing:
        exports = " ".join(f"{var}=<value>" for var in missing)
        templates = ", ".join("{{ $" + var + " }}" for var in missing)
        raise UserError(
            f"{', '.join(missing)} is not set: {prefect_file}'s deployment {name!r} uses {templates}; "
            f"export {exports} (see the file's header) and deploy again"
        )


def _active_flags(prefect_file: Path, name: str) -> dict[str, bool]:
    """slug -> active of the deployed schedules (none before the first deploy)."""
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    from dbtflow.deploy import _schedules as schedules

    deployment, _ = schedules.load(prefect_file, name)
    with get_client(sync_client=True) as client:
        try:
            found = client.read_deployment_by_name(deployment)
        except ObjectNotFound:
            return {}
        return {s.slug: s.active for s in client.read_deployment_schedules(found.id) if s.slug}


def _keep_active_flags(prefect_file: Path, name: str, was_active: dict[str, bool]) -> None:
    """A redeploy changes what runs and when, never whether: switching schedules is cutover's and rollback's."""
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from prefect import get_client

    from dbtflow.deploy import _schedules as schedules

    deployment, _ = schedules.load(prefect_file, name)
    with get_client(sync_client=True) as client:
        found = client.read_deployment_by_name(deployment)
        for active in (True, False):
            slugs = [slug for slug, on in was_active.items() if on is active]
            present = {s.slug for s in client.read_deployment_schedules(found.id)}
            for slug in schedules.set_active(client, found.id, [s for s in slugs if s in present], active):
                out.print(f"kept schedule {slug} {'active' if active else 'paused'}, as it was before this deploy")


def _record_history(prefect_file: Path, name: str) -> None:
    """Keep the deployment's current configuration (if any) for `dbtflow rollback --deployment-version`."""
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from prefect import get_client

    from dbtflow.deploy import _history as deploy_history
    from dbtflow.deploy import _schedules as schedules
    from dbtflow.deploy._history import Actor

    deployment, _ = schedules.load(prefect_file, name)
    try:
        with get_client(sync_client=True) as client:
            entry = deploy_history.record(client, deployment, "deploy", Actor.current(f"dbtflow deploy --name {name}"))
    except Exception as exc:  # no history, no deploy: a rollback must always have the previous configuration
        raise UserError(
            f"cannot record {deployment}'s current configuration before deploying ({exc}".splitlines()[0] + ")"
        ) from None
    if entry is not None:
        out.print(
            f"recorded {deployment}'s current configuration as {entry['id']} (rollback: --deployment-version previous)",
            markup=False,
        )


def _github_repo() -> str:
    """<org>/<repo> of the `origin` remote when it is on GitHub, else a placeholder."""
    try:
        url = subprocess.run(
            ["git", "remote", "get-url", "origin"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "<org>/<repo>"
    match = re.search(r"github\.com[:/]([^/]+/[^/]+?)(?:\.git)?$", url)
    return match.group(1) if match else "<org>/<repo>"
