"""The fast engine's asset keys are prefect-dbt's, so either engine feeds the same assets in Prefect."""

import pytest
from prefect_dbt.utilities import format_resource_id

from dbtflow.run._reporter import asset_key


@pytest.mark.parametrize(
    ("adapter", "relation"),
    [
        ("duckdb", '"wg_local"."marts"."fct_shipments"'),
        ("snowflake", '"WG_PROD"."MARTS"."FCT_NET_REVENUE_GBP"'),
        ("bigquery", "`project`.`dataset`.`table`"),
        ("postgres", '"db"."sch ema"."we|ird?name#x"'),
        ("duckdb", '"db"."schema"."' + "x" * 600 + '"'),
    ],
)
def test_asset_key_matches_prefect_dbt(adapter: str, relation: str):
    assert asset_key(adapter, relation) == format_resource_id(adapter, relation)
