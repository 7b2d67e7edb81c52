"""dbt itself: the project, its artifacts, selection over a manifest."""
