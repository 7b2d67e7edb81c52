"""`dbtflow parity`: compare a dbt Cloud run with a Prefect run before cutting over.

Contract
- One dbt Cloud side (`--cloud-artifacts DIR`, or `--cloud-run ID` / `--cloud-job ID` fetched
  through `fetch_cloud_artifacts`) and one Prefect side (`--prefect-run ID|latest` from the
  run store under `--runs-dir`, or, with `--run-storage SLUG` / env DBTFLOW_RUN_STORAGE, from
  that Prefect storage block, fetched into a temporary folder, so a laptop checks a run made on
  a managed pool; `latest` is then the newest complete run there), or `--prefect-artifacts DIR`).
  Prints the markdown report, writes `--markdown-out` / `--json-out` (`-` = stdout; the JSON
  carries `generated_at`, now in UTC, and the Prefect side's `target` when its run says),
  applies `--accept FILE`, and when the Prefect side is a stored flow run and a Prefect API is
  configured, publishes the markdown as an artifact of that flow run (a failure to publish is
  a warning, never a different exit).
- Exit 0: parity holds or every difference is explained or accepted; 1: something is
  unexplained; 2: bad input (one line on stderr, no traceback).
- `fetch_cloud_artifacts(ref, dest)` is the boundary to the dbt Cloud API client
  (`dbtflow.cloud._client`): it must leave `dest` in the run-store layout (`NN-<cmd>/` per step with
  manifest.json and run_results.json, plus run.json with the job's environment variables as dbt
  Cloud resolves them, `env_vars`: name -> value, null for a secret); `store_cloud_step` writes one
  step so. With both sides' `env_vars` known, a variable missing or different on the Prefect side
  is named as the reason of the differences that have no other (`dbtflow.parity._compare`).

Pitfalls
- The API token is never an option value (it would show in `ps` and shell history): it comes
  from a Prefect Secret block (`--cloud-token-secret`) or the environment, read by the client.
  The host and account may come from DBT_CLOUD_HOST / DBT_CLOUD_ACCOUNT_ID, as for cutover.
- Prefect is imported only to publish or to load a `--run-storage` block, so comparing files
  needs no Prefect API and starts none.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Protocol
from uuid import UUID

import typer

from dbtflow._text import slug
from dbtflow.cli._common import err, fail
from dbtflow.cli._runs import RUN_STORAGE
from dbtflow.dbt._artifacts import no_gc, runs_root
from dbtflow.errors import UserError
from dbtflow.parity._compare import apply_accepted, compare, load_accepted
from dbtflow.parity._load import ParityInputError, load_artifact_set, resolve_run
from dbtflow.parity._report import report_json, report_markdown
from dbtflow.run._storage import fetch, one_line, open_store, resolve, storage_slug

CLOUD, PREFECT = "dbt Cloud", "Prefect"


@dataclass(frozen=True)
class CloudRunRef:
    """Which dbt Cloud run to fetch: a run id, or a job id (its last successful run)."""

    run_id: int | None = None
    job_id: int | None = None
    host: str | None = None
    account_id: int | None = None
    token_secret: str | None = None  # a Prefect Secret block name; else the client reads the environment


class CloudArtifactFetcher(Protocol):
    def __call__(self, ref: CloudRunRef, dest: Path) -> Path: ...


def fetch_cloud_artifacts(ref: CloudRunRef, dest: Path) -> Path:
    """Download a dbt Cloud run's step artifacts into `dest` (run-store layout) and return the folder.

    The run is `ref.run_id`, or the last successful run of `ref.job_id`. Each step that ran a
    dbt command gets its manifest.json and run_results.json (`?step=N`); a step that wrote no
    run_results (e.g. `dbt deps`) is left out, and `load_artifact_set` picks the building one.
    """
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from dbtflow.cloud._client import DbtCloudClient, DbtCloudError, DbtCloudUnavailable, resolve_token
    from dbtflow.cloud._env_vars import job_env_record

    if ref.account_id is None:
        raise ParityInputError("--cloud-account-id is required with --cloud-run/--cloud-job")
    try:
        with DbtCloudClient(ref.host or "cloud.getdbt.com", resolve_token(ref.token_secret), ref.account_id) as client:
            run_id = ref.run_id
            if run_id is None and ref.job_id is not None:
                last = client.last_successful_run(ref.job_id)
                if last is None:
                    raise ParityInputError(f"dbt Cloud job {ref.job_id} has no successful run to compare with")
                run_id = last.id
            assert run_id is not None
            run = client.get_run(run_id)
            for step in run.run_steps:
                if step.dbt_command is None:
                    continue
                try:
                    results = client.download_artifact(run.id, "run_results.json", step=step.index)
                    manifest = client.download_artifact(run.id, "manifest.json", step=step.index)
                except DbtCloudError as exc:
                    if exc.status_code == 404:
                        continue  # this step wrote no artifacts
                    raise
                store_cloud_step(dest, step.index, step_command(step.name), manifest, results)
            if run.job_definition_id is not None:  # the job's environment variables, for parity to compare
                record = {"dbt_cloud_run_id": run.id, "env_vars": job_env_record(client, run.job_definition_id)}
                dest.mkdir(parents=True, exist_ok=True)
                (dest / "run.json").write_text(json.dumps(record, indent=2))
    except DbtCloudUnavailable as exc:
        raise ParityInputError(str(exc)) from None
    except DbtCloudError as exc:
        raise ParityInputError(str(exc)) from None
    return dest


FETCH: CloudArtifactFetcher = fetch_cloud_artifacts  # replaced in tests; the CLI calls it through here


def step_command(step_name: str) -> str:
    """dbt Cloud's step name (`Invoke dbt with \\`dbt build --select x\\``) -> `build`."""
    found = re.findall(r"\bdbt\s+(source\s+freshness|docs\s+generate|[a-z][a-z-]*)", step_name.replace("`", " "))
    commands = [c for c in found if c not in ("with", "cloud")]
    return " ".join(commands[-1].split()) if commands else "unknown"


def store_cloud_step(dest: Path, index: int, command: str, manifest: bytes, run_results: bytes) -> Path:
    """One downloaded dbt Cloud step as `dest/NN-<cmd>/` (the layout `load_artifact_set` reads)."""
    folder = dest / f"{index:02d}-{command.replace(' ', '-')}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_bytes(manifest)
    (folder / "run_results.json").write_bytes(run_results)
    return folder


def parity(
    cloud_artifacts: Annotated[Path | None, typer.Option(help="Folder of the dbt Cloud run's artifacts.")] = None,
    cloud_run: Annotated[int | None, typer.Option(help="A dbt Cloud run id (fetched through the API).")] = None,
    cloud_job: Annotated[int | None, typer.Option(help="A dbt Cloud job id: its last successful run.")] = None,
    cloud_host: Annotated[
        str | None, typer.Option(envvar="DBT_CLOUD_HOST", help="dbt Cloud region, host or URL, e.g. emea.dbt.com.")
    ] = None,
    cloud_account_id: Annotated[
        int | None, typer.Option(envvar="DBT_CLOUD_ACCOUNT_ID", help="dbt Cloud account id.")
    ] = None,
    cloud_token_secret: Annotated[
        str | None, typer.Option(help="Prefect Secret block with the dbt Cloud API token (else the environment).")
    ] = None,
    prefect_run: Annotated[str | None, typer.Option(help="A stored flow run id, or latest.")] = None,
    prefect_artifacts: Annotated[Path | None, typer.Option(help="Folder of a Prefect run's artifacts.")] = None,
    runs_dir: Annotated[Path | None, typer.Option(help="Where runs are stored (default DBTFLOW_RUNS_DIR).")] = None,
    run_storage: Annotated[str | None, RUN_STORAGE] = None,
    accept: Annotated[Path | None, typer.Option(help="YAML/JSON list of reviewed differences.")] = None,
    json_out: Annotated[str | None, typer.Option(help="Write the JSON report here (- for stdout).")] = None,
    markdown_out: Annotated[Path | None, typer.Option(help="Write the markdown report here.")] = None,
    publish: Annotated[bool, typer.Option(help="Publish the report to the Prefect flow run.")] = True,
) -> None:
    """Compare a dbt Cloud run with a Prefect run; explain every difference (exit 0 = parity)."""
    with no_gc():  # parity's data is acyclic: pausing the cyclic GC halves the time on a large project
        code = _parity(
            cloud_artifacts,
            CloudRunRef(cloud_run, cloud_job, cloud_host, cloud_account_id, cloud_token_secret),
            prefect_run,
            prefect_artifacts,
            runs_dir if runs_dir or not storage_slug(run_storage) else None,
            accept,
            json_out,
            markdown_out,
            publish,
            None if runs_dir else storage_slug(run_storage),
        )
    raise typer.Exit(code)


def _parity(
    cloud_artifacts: Path | None,
    ref: CloudRunRef,
    prefect_run: str | None,
    prefect_artifacts: Path | None,
    runs_dir: Path | None,
    accept: Path | None,
    json_out: str | None,
    markdown_out: Path | None,
    publish: bool,
    run_storage: str | None = None,
) -> int:
    try:
        with tempfile.TemporaryDirectory(prefix="dbtflow-parity-") as tmp:
            cloud_dir = _cloud_folder(cloud_artifacts, ref, Path(tmp))
            prefect_dir = _prefect_folder(prefect_run, prefect_artifacts, runs_dir, run_storage, Path(tmp))
            accepted = load_accepted(accept) if accept else []
            cloud = load_artifact_set(cloud_dir, CLOUD)
            if ref.run_id or ref.job_id:  # the download folder is temporary: name the run instead
                cloud.source = f"dbt Cloud run {ref.run_id}" if ref.run_id else f"dbt Cloud job {ref.job_id}'s last run"
            report = apply_accepted(compare(cloud, load_artifact_set(prefect_dir, PREFECT)), accepted)
    except UserError as exc:
        fail(exc)
        return 2
    markdown = report_markdown(report)
    # generated_at: now, when the report is made; the cutover gate ages a report by it
    document = json.dumps(report_json(report, generated_at=datetime.now(UTC)), indent=2) if json_out else ""
    try:
        if markdown_out:
            markdown_out.write_text(markdown)
        if json_out and json_out != "-":
            Path(json_out).write_text(document)
    except OSError as exc:
        fail(f"cannot write the report: {exc}")
        return 2
    if json_out == "-":
        sys.stdout.write(document + "\n")
    else:
        sys.stdout.write(markdown + "\n")
    flow_run_id = report.prefect.flow_run_id
    if publish and flow_run_id:
        note = publish_report(markdown, flow_run_id, _key(report.prefect.project), report.verdict)
        if note:
            err.print(note, markup=False, highlight=False, soft_wrap=True)
    err.print(f"parity: {report.verdict}", markup=False, highlight=False)
    return report.exit_code


def publish_report(markdown: str, flow_run_id: str, key: str, description: str) -> str | None:
    """The report as a markdown artifact of the flow run; returns why it was not published, if it was not."""
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        return "not published to Prefect: no Prefect API configured (PREFECT_API_URL)"
    try:
        # lazy: imported on use, so that `dbtflow --help` stays fast
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import ArtifactCreate

        with get_client(sync_client=True) as client:
            client.create_artifact(
                ArtifactCreate(
                    key=key, type="markdown", data=markdown, description=description, flow_run_id=UUID(flow_run_id)
                )
            )
    except Exception as exc:  # observability never changes the verdict
        return f"warning: could not publish the parity report to Prefect: {type(exc).__name__}: {exc}"
    return None


def _cloud_folder(artifacts: Path | None, ref: CloudRunRef, tmp: Path) -> Path:
    given = [
        n for n, v in (("--cloud-artifacts", artifacts), ("--cloud-run", ref.run_id), ("--cloud-job", ref.job_id)) if v
    ]
    if len(given) != 1:
        raise ParityInputError(
            f"give exactly one of --cloud-artifacts DIR, --cloud-run ID, --cloud-job ID (got {len(given)})"
        )
    return artifacts if artifacts else FETCH(ref, tmp)


def _prefect_folder(
    run: str | None, artifacts: Path | None, runs_dir: Path | None, run_storage: str | None, tmp: Path
) -> Path:
    if bool(run) == bool(artifacts):
        raise ParityInputError("give exactly one of --prefect-run ID|latest, --prefect-artifacts DIR")
    if artifacts:
        return artifacts
    if run_storage:  # a run store block: fetch the run (not its compiled SQL) into the temporary folder
        store = open_store(run_storage)
        stored = resolve(store, str(run))
        try:
            return fetch(store, stored.run_id, tmp / "prefect" / stored.run_id, only=[".json"])
        except Exception as exc:
            raise ParityInputError(f"cannot fetch run {stored.run_id} from {store.where}: {one_line(exc)}") from None
    return resolve_run(runs_dir or runs_root(), str(run))


def _key(project: str | None) -> str:
    return slug("parity", project or "dbt")
