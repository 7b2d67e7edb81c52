"""Prefect entrypoint `flows/dbt_wg_flow.py:run_dbt_wg`: the William Grant dbt project.

Binds the tenant's project folder to dbtflow's generic flow, nothing more; every parameter,
its validation and its behaviour live in `dbtflow.flow` and `dbtflow.request`.
"""

from pathlib import Path

from dbtflow.run._flow import dbt_flow

PROJECT_DIR = Path(__file__).resolve().parent.parent / "tenants" / "dbt_williamgrant"

run_dbt_wg = dbt_flow(PROJECT_DIR, name="run_dbt_wg")

if __name__ == "__main__":
    run_dbt_wg()
