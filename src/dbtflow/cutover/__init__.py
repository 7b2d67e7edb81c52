"""Cutover from dbt Cloud to Prefect, its gate, journal and rollback."""
