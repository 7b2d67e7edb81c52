"""Fixtures for the parity tests: the fake dbt Cloud API."""

from tests.fakes.dbtcloud_fixture import dbt_cloud  # noqa: F401
