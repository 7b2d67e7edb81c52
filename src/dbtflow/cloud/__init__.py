"""dbt Cloud: the Admin API client, and importing its jobs as Prefect schedules.

Public names are imported on first use (`dbtflow._lazy`); the modules behind them are private.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbtflow._lazy import exports

if TYPE_CHECKING:
    from ._client import ApiToken as ApiToken
    from ._client import DbtCloudClient as DbtCloudClient
    from ._client import DbtCloudError as DbtCloudError
    from ._client import DbtCloudUnavailable as DbtCloudUnavailable
    from ._client import normalize_base_url as normalize_base_url
    from ._client import resolve_token as resolve_token
    from ._import import import_jobs as import_jobs

_EXPORTS = {
    "ApiToken": "._client",
    "DbtCloudClient": "._client",
    "DbtCloudError": "._client",
    "DbtCloudUnavailable": "._client",
    "normalize_base_url": "._client",
    "resolve_token": "._client",
    "import_jobs": "._import",
}
__all__ = sorted(_EXPORTS)
__getattr__ = exports(__name__, _EXPORTS)
