"""The Prefect deployment: schedules, deploy history, notifications, status."""
