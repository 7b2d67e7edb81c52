"""dbt Cloud: the Admin API client and the job import."""
