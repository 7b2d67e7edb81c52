"""Prefect entrypoint `flows/dbt_wg_flow.py:run_dbt_wg`: the William Grant dbt project.

Contract
- A literal `def run_dbt_wg` with every parameter of `dbtflow.run.RunParameters`, as
  `dbtflow.run._flow.dbt_flow` has them (same order, types, literal defaults and `Args:`
  descriptions); the body hands them to dbtflow with the
  tenant's folder, which owns their validation and behaviour.
- Why literal, not `run_dbt_wg = dbt_flow(...)`: `uvx prefect-cloud deploy` reads this file's text
  and builds the deployment's parameter schema by an AST search for `def run_dbt_wg`
  (`prefect_cloud.utilities.callables.get_parameter_schema_from_content`), without importing it.

Pitfalls
- prefect-cloud evaluates the annotations and defaults with this file's imports only (prefect and
  dbtflow are not installed where it runs): keep them to builtins and `typing`.
- The copy cannot drift unseen: tests/run/test_entrypoint.py compares this signature and
  docstring with dbt_flow's, and prefect-cloud's schema of this text with Prefect's runtime one.
"""

from pathlib import Path
from typing import Any, Literal

from prefect import flow
from prefect.client.schemas.objects import State

from dbtflow.run._flow import execute

PROJECT_DIR = Path(__file__).resolve().parent.parent / "tenants" / "dbt_williamgrant"


@flow(name="run_dbt_wg", log_prints=False)
def run_dbt_wg(
    command: str = "build",
    target: str = "dev",
    select: str | list[str] | None = None,
    exclude: str | list[str] | None = None,
    selector: str | None = None,
    vars: dict[str, Any] | str | None = None,
    full_refresh: bool = False,
    state: str | None = None,
    defer: bool = False,
    threads: int | None = None,
    steps: list[str] | None = None,
    source_freshness: bool = False,
    generate_docs: bool = False,
    timeout_seconds: int | None = None,
    fail_fast: bool = False,
    engine: Literal["fast", "prefect-dbt"] = "fast",
    on_overlap: Literal["wait", "cancel"] = "wait",
    install_deps: bool = True,
    run_storage: str | None = None,
    env_vars: dict[str, str] | None = None,
) -> State:
    """Run dbt Core for this project.

    Args:
        command: The dbt command, e.g. `build`, `run --select tag:daily`, `source freshness`.
        target: The profiles.yml target to run against (`local`, `dev`, `prod`).
        select: dbt selection, e.g. `tag:daily +fct_shipments` (space-separated or a list).
        exclude: dbt exclusion, same syntax as select.
        selector: The name of a selector in selectors.yml, e.g. `daily`.
        vars: dbt vars, as a mapping or a JSON/YAML string of one.
        full_refresh: Rebuild incremental models and seeds from scratch.
        state: Folder of a previous run's artifacts, for `state:` selection and deferral.
        defer: Defer unbuilt upstream references to `state`.
        threads: dbt threads (1-64); the target's own setting when empty.
        steps: Several dbt commands run in order, like a dbt Cloud job; replaces `command`.
        source_freshness: Run `dbt source freshness` first; its failure does not fail the run.
        generate_docs: Run `dbt docs generate` last; its failure does not fail the run.
        timeout_seconds: Stop the run after this many seconds; no limit when empty.
        fail_fast: Stop a step at its first failing node.
        engine: `fast` reports every dbt node to Prefect at the speed of plain dbt;
            `prefect-dbt` uses prefect-dbt's PrefectDbtRunner as it is.
        on_overlap: When another run of this target is running: `wait` for it, or `cancel` this run.
        install_deps: Run `dbt deps` first when packages.yml or dependencies.yml lists packages
            that are missing or do not match package-lock.yml (as dbt Cloud does every job).
        run_storage: A Prefect storage block (e.g. `s3-bucket/dbtflow-runs`) that keeps each run's
            artifacts; empty: env DBTFLOW_RUN_STORAGE, else the worker's local runs folder.
        env_vars: Environment variables for dbt's `env_var()` while the run runs (names DBT_*, as in
            dbt Cloud); a `DBT_ENV_SECRET_*` entry's value is the name of the Prefect Secret block
            holding it (read when the run starts, masked as dbt masks secrets), never the secret.
    """
    return execute(PROJECT_DIR, None, dict(locals()))


if __name__ == "__main__":
    run_dbt_wg()
