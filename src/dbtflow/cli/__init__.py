"""The `dbtflow` command (typer + rich). It parses, delegates and prints; it holds no logic.

Contract
- `dbtflow run` takes the flow's parameters as options, validates the request *before* Prefect
  or dbt start (a bad request is one line on stderr and exit 2), then runs the generic flow
  in-process (Prefect's ephemeral API unless PREFECT_API_URL points at a server), shows a
  progress bar of nodes done/total while dbt runs, prints the summary and the artifacts
  folder, and exits 1 when the run failed; 130 / 143 when SIGINT / SIGTERM stopped dbt (dbt
  stops as on Ctrl-C, what finished is kept, the run ends Cancelled, `--command retry` resumes it).
  When Prefect's API is gone at the end of the run (see `dbtflow.run._flow.UNRECORDED_END`): one
  line saying Prefect could not record the end, the summary, and exit now with dbt's own code.
- `dbtflow slot release` frees a target's slot whose holder is gone (see `dbtflow.cli._slot`).
- Any dbt project runs unmodified: `--project-dir` (default: the current folder) and
  `--profiles-dir` (default: beside dbt_project.yml, then DBT_PROFILES_DIR, then ~/.dbt).
- `main()` is the console script (`dbtflow`, `python -m dbtflow.cli`). Once a run's outcome is
  printed, its process leaves as soon as Python's exit hooks have run (Prefect's log and event
  workers drained, an ephemeral API stopped, logging flushed, threads joined), without the
  interpreter's teardown of dbt's and Prefect's objects, which changes nothing and costs
  0.6-0.8 s at 200 models (bench/README.md).

Pitfalls
- That last hook is registered first, so that it runs last (atexit runs hooks in reverse); only
  logging's, registered while this module is imported, would come after it, so it flushes
  logging itself. `app` called in-process (typer's CliRunner, tests) never registers it: it would
  end the caller's process.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dbtflow.cli import _notify as cli_notify
from dbtflow.cli._blocks import app as blocks_app
from dbtflow.cli._cloud import app as cloud_app
from dbtflow.cli._common import OneLine, err, fail, out
from dbtflow.cli._cutover import cutover, rollback
from dbtflow.cli._deploy import deploy, schedules_app
from dbtflow.cli._parity import parity
from dbtflow.cli._runs import RUN_STORAGE, retry_target
from dbtflow.cli._runs import app as runs_app
from dbtflow.cli._slot import app as slot_app
from dbtflow.dbt._project import load_project
from dbtflow.errors import UserError
from dbtflow.run._api_check import check_api
from dbtflow.run._runs_dir import check_runs_root

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Run dbt Core on Prefect.")
SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}  # a run stopped by a signal exits as a shell reports that signal
RUN_EXIT_CODE: list[int | None] = [None]  # set once a run's outcome is printed: `main` then leaves without teardown
app.add_typer(blocks_app, name="blocks")
app.add_typer(schedules_app, name="schedules")
app.command("deploy")(deploy)
app.add_typer(cloud_app, name="cloud")
app.command("cutover", cls=OneLine)(cutover)
app.command("rollback", cls=OneLine)(rollback)
app.add_typer(cli_notify.app, name="notify")
app.add_typer(runs_app, name="runs")
app.add_typer(slot_app, name="slot")
cli_notify.add_status_command(app)


@app.callback()
def callback() -> None:
    """Run dbt Core on Prefect, and move off dbt Cloud safely."""


def main() -> None:
    """The `dbtflow` command: `app`, leaving without the interpreter's teardown once a run has ended."""
    atexit.register(_leave_after_exit_hooks)
    app()


def _leave_after_exit_hooks() -> None:
    """The last exit hook: after a run, exit with its code now (see the module's contract)."""
    if RUN_EXIT_CODE[0] is None:
        return
    logging.shutdown()  # its hook was registered before this one, so it would run after it
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(RUN_EXIT_CODE[0])


@app.command()
def run(
    project_dir: Annotated[Path, typer.Option(help="The dbt project folder.")] = Path("."),
    profiles_dir: Annotated[Path | None, typer.Option(help="Folder of profiles.yml.")] = None,
    command: Annotated[str, typer.Option(help="dbt command, e.g. 'build' or 'run --select x'.")] = "build",
    target: Annotated[str | None, typer.Option("--target", "-t", help="Target (default: the profile's).")] = None,
    select: Annotated[list[str] | None, typer.Option("--select", "-s", help="dbt selection.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="dbt exclusion.")] = None,
    selector: Annotated[str | None, typer.Option(help="A selector from selectors.yml.")] = None,
    vars: Annotated[str | None, typer.Option("--vars", help="dbt vars as JSON or YAML.")] = None,
    full_refresh: Annotated[bool, typer.Option("--full-refresh", help="Rebuild incrementals.")] = False,
    state: Annotated[str | None, typer.Option(help="Artifacts folder for state:/defer.")] = None,
    defer: Annotated[bool, typer.Option("--defer", help="Defer to --state.")] = False,
    threads: Annotated[int | None, typer.Option(help="dbt threads.")] = None,
    step: Annotated[list[str] | None, typer.Option("--step", help="A dbt command; repeat for several.")] = None,
    source_freshness: Annotated[bool, typer.Option("--source-freshness", help="Check freshness first.")] = False,
    generate_docs: Annotated[bool, typer.Option("--generate-docs", help="Generate docs last.")] = False,
    timeout_seconds: Annotated[int | None, typer.Option(help="Stop the run after N seconds.")] = None,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failure.")] = False,
    engine: Annotated[str, typer.Option(help="fast (default) or prefect-dbt.")] = "fast",
    on_overlap: Annotated[str, typer.Option(help="When the target is busy: wait (default) or cancel.")] = "wait",
    install_deps: Annotated[
        bool, typer.Option("--install-deps/--no-install-deps", help="dbt deps first when packages are out of date.")
    ] = True,
    run_storage: Annotated[str | None, RUN_STORAGE] = None,
    env_var: Annotated[
        list[str] | None,
        typer.Option(
            "--env-var", help="NAME=VALUE for dbt's env_var() (repeatable); a DBT_ENV_SECRET_* NAME=<Secret block>."
        ),
    ] = None,
) -> None:
    """Run a dbt request through the Prefect flow, with a progress bar and a summary."""
    params: dict[str, Any] = dict(
        command=command,
        target=target,
        select=select,
        exclude=exclude,
        selector=selector,
        vars=vars,
        full_refresh=full_refresh,
        state=state,
        defer=defer,
        threads=threads,
        steps=step,
        source_freshness=source_freshness,
        generate_docs=generate_docs,
        timeout_seconds=timeout_seconds,
        fail_fast=fail_fast,
        engine=engine,
        on_overlap=on_overlap,
        install_deps=install_deps,
        run_storage=run_storage,
        env_vars=_env_var_options(env_var),
    )
    _run_request(project_dir, profiles_dir, params)


def _env_var_options(items: list[str] | None) -> dict[str, str] | None:
    """`--env-var NAME=VALUE` items -> {NAME: VALUE} (checked with the run's parameters)."""
    if not items:
        return None
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise fail(f"--env-var {name[:80]!r} must be NAME=VALUE, e.g. --env-var DBT_REGION=eu")
        pairs[name.strip()] = value
    return pairs


@app.command()
def retry(
    flow_run_id: Annotated[str, typer.Argument(help="The failed flow run to retry from (an id, or latest:<target>).")],
    project_dir: Annotated[Path, typer.Option(help="The dbt project folder (a fresh clone will do).")] = Path("."),
    profiles_dir: Annotated[Path | None, typer.Option(help="Folder of profiles.yml.")] = None,
    run_storage: Annotated[str | None, RUN_STORAGE] = None,
) -> None:
    """Rerun only what failed or was skipped in a stored run, through `dbt retry`, on any machine."""
    target = retry_target(flow_run_id, project_dir, run_storage)
    _run_request(project_dir, profiles_dir, {"command": "retry", "target": target, "run_storage": run_storage})


def _run_request(project_dir: Path, profiles_dir: Path | None, params: dict[str, Any]) -> None:
    """Validate the request before Prefect or dbt start (one line, exit 2), run it, print the outcome, exit."""
    # Prefect's ephemeral API (no PREFECT_API_URL) takes ~20 s to start on 2 cores; give it room,
    # and keep its telemetry off: it cannot reach out from here and only adds noise. Set before
    # anything reads Prefect's settings (the API check below does): they are read once.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # lazy: RunParameters imports pydantic; importing it here keeps `dbtflow --help` fast
    from dbtflow.dbt._artifacts import runs_root
    from dbtflow.run._parameters import default_target
    from dbtflow.run._request import build_request

    try:
        project = load_project(project_dir, profiles_dir)
        params = {**params, "target": params["target"] or default_target(project)}
        build_request(project, **params)
        check_runs_root(runs_root())
        check_api(_api_url())
    except UserError as exc:
        raise fail(exc) from None

    final, run_folder = _run_flow(project, params)
    if run_folder is None and final is None:
        raise fail("dbt did not run: the flow stopped before it started dbt (see above)", 1)
    code = _print_outcome(run_folder, final)
    if final is None:
        # The API is gone: Prefect's exit hooks would retry every unsent event and log line for
        # minutes. The warning is printed and dbt's artifacts are kept, so leave without them.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    RUN_EXIT_CODE[0] = code
    raise typer.Exit(code)


def _run_flow(project: Any, params: dict[str, Any]) -> tuple[Any, Path | None]:
    """Run the generic flow in-process with a progress bar; (its final state or None, the run's folder)."""
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from prefect.client.schemas.objects import State

    from dbtflow.run._flow import LATEST_RUN, UNRECORDED_END, dbt_flow, runs_root
    from dbtflow.run._invoke import event_listeners

    flow = dbt_flow(project.project_dir, name=f"dbtflow-{project.name}", profiles_dir=project.profiles_dir)
    with _NodeProgress() as progress:
        token = event_listeners.set((progress.on_event,) if progress.enabled else ())
        UNRECORDED_END.set(_leave_unrecorded(progress, params["target"]))
        try:
            final: State | None = cast(State, flow(**params, return_state=True))
        except Exception as exc:  # Prefect's engine could not report (API gone): dbt's outcome still counts
            err.print(f"warning: Prefect could not record the run ({type(exc).__name__}: {exc})", markup=False)
            final = None
        finally:
            event_listeners.reset(token)
    run_folder = runs_root() / str(final.state_details.flow_run_id) if final else LATEST_RUN[0]
    return final, run_folder


def _leave_unrecorded(progress: _NodeProgress, target: str) -> Any:
    """What `dbtflow run` does when the run ended with Prefect's API gone: one line, dbt's outcome, exit now."""

    def leave(state: Any, url: str) -> None:
        # lazy: imported on use, so that `dbtflow --help` stays fast
        from dbtflow.run._flow import LATEST_RUN

        progress.__exit__()
        folder = LATEST_RUN[0]
        err.print(
            f"warning: Prefect could not record the end of the run: its API ({url}) stopped answering; "
            f"dbt's outcome and artifacts are kept in {folder}; the flow run stays Running in Prefect and "
            f"the slot of {target} frees itself when its lease lapses (if it stays taken after a server "
            f"restart: dbtflow slot release --target {target})",
            markup=False,
            soft_wrap=True,
        )
        code = _print_outcome(folder, state)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # Prefect's exit hooks would retry every unsent event and log line for minutes

    return leave


def _print_outcome(run_folder: Path | None, final: Any) -> int:
    """Print the run's summary, its status line and its folder; the exit code.

    0 completed, 130 / 143 stopped by SIGINT / SIGTERM (128 + the signal, as a shell reports it), 1 otherwise.
    """
    record = _final_record(run_folder, final)
    summary = run_folder / "summary.md" if run_folder else None
    if summary is not None and summary.exists():
        from rich.markdown import Markdown  # lazy: ~50 ms of imports, printed once at the end

        out.print(Markdown(summary.read_text()))
    out.print(f"{record.get('status', 'failed')}: {record.get('message', '')}", markup=False, soft_wrap=True)
    if run_folder is not None and run_folder.is_dir():
        out.print(f"artifacts: {run_folder}", markup=False, highlight=False)
    if record.get("signal") in SIGNAL_EXIT:
        return SIGNAL_EXIT[record["signal"]]
    return 0 if record.get("status") == "completed" else 1


def _final_record(run_folder: Path | None, final: Any) -> dict[str, Any]:
    """run.json's final record; else (not written: a full disk, an invalid request) the flow's final state."""
    try:
        record = json.loads((run_folder / "run.json").read_text()) if run_folder else {}
    except (OSError, ValueError):
        record = {}
    if record.get("status") or final is None:
        return dict(record)
    return {"status": "completed" if final.is_completed() else "failed", "message": final.message or final.name}


def _api_url() -> str | None:
    # lazy: prefect's settings load on use, so that `dbtflow --help` stays fast
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


class _NodeProgress:
    """A progress bar of dbt nodes done/total, fed from dbt's event callback (any thread)."""

    def __init__(self) -> None:
        self._progress = Progress(
            TextColumn("dbt {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
            disable=not err.is_terminal,
        )
        self._task = self._progress.add_task("starting", total=None)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return not self._progress.disable

    def __enter__(self) -> _NodeProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def on_event(self, event: Any) -> None:
        name = event.info.name
        if name == "MainReportVersion" or name == "CommandCompleted":
            return
        with self._lock:
            if name == "NodeFinished":
                self._progress.advance(self._task)
            elif name == "NodeStart":
                self._progress.update(self._task, description=event.data.node_info.node_name)
            else:
                total = getattr(event.data, "total", 0)
                if total and self._progress.tasks[0].total != total:
                    self._progress.update(self._task, total=total, completed=0)


app.command("parity")(parity)

if __name__ == "__main__":
    main()
