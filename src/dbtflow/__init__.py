"""dbtflow: run dbt Core on Prefect, and move off dbt Cloud safely.

Packages by responsibility (docs/architecture.md): `dbt` (reading dbt), `run` (one run on Prefect),
`secrets`, `cloud` (dbt Cloud), `parity`, `cutover`, `deploy`, `cli` (the `dbtflow` command).

Public names are imported on first use (`dbtflow._lazy`); the modules behind them are private.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbtflow._lazy import exports

if TYPE_CHECKING:
    from dbtflow.dbt import load_project as load_project
    from dbtflow.errors import UserError as UserError
    from dbtflow.run import RunRequest as RunRequest
    from dbtflow.run import build_request as build_request
    from dbtflow.run import dbt_flow as dbt_flow
    from dbtflow.run import execute as execute

_EXPORTS = {
    "UserError": "dbtflow.errors",
    "RunRequest": "dbtflow.run",
    "build_request": "dbtflow.run",
    "dbt_flow": "dbtflow.run",
    "execute": "dbtflow.run",
    "load_project": "dbtflow.dbt",
}
__all__ = sorted(_EXPORTS)
__getattr__ = exports(__name__, _EXPORTS)
