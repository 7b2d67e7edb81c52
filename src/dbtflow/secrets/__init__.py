"""Warehouse credentials: Prefect blocks and profiles.yml block references."""
