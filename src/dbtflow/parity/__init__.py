"""Parity between a dbt Cloud run and a Prefect flow run, on artifacts only."""
