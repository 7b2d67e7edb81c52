"""The warehouse drivers under dbt: what a run does to them so a warehouse fault never hangs it.

Contract
- `on_event` (a dbt event callback) calls `bound_snowflake_retries()` when dbt registers
  dbt-snowflake, before it opens a connection; a run on another adapter never imports the
  Snowflake driver (~0.4 s of imports). `bound_snowflake_retries()` (idempotent) makes every Snowflake
  connection dbt opens give up on a request that has not been answered after
  `DBTFLOW_SNOWFLAKE_RETRY_SECONDS` (default 120) of retries, with one line naming the host and
  the bound; once a host has been given up on, later requests of the same step to it fail at
  their first failure instead of waiting again. `start_step()` forgets that for the next step.
- `cancel_queries()` cancels the queries dbt's connections are running (the adapter's
  `cancel_open_connections`; dbt-duckdb interrupts DuckDB): a stopped run leaves none behind.
- `release_connections()` closes what dbt keeps open between invocations (dbt-duckdb's
  `keep_open` database): a run must not leave the database file locked.

Pitfalls
- snowflake-connector-python retries an unanswered request (connection refused, reset, 5xx)
  without end unless `network_timeout` is set, and `network_timeout` is also a time bomb that
  cancels any query running longer; dbt-snowflake sets neither. So a warehouse gone mid-run
  hung the run until its `timeout_seconds`. The bound is put on the retries alone, through the
  connector's `backoff_policy` (a generator of sleep times, one per request): raising from it
  ends that request's retries; a long query is unaffected (it polls with new requests).
- dbt-snowflake's own `connect_retries`/`connect_timeout` (the profile) still govern opening a
  connection; this bound is per request, on top of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from dbt.adapters.factory import FACTORY

from dbtflow.settings import SNOWFLAKE_RETRY_SECONDS, Settings

_given_up: set[str] = set()  # hosts given up on in this step


def on_event(event: Any) -> None:
    """dbt's event callback: bound the Snowflake driver's retries as soon as dbt registers dbt-snowflake."""
    if event.info.name == "AdapterRegistered" and event.data.adapter_name == "snowflake":
        bound_snowflake_retries()


def bound_snowflake_retries() -> None:
    import snowflake.connector  # lazy: only a Snowflake target loads the driver (dbt-snowflake imported it already)

    if getattr(snowflake.connector.connect, "dbtflow_bounded", False):
        return
    unbounded = snowflake.connector.connect

    def connect(**kwargs: Any) -> Any:
        host = kwargs.get("host") or f"{kwargs.get('account')}.snowflakecomputing.com"
        kwargs.setdefault("backoff_policy", _bounded_backoff(str(host)))
        return unbounded(**kwargs)

    connect.dbtflow_bounded = True  # type: ignore[attr-defined]
    snowflake.connector.connect = connect  # type: ignore[assignment]


def start_step() -> None:
    _given_up.clear()


def retry_seconds() -> int:
    return Settings.from_env().snowflake_retry_seconds


def _bounded_backoff(host: str) -> Callable[[], Iterator[int]]:
    from snowflake.connector.backoff_policies import exponential_backoff  # lazy: see bound_snowflake_retries
    from snowflake.connector.errors import OperationalError  # lazy: see bound_snowflake_retries

    def policy() -> Iterator[int]:
        bound, waited = retry_seconds(), 0
        for tries, sleep in enumerate(exponential_backoff()()):
            if tries and (waited >= bound or host in _given_up):
                _given_up.add(host)
                raise OperationalError(
                    msg=f"Snowflake at {host} did not answer for {waited} s of retries; giving up "
                    f"({SNOWFLAKE_RETRY_SECONDS}={bound}): is the warehouse up and reachable from here?"
                )
            sleep = 0 if host in _given_up else min(sleep, bound - waited)
            yield sleep  # the first value is read when a request starts, each next one after a failed try
            waited += sleep

    return policy


def cancel_queries() -> None:
    """Cancel the warehouse queries dbt's connections are running, through each adapter."""
    for adapter in _adapters():
        with contextlib.suppress(Exception):  # best effort: the step is ending anyway
            adapter.cancel_open_connections()


def release_connections() -> None:
    """Close every warehouse connection dbt holds in this process, once no dbt runs."""
    for adapter in _adapters():
        with contextlib.suppress(Exception):
            adapter.cleanup_connections()
        manager = type(adapter.connections)
        environment = getattr(manager, "_ENV", None)  # dbt-duckdb's process-wide database
        if environment is not None:
            with contextlib.suppress(Exception):
                manager.close_all_connections()
                environment.close()


def _adapters() -> list[Any]:
    try:
        return list(FACTORY.adapters.values())
    except Exception:
        return []
