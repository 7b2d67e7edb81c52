"""One dbt run on Prefect, in the order data flows: request -> argv -> invocation -> reporter -> outcome -> summary.

Public names are imported on first use (`dbtflow._lazy`); the modules behind them are private.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbtflow._lazy import exports

if TYPE_CHECKING:
    from ._flow import dbt_flow as dbt_flow
    from ._flow import execute as execute
    from ._invoke import event_listeners as event_listeners
    from ._invoke import run_step as run_step
    from ._outcome import RunOutcome as RunOutcome
    from ._outcome import StepOutcome as StepOutcome
    from ._parameters import DEFAULT_TARGET as DEFAULT_TARGET
    from ._parameters import InvalidRequest as InvalidRequest
    from ._parameters import RunParameters as RunParameters
    from ._parameters import default_target as default_target
    from ._request import RunRequest as RunRequest
    from ._request import Step as Step
    from ._request import build_request as build_request

_EXPORTS = {
    "dbt_flow": "._flow",
    "execute": "._flow",
    "DEFAULT_TARGET": "._parameters",
    "InvalidRequest": "._parameters",
    "RunParameters": "._parameters",
    "default_target": "._parameters",
    "RunRequest": "._request",
    "Step": "._request",
    "build_request": "._request",
    "event_listeners": "._invoke",
    "run_step": "._invoke",
    "RunOutcome": "._outcome",
    "StepOutcome": "._outcome",
}
__all__ = sorted(_EXPORTS)
__getattr__ = exports(__name__, _EXPORTS)
