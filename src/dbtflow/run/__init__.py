"""One dbt run on Prefect: request, invocation, reporting, outcome, summary."""
