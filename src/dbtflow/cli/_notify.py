"""`dbtflow notify setup` and `dbtflow status`: failure alerts and first-week monitoring (logic in
`dbtflow.deploy._notify` and `dbtflow.deploy._status`).

Contract
- `dbtflow notify setup [--deployment F/D] (--block [TYPE/]NAME | --channel slack|teams|webhook
  [--block NAME] [--url-env VAR]) [--on-warning] [--name NAME] [--ui-url URL]` creates or updates
  the deployment's alert automation and prints what it did. Idempotent: run it again at will.
- `dbtflow status [--since 7d] [--deployment F/D] [--runbook docs/runbook.md] [--json] [--check]`
  prints, per target, runs, success rate, median/worst duration, the nodes that failed most, the
  upcoming runs and the schedules, then the first-week exit criteria of the runbook as pass/fail.
  Exit 0; with `--check`, exit 1 when a criterion fails.
- Bad input (an unknown option, a bad duration, a missing deployment or block, no API) is one line
  on stderr and exit 2.

Pitfalls
- A webhook URL is a secret: it comes from an environment variable (`--url-env`, default
  DBTFLOW_ALERT_URL) or a hidden prompt on a terminal, never from argv (shell history, `ps`).
- Prefect is imported inside the commands: `--help` and bad input stay fast. Both commands need a
  Prefect server (PREFECT_API_URL or a Prefect Cloud profile): the ephemeral API has no automations
  service and no history worth reporting.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.table import Table

from dbtflow.cli._common import OneLine, fail, out
from dbtflow.errors import UserError
from dbtflow.settings import ALERT_URL, DEPLOYMENT

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Failure alerts (Prefect Automations).")

DEFAULT_DEPLOYMENT = DEPLOYMENT
DEFAULT_RUNBOOK = Path("docs/runbook.md")


def _api_failure(exc: Exception) -> typer.Exit:
    """The Prefect API refused or could not be reached: one line, exit 1 (nothing the input could fix)."""
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from prefect.settings import get_current_settings

    detail = " ".join(str(exc).split())[:300]
    return fail(f"the Prefect API at {get_current_settings().api.url} failed: {type(exc).__name__}: {detail}", 1)


def _require_api() -> None:
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        raise UserError("no Prefect API configured: set PREFECT_API_URL (or `prefect cloud login`) and try again")


@app.callback()
def main() -> None:
    """Failure alerts for the deployment, through Prefect Automations and notification blocks."""


@app.command("setup", cls=OneLine)
def setup(
    deployment: Annotated[str, typer.Option(help="flow/deployment to watch.")] = DEFAULT_DEPLOYMENT,
    block: Annotated[
        str | None,
        typer.Option(
            help="An existing notification block, NAME or TYPE/NAME (e.g. slack-webhook/alerts); "
            "with --channel, the name of the block to make (default dbtflow-alerts)."
        ),
    ] = None,
    channel: Annotated[
        str | None, typer.Option(help="Make (or update) the block from a URL: slack, teams or webhook.")
    ] = None,
    url_env: Annotated[
        str, typer.Option(help="Environment variable holding the webhook URL (never pass the URL itself).")
    ] = ALERT_URL,
    on_warning: Annotated[
        bool, typer.Option("--on-warning/--no-on-warning", help="Also notify when a run completes with warnings.")
    ] = False,
    name: Annotated[str | None, typer.Option(help="The automation's name (default: dbtflow alerts: F/D).")] = None,
    ui_url: Annotated[
        str | None, typer.Option(help="Prefect UI address for run links (default: PREFECT_UI_URL).")
    ] = None,
) -> None:
    """Create or update the automation that notifies when a run fails, crashes or times out."""
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from dbtflow.deploy import _notify as notify

    try:
        _require_api()
        # lazy: imported on use, so that `dbtflow --help` stays fast
        from prefect.settings import get_current_settings

        url = (os.environ.get(url_env) or None) if channel else None
        result = notify.setup(
            deployment=deployment,
            name=name,
            block_ref=block,
            channel=channel,
            url=url,
            ask_url=_ask_url if sys.stdin.isatty() else None,
            on_warning=on_warning,
            ui_url=ui_url or get_current_settings().ui_url,
        )
    except UserError as exc:
        if channel and "no webhook URL" in str(exc):
            exc = UserError(f"{exc}: set {url_env} to the URL (it is a secret: never on the command line)")
        raise fail(exc) from None
    except httpx.HTTPError as exc:  # PrefectHTTPStatusError is one
        raise _api_failure(exc) from None
    out.print(f"block {result.block}: {result.block_action}", markup=False)
    out.print(f"automation {result.name!r}: {result.automation} (id {result.automation_id})", markup=False)
    out.print(f"notifies on: {', '.join(result.events)} of {deployment}", markup=False)
    if result.removed_duplicates:
        out.print(f"removed {result.removed_duplicates} duplicate automation(s) of that name", markup=False)


def _ask_url() -> str | None:
    value = typer.prompt("webhook URL (hidden)", hide_input=True, default="", show_default=False)
    return str(value).strip() or None


def status(
    since: Annotated[str, typer.Option(help="How far back: 7d, 24h, 90m, 2w.")] = "7d",
    deployment: Annotated[str, typer.Option(help="flow/deployment.")] = DEFAULT_DEPLOYMENT,
    runbook: Annotated[
        Path | None, typer.Option(help="Where the exit criteria are declared (default docs/runbook.md).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 when an exit criterion fails.")] = False,
) -> None:
    """Runs per target, success rate, durations, failing nodes, next runs, and the first-week exit criteria."""
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from dbtflow.deploy import _status as status_mod

    try:
        window = status_mod.parse_since(since)
        path = runbook or (DEFAULT_RUNBOOK if DEFAULT_RUNBOOK.is_file() else None)
        criteria = status_mod.load_criteria(path) if path else None
        _require_api()
        report = status_mod.collect(deployment, window, since, criteria, str(path) if path else None)
    except UserError as exc:
        raise fail(exc) from None
    except httpx.HTTPError as exc:  # PrefectHTTPStatusError is one
        raise _api_failure(exc) from None
    if as_json:
        sys.stdout.write(json.dumps(status_mod.to_json(report), indent=2, default=str) + "\n")
    else:
        _print_status(report)
    if check and not all(c.passed for c in report.criteria):
        raise typer.Exit(1)


def add_status_command(parent: typer.Typer) -> None:
    """Register `status` on the top-level `dbtflow` app (usage errors as one line, like every command)."""
    parent.command("status", cls=OneLine)(status)


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f}s"
    minutes = round(seconds / 60)
    return f"{minutes}m" if minutes < 90 else f"{minutes // 60}h{minutes % 60:02d}m"


def _print_status(report: object) -> None:
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from dbtflow.deploy._status import Status

    assert isinstance(report, Status)
    out.print(f"{report.deployment}: runs since {report.window_start} ({report.since})", markup=False)
    table = Table(
        "target", "runs", "ok", "failed", "crashed", "timeout", "cancel", "success", "median", "worst", box=None
    )
    for t in report.targets:
        rate = "-" if t.success_rate is None else f"{t.success_rate:g}%"
        table.add_row(
            t.target, str(t.runs), str(t.completed), str(t.failed), str(t.crashed), str(t.timed_out),
            str(t.cancelled), rate, _minutes(t.median_seconds), _minutes(t.worst_seconds),
        )  # fmt: skip
    out.print(table if report.targets else "no finished runs in the window")
    if report.running:
        out.print(f"{report.running} run(s) not finished yet", markup=False)
    for t in report.targets:
        if t.top_failed_nodes:
            nodes = ", ".join(f"{n} ({c}x)" for n, c in t.top_failed_nodes)
            out.print(f"failed most on {t.target}: {nodes}", markup=False)
    out.print("next runs:", markup=False)
    for u in report.upcoming:
        out.print(f"  {u.expected_start}  {u.target:<8} {u.state:<10} {u.name}", markup=False)
    if not report.upcoming:
        out.print("  none scheduled", markup=False)
    out.print("schedules:", markup=False)
    for s in report.schedules:
        out.print(f"  {s.slug:<10} {'active' if s.active else 'paused':<7} {s.target:<8} {s.schedule}", markup=False)
    if not report.schedules:
        out.print("  none", markup=False)
    if report.criteria_source is None:
        out.print("first-week exit criteria: not evaluated (no docs/runbook.md here; pass --runbook)", markup=False)
        return
    met = all(c.passed for c in report.criteria)
    out.print(f"first-week exit criteria ({report.criteria_source}): {'MET' if met else 'NOT MET'}", markup=False)
    for c in report.criteria:
        out.print(f"  {'PASS' if c.passed else 'FAIL'}  {c.name}: {c.detail}", markup=False)
