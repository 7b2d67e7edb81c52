"""`dbtflow runs`: the runs kept in the run store, read with no local run folder.

Contract
- `dbtflow runs list [--target T] [--limit N]`: newest first, one line per run: flow-run id,
  target, status (`completed`, `failed`, `timed_out`, or `incomplete` when its completion
  marker is missing: still running, or its worker or upload died), when, message.
- `dbtflow runs show <flow-run-id|latest|latest:target>`: the run's status and its summary
  (steps, counts, every failure with dbt's message, skipped nodes), read from the store.
- `dbtflow runs fetch <ref> --to DIR`: the run's files into DIR (run.json, summary.md, dbt.log,
  one folder per step); `DIR/01-build` is then a `--state` folder.
- `dbtflow runs prune --older-than 30d [--dry-run]`: deletes the runs last written before then.
- `dbtflow retry <flow-run-id> --project-dir DIR` (on any machine, a fresh clone will do): puts
  the failed step's run_results.json from the store into `DIR/target/<target>/` and runs
  `dbt retry` through the flow, so only the failed and skipped nodes run again. A timed-out or
  cancelled run (SIGINT/SIGTERM) resumes the same way: its never-started nodes are `skipped`.
  A run whose vars held secret-looking values is refused (one line, nothing put back): they are
  kept only masked, and `dbt retry` would run with `*****` (`dbtflow.secrets._masking`).
- Every command takes `--run-storage SLUG` (env DBTFLOW_RUN_STORAGE; default the local runs
  folder). Errors a user can cause are one line on stderr and exit 2.

Pitfalls
- `latest` is the newest *complete* run: an incomplete one is listed, never picked.
- Loading a block needs the Prefect API of the workspace that holds it (PREFECT_API_URL/KEY).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.markdown import Markdown

from dbtflow._text import parse_duration
from dbtflow.cli._common import err, fail, out
from dbtflow.errors import UserError
from dbtflow.run._storage import (
    Store,
    StoredRun,
    StoreError,
    fetch,
    list_runs,
    one_line,
    open_store,
    prune,
    resolve,
    storage_slug,
)
from dbtflow.secrets._masking import MASK, masked_vars
from dbtflow.settings import RUN_STORAGE as RUN_STORAGE_ENV

RUN_STORAGE = typer.Option(
    "--run-storage",
    envvar=RUN_STORAGE_ENV,
    help="Prefect storage block that keeps the runs, e.g. s3-bucket/dbtflow-runs (default: the local runs folder).",
)

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Runs kept in the run store.")


def _store(run_storage: str | None) -> Store:
    return open_store(storage_slug(run_storage))


def _fail(exc: Exception) -> typer.Exit:
    return fail(exc if isinstance(exc, UserError) else f"cannot read the run store: {one_line(exc)}")


def _line(run: StoredRun) -> str:
    message = " ".join(str(run.record.get("message") or "").split())[:160]
    return f"{run.run_id}  {run.target or '-'}  {run.status}  {run.when or '-'}  {message}".rstrip()


@app.command("list")
def list_command(
    target: Annotated[str | None, typer.Option(help="Only runs of this target.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many runs.")] = 20,
    run_storage: Annotated[str | None, RUN_STORAGE] = None,
) -> None:
    """List the stored runs, newest first."""
    try:
        store = _store(run_storage)
        runs = [r for r in list_runs(store) if not target or r.target == target][:limit]
    except Exception as exc:
        raise _fail(exc) from None
    if not runs:
        err.print(f"no runs in {store.where}", markup=False, highlight=False)
    for run in runs:
        out.print(_line(run), markup=False, highlight=False)


@app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="A flow run id, latest, or latest:<target>.")],
    run_storage: Annotated[str | None, RUN_STORAGE] = None,
) -> None:
    """Show a stored run: its status and summary, with every failure and dbt's message."""
    try:
        store = _store(run_storage)
        run = resolve(store, ref)
        with tempfile.TemporaryDirectory(prefix="dbtflow-show-") as tmp:
            folder = fetch(store, run.run_id, Path(tmp), only=["summary.md", "run.json"])
            summary = (folder / "summary.md").read_text() if (folder / "summary.md").exists() else ""
            record = json.loads((folder / "run.json").read_text()) if (folder / "run.json").exists() else {}
    except Exception as exc:
        raise _fail(exc) from None
    out.print(_line(run), markup=False, highlight=False)
    if summary:
        out.print(Markdown(summary))
    elif record:
        out.print(f"{record.get('status', '-')}: {record.get('message', '')}", markup=False, highlight=False)
    else:
        out.print("no summary or run.json stored for this run (its worker stopped early)", markup=False)
    out.print(f"stored in {store.where}:{run.run_id}/", markup=False, highlight=False)


@app.command("fetch")
def fetch_command(
    ref: Annotated[str, typer.Argument(help="A flow run id, latest, or latest:<target>.")],
    to: Annotated[Path, typer.Option("--to", help="Folder to download the run's files into.")],
    run_storage: Annotated[str | None, RUN_STORAGE] = None,
) -> None:
    """Download a stored run's artifacts (run.json, summary.md, dbt.log, step folders) into a folder."""
    try:
        store = _store(run_storage)
        run = resolve(store, ref)
        folder = fetch(store, run.run_id, to)
    except OSError as exc:
        raise fail(f"cannot write into {to}: {exc}") from None
    except Exception as exc:
        raise _fail(exc) from None
    out.print(f"{run.run_id} ({run.status}) fetched into {folder}", markup=False, highlight=False)


@app.command("prune")
def prune_command(
    older_than: Annotated[str, typer.Option(help="Age, e.g. 30d, 12h, 2w.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be deleted.")] = False,
    run_storage: Annotated[str | None, RUN_STORAGE] = None,
) -> None:
    """Delete the stored runs older than --older-than."""
    try:
        age = parse_duration(older_than, "--older-than", noun="an age")
        store = _store(run_storage)
        removed = prune(store, age, dry_run=dry_run)
    except Exception as exc:
        raise _fail(exc) from None
    verb = "would delete" if dry_run else "deleted"
    for run in removed:
        out.print(f"{verb} {_line(run)}", markup=False, highlight=False)
    out.print(f"{verb} {len(removed)} run(s) older than {older_than} in {store.where}", markup=False, highlight=False)


def retry_target(flow_run_id: str, project_dir: Path, run_storage: str | None) -> str:
    """For `dbtflow retry`: the stored run's failed results put back for `dbt retry`; its target.

    Args:
        flow_run_id: the failed run (an id, `latest` or `latest:<target>`).
        project_dir: the dbt project folder `dbt retry` will run in (a fresh clone will do).
        run_storage: the run store's block slug (None: DBTFLOW_RUN_STORAGE, else the local folder).

    Returns:
        The target the failed run ran against.

    Raises:
        typer.Exit: 2, after one line on stderr, when the run cannot be read or did not fail.
    """
    try:
        store = _store(run_storage)
        return _restore_results(store, resolve(store, flow_run_id), project_dir)
    except Exception as exc:
        raise _fail(exc) from None


def _restore_results(store: Store, run: StoredRun, project_dir: Path) -> str:
    """Put the failed step's run_results.json where `dbt retry` reads it (target/<target>/); returns the target."""
    with tempfile.TemporaryDirectory(prefix="dbtflow-retry-") as tmp:
        folder = fetch(store, run.run_id, Path(tmp), only=["run.json"])
        record = json.loads((folder / "run.json").read_text()) if (folder / "run.json").exists() else {}
        failed = [s for s in record.get("steps") or [] if s.get("folder") and s.get("success") is False]
        if record.get("status") not in ("failed", "timed_out", "cancelled") or not failed:  # stopped runs resume too
            raise StoreError(f"run {run.run_id} did not fail ({record.get('status') or 'no record'}): nothing to retry")
        masked = masked_vars(record.get("parameters") or {})
        if masked:  # dbt retry would read them from the kept (masked) run_results args
            raise StoreError(
                f"run {run.run_id}'s vars {', '.join(masked)} are kept only masked ({MASK}): `dbt retry` cannot get "
                "them back; rerun with `dbtflow run ... --vars`, and keep secrets in Secret blocks "
                "(env_vars DBT_ENV_SECRET_<NAME>, docs/secrets.md)"
            )
        step = failed[-1]["folder"]
        fetch(store, run.run_id, Path(tmp), only=[f"{step}/run_results.json"])
        results = Path(tmp) / step / "run_results.json"
        if not results.exists():
            raise StoreError(f"run {run.run_id} kept no run_results.json for step {step}: rerun it in full instead")
        target = str(record.get("target"))
        dest = project_dir / "target" / target
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(results, dest / "run_results.json")
    return target
