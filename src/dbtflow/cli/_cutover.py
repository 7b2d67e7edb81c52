"""`dbtflow cutover` and `dbtflow rollback`: dbt Cloud off / Prefect on, and back (logic in `cutover`, `rollback`).

Contract
- `dbtflow cutover --plan|--apply --parity-report TARGET=PATH... [--job ID...] [--schedule SLUG...]
  [--schedules-file FILE] [--deployment FLOW/NAME] [--max-parity-age 7d] --account N [--base-url HOST]
  [--token-block NAME] [--journal PATH] [--journal-key KEY] [--chain]`: `--plan` checks the preconditions and
  prints the changes, changing nothing; `--apply` makes them, journaling each (file + Prefect artifact).
  A job whose completion starts other dbt Cloud jobs is refused unless they are imported and
  `--chain` asks to cut them over with it (their triggers enabled, their schedules activated).
- `dbtflow rollback [--plan] [--force] [--deployment-version previous|ID]`: undoes what the journal
  records (Prefect schedules paused, dbt Cloud triggers as recorded); with `--deployment-version`,
  also re-applies an earlier deployment configuration from the deploy history. The dbt Cloud host
  and account default to the journal's.
- Exit 0 done (or nothing to do); 2 a precondition or input the user can fix (one line, nothing
  changed unless the line says so); 1 dbt Cloud or Prefect unavailable, or the journal could not
  be written (one line; a midway stop names the journal that rollback reads).

Pitfalls
- The token is never an option value: a Prefect Secret block (`--token-block`) or an environment
  variable (`--token-env`, default DBT_CLOUD_API_TOKEN), as in `dbtflow cloud import-jobs`.
- Prefect is imported inside the commands, so `dbtflow --help` stays fast.
- `CLIENT_OPTIONS` passes options to the dbt Cloud client (tests shorten its retry backoff).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from dbtflow.cli._common import fail, ids, out
from dbtflow.errors import UserError
from dbtflow.settings import DEPLOYMENT

CLIENT_OPTIONS: dict[str, Any] = {}

Account = Annotated[str | None, typer.Option("--account", envvar="DBT_CLOUD_ACCOUNT_ID", help="dbt Cloud account id.")]
BaseUrl = Annotated[
    str | None, typer.Option("--base-url", envvar="DBT_CLOUD_HOST", help="dbt Cloud region, host or URL.")
]
TokenBlock = Annotated[str | None, typer.Option("--token-block", help="Prefect Secret block holding the API token.")]
TokenEnv = Annotated[str, typer.Option("--token-env", help="Env var holding the token.")]
JournalPath = Annotated[
    Path | None, typer.Option("--journal", help="Journal file [.dbtflow/cutover/<name>.journal.json].")
]
JournalKey = Annotated[str | None, typer.Option("--journal-key", help="Prefect artifact key of the journal.")]


def _say(line: str) -> None:
    out.print(line, markup=False)


def _journal_where(deployment: str, path: Path | None, key: str | None) -> tuple[Path, str]:
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from dbtflow.deploy._prefect_docs import artifact_key

    short = deployment.split("/")[-1]
    return path or Path(".dbtflow/cutover") / f"{short}.journal.json", key or artifact_key(
        "dbtflow-cutover-journal", short
    )


def _command(ctx: Any) -> str:
    """The command line as the options were given, defaults left out (no secret is ever an option)."""
    parts = [f"dbtflow {ctx.info_name}"]
    for name, value in ctx.params.items():
        source = ctx.get_parameter_source(name)
        if source is not None and source.name == "DEFAULT":
            continue
        flag = "--" + name.replace("_", "-")
        for item in value if isinstance(value, list | tuple) else [value]:
            if item is True:
                parts.append(flag)
            elif item not in (None, False):
                parts.append(f"{flag} {item}")
    return " ".join(parts)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from dbtflow.cloud._client import DbtCloudUnavailable
    from dbtflow.cutover._cutover import CutoverStopped
    from dbtflow.cutover._journal import JournalWriteError

    try:
        yield
    except UserError as exc:
        raise fail(exc) from None
    except CutoverStopped as exc:
        raise fail(exc, exc.exit_code) from None
    except (DbtCloudUnavailable, JournalWriteError) as exc:
        raise fail(exc, 1) from None
    except httpx.HTTPError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise fail(f"the Prefect API failed ({first}): check PREFECT_API_URL and the server", 1) from None


def _prefect_api() -> str:
    """The configured Prefect API URL; cutover and rollback never start an ephemeral one."""
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise UserError(
            "PREFECT_API_URL is not set: point it (or a Prefect profile) at the server or Cloud workspace "
            "that runs the deployment"
        )
    return str(url)


def _cloud_factory(account: str | None, base_url: str | None, token_block: str | None, token_env: str) -> Any:
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from dbtflow.cloud._client import DbtCloudClient, normalize_base_url, resolve_token

    if not account:
        raise UserError("--account is required: the dbt Cloud account id (in its URLs), or set DBT_CLOUD_ACCOUNT_ID")
    (account_id,) = ids("--account", [account])
    url = normalize_base_url(base_url or "cloud.getdbt.com")
    made: list[DbtCloudClient] = []

    def make() -> DbtCloudClient:
        if not made:
            made.append(DbtCloudClient(url, resolve_token(token_block, token_env), account_id, **CLIENT_OPTIONS))
        return made[0]

    make.made = made  # type: ignore[attr-defined]
    return make


def cutover(
    ctx: typer.Context,
    plan: Annotated[
        bool, typer.Option("--plan", help="Check and print what cutover would do; change nothing.")
    ] = False,
    apply: Annotated[bool, typer.Option("--apply", help="Do it.")] = False,
    parity_report: Annotated[
        list[str] | None, typer.Option("--parity-report", help="TARGET=PATH of a `dbtflow parity --json-out` report.")
    ] = None,
    max_parity_age: Annotated[str, typer.Option(help="Oldest acceptable parity report, e.g. 7d, 36h.")] = "7d",
    job: Annotated[list[str] | None, typer.Option("--job", help="dbt Cloud job id to switch off (repeatable).")] = None,
    schedule: Annotated[list[str] | None, typer.Option("--schedule", help="Prefect schedule slug to activate.")] = None,
    schedules_file: Annotated[
        Path | None, typer.Option(help="Schedules file [deploy/schedules.yaml if present, else prefect.yaml].")
    ] = None,
    deployment: Annotated[str | None, typer.Option(help="flow/deployment [the schedules file's].")] = None,
    chain: Annotated[
        bool,
        typer.Option("--chain", help="Also cut over the jobs these jobs start (dbt Cloud job-completion triggers)."),
    ] = False,
    account: Account = None,
    base_url: BaseUrl = None,
    token_block: TokenBlock = None,
    token_env: TokenEnv = "DBT_CLOUD_API_TOKEN",
    journal: JournalPath = None,
    journal_key: JournalKey = None,
) -> None:
    """Switch the chosen dbt Cloud jobs' triggers off and the Prefect schedules on (journaled)."""
    with _one_line_errors():
        if plan == apply:
            raise UserError("pass --plan to see what cutover would do, or --apply to do it")
        cloud = _cloud_factory(account, base_url, token_block, token_env)
        _cutover(
            ctx,
            apply,
            parity_report,
            max_parity_age,
            job,
            schedule,
            schedules_file,
            deployment,
            cloud,
            journal,
            journal_key,
            chain,
        )


def _cutover(
    ctx: typer.Context,
    apply: bool,
    parity_report: list[str] | None,
    max_parity_age: str,
    job: list[str] | None,
    schedule: list[str] | None,
    schedules_file: Path | None,
    deployment: str | None,
    cloud: Callable[[], Any],
    journal_path: Path | None,
    journal_key: str | None,
    chain: bool = False,
) -> None:
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from prefect import get_client

    from dbtflow.cutover._cutover import apply_cutover, choose, open_journal, plan_cutover, resolve_pending
    from dbtflow.cutover._gate import parse_age, parse_reports
    from dbtflow.cutover._journal import JournalStore
    from dbtflow.deploy._history import Actor

    max_age, reports, job_ids = parse_age(max_parity_age), parse_reports(parity_report), ids("--job", job)
    _prefect_api()
    if schedules_file is None:
        schedules_file = next((p for p in (Path("deploy/schedules.yaml"), Path("prefect.yaml")) if p.is_file()), None)
    name, slugs, job_ids = choose(schedules_file, deployment, schedule, job_ids)
    path, key = _journal_where(name, journal_path, journal_key)
    try:
        with get_client(sync_client=True) as prefect:
            store = JournalStore(path, key, prefect)
            journal = open_journal(store, name, cloud())
            if journal.pending and apply:
                _say(resolve_pending(journal, store, prefect, cloud) or "")
            the_plan = plan_cutover(prefect, cloud(), name, slugs, job_ids, reports, max_age, chain=chain)
            for line in the_plan.lines():
                _say(line)
            if not apply:
                pending = " (a previous run was interrupted: --apply settles it first)" if journal.pending else ""
                _say(f"plan: {the_plan.changes} change(s){pending}; nothing was changed")
                return
            if not the_plan.changes:
                _say("nothing to do: already cut over")
                return
            done = apply_cutover(the_plan, prefect, cloud(), store, journal, Actor.current(_command(ctx)), _say)
            _say(f"cutover done: {done} change(s); journal: {store.where()}")
    finally:
        for client in cloud.made:  # type: ignore[attr-defined]
            client.close()


def rollback(
    ctx: typer.Context,
    plan: Annotated[bool, typer.Option("--plan", help="Print what rollback would do; change nothing.")] = False,
    deployment_version: Annotated[
        str | None,
        typer.Option(help="Also re-apply an earlier deployment configuration: previous, or an id from the history."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Restore jobs edited since cutover too.")] = False,
    deployment: Annotated[str, typer.Option(help="flow/deployment.")] = DEPLOYMENT,
    account: Account = None,
    base_url: BaseUrl = None,
    token_block: TokenBlock = None,
    token_env: TokenEnv = "DBT_CLOUD_API_TOKEN",
    journal: JournalPath = None,
    journal_key: JournalKey = None,
) -> None:
    """Undo the cutover from its journal; optionally re-apply the previous deployment configuration."""
    with _one_line_errors():
        _rollback(
            ctx,
            plan,
            deployment_version,
            force,
            deployment,
            account,
            base_url,
            token_block,
            token_env,
            journal,
            journal_key,
        )


def _journal_cloud(
    journal: Any, account: str | None, base_url: str | None, token_block: str | None, token_env: str
) -> Any:
    """The dbt Cloud client for the journal's account and host; the options, when given, must be the journal's."""
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from dbtflow.cloud._client import normalize_base_url

    header = journal.doc["dbt_cloud"]
    if account and str(account) != str(header["account_id"]):
        raise UserError(f"--account {account} is not the journal's dbt Cloud account {header['account_id']}")
    if base_url and normalize_base_url(base_url) != header["base_url"]:
        raise UserError(f"--base-url {base_url} is not the journal's dbt Cloud host {header['base_url']}")
    return _cloud_factory(str(header["account_id"]), header["base_url"], token_block, token_env)


def _journal_undos(journal: Any, store: Any, prefect: Any, cloud: Any, plan: bool, force: bool) -> list[Any]:
    """Settle an interrupted change (unless planning), then the journal's changes to undo, each said."""
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from dbtflow.cutover._cutover import resolve_pending
    from dbtflow.cutover._rollback import plan_rollback

    if journal.pending and not plan:
        _say(resolve_pending(journal, store, prefect, cloud) or "")
    elif journal.pending:
        _say("a change was interrupted (pending in the journal): rollback settles it first")
    undos: list[Any] = plan_rollback(journal, prefect, cloud, force)
    _say(f"journal {store.where()}: {len(undos)} change(s) to undo")
    for undo in undos:
        _say(undo.line())
    return undos


def _deployment_target(prefect: Any, deployment: str, which: str) -> dict[str, Any]:
    """The deploy-history entry `which` (previous, or an id) to re-apply, said with what it would do."""
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from dbtflow.deploy import _history as deploy_history

    history = deploy_history.load(prefect, deployment)
    current = deploy_history.snapshot(prefect, deployment)
    target: dict[str, Any] = deploy_history.resolve(history, current, which)
    verb = "= already has" if current is not None and deploy_history.same(current, target) else "~ re-apply"
    _say(
        f"  {verb} deployment {deployment} configuration {target['id']} recorded {target['recorded_at']} "
        f"({target['config']['entrypoint']}, {deploy_history.git_ref(target['config'])})"
    )
    return target


def _rollback(
    ctx: typer.Context,
    plan: bool,
    deployment_version: str | None,
    force: bool,
    deployment: str,
    account: str | None,
    base_url: str | None,
    token_block: str | None,
    token_env: str,
    journal_path: Path | None,
    journal_key: str | None,
) -> None:
    # lazy: imported on use, so that `dbtflow --help` stays fast
    from prefect import get_client

    from dbtflow.cutover._journal import JournalStore
    from dbtflow.cutover._rollback import apply_rollback
    from dbtflow.deploy import _history as deploy_history
    from dbtflow.deploy._history import Actor

    _prefect_api()
    path, key = _journal_where(deployment, journal_path, journal_key)
    actor = Actor.current(_command(ctx))
    cloud: Any = None
    try:
        with get_client(sync_client=True) as prefect:
            store = JournalStore(path, key, prefect)
            journal = store.load()
            if journal is None and not deployment_version:
                raise UserError(
                    f"no cutover journal at {path} nor in Prefect artifact {key!r}: nothing to roll back "
                    "(pass --journal / --journal-key if it is elsewhere)"
                )
            undos: list[Any] = []
            if journal is not None:
                cloud = _journal_cloud(journal, account, base_url, token_block, token_env)
                undos = _journal_undos(journal, store, prefect, cloud, plan, force)
            target = _deployment_target(prefect, deployment, deployment_version) if deployment_version else None
            if plan:
                _say("plan: nothing was changed")
                return
            writes = apply_rollback(undos, journal, store, prefect, cloud, actor, _say) if journal else 0
            if target is not None and deploy_history.restore(prefect, deployment, target, actor):
                writes += 1
                _say(f"re-applied deployment {deployment} configuration {target['id']}")
            _say(f"rollback done: {writes} change(s)" if writes else "nothing to roll back: already as recorded")
    finally:
        for client in getattr(cloud, "made", []):
            client.close()
