"""pytest fixtures for the fake dbt Cloud API: import them into a conftest.py to use them.

    from tests.fakes.dbtcloud_fixture import cloud_client, dbt_cloud  # noqa: F401

- `dbt_cloud`: a fresh `FakeDbtCloud` (fixtures loaded, faults empty) serving on loopback for one test.
- `cloud_client(token=..., **client_options)`: a `DbtCloudClient` for account 1 of that server, with
  fast retries by default (backoff 0.01 s); closed at the end of the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dbtflow.cloud._client import ApiToken, DbtCloudClient
from tests.fakes.dbtcloud_server import ADMIN_TOKEN, FakeDbtCloud


@pytest.fixture
def dbt_cloud() -> Iterator[FakeDbtCloud]:
    fake = FakeDbtCloud().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def cloud_client(dbt_cloud: FakeDbtCloud) -> Iterator[Callable[..., DbtCloudClient]]:
    clients: list[DbtCloudClient] = []

    def make(token: str = ADMIN_TOKEN, account_id: int = 1, **options: Any) -> DbtCloudClient:
        options.setdefault("backoff", 0.01)
        options.setdefault("timeout", 10.0)
        client = DbtCloudClient(dbt_cloud.url, ApiToken(token, "test token"), account_id, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
