"""The fake dbt Cloud API fixtures (tests/fakes/dbtcloud_fixture.py) for the dbt Cloud tests."""

from tests.fakes.dbtcloud_fixture import cloud_client, dbt_cloud  # noqa: F401
