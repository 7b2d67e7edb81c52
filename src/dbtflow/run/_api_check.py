"""The Prefect API a `dbtflow run` will report to: reachable, checked before dbt starts.

Contract
- `check_api(url)` does nothing for no URL (Prefect's ephemeral API, started in-process). For a
  URL it asks `GET <url>/health` once (PROBE_SECONDS) and raises `UserError` in one line when the
  URL is not a URL, nothing answers there, or what answers is not a Prefect API (an answer
  other than 200 on /health): the URL, what went wrong, how to fix it, and that dbt did not start.
- 401/403 (a workspace URL without a valid key) count as reachable: the flow's own calls then
  say what is wrong.

Pitfalls
- The URL comes from Prefect's settings (PREFECT_API_URL, or the active profile after `prefect
  cloud login`), read by the caller; this module does not import prefect.
- A server that goes away after the check is the reporter's to handle (docs/reliability.md).
"""

from __future__ import annotations

import httpx

from dbtflow.errors import UserError

PROBE_SECONDS = 10.0
FIX = "start that server, correct PREFECT_API_URL (it ends in /api), or unset it to use Prefect's ephemeral API"


def check_api(url: str | None) -> None:
    if not url:
        return
    try:
        response = httpx.get(f"{url.rstrip('/')}/health", timeout=PROBE_SECONDS)
    except httpx.HTTPError as exc:
        detail = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UserError(f"PREFECT_API_URL {url!r} cannot be reached ({detail}); {FIX}; dbt did not start") from None
    if response.status_code not in (200, 401, 403):
        raise UserError(
            f"PREFECT_API_URL {url!r} is not a Prefect API (HTTP {response.status_code} on /health); {FIX}; "
            "dbt did not start"
        )
