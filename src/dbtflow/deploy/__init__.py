"""The Prefect deployment: schedules, deploy history, notifications and status.

Public names are imported on first use (`dbtflow._lazy`); the modules behind them are private.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbtflow._lazy import exports

if TYPE_CHECKING:
    from ._history import Actor as Actor
    from ._history import record as record
    from ._history import restore as restore
    from ._schedules import find_deployment as find_deployment
    from ._schedules import set_schedule_active as set_schedule_active
    from ._status import Status as Status

_EXPORTS = {
    "find_deployment": "._schedules",
    "set_schedule_active": "._schedules",
    "Actor": "._history",
    "record": "._history",
    "restore": "._history",
    "Status": "._status",
}
__all__ = sorted(_EXPORTS)
__getattr__ = exports(__name__, _EXPORTS)
