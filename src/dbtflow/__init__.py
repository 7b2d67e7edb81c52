"""dbtflow: run dbt Core on Prefect, and move off dbt Cloud safely."""
