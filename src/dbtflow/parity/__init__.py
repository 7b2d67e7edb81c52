"""Parity between a dbt Cloud run and a Prefect flow run, on artifacts only (no dbt, no Prefect).

Public names are imported on first use (`dbtflow._lazy`); the modules behind them are private.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbtflow._lazy import exports

if TYPE_CHECKING:
    from ._compare import Difference as Difference
    from ._compare import ParityReport as ParityReport
    from ._compare import apply_accepted as apply_accepted
    from ._compare import compare as compare
    from ._compare import load_accepted as load_accepted
    from ._load import ArtifactSet as ArtifactSet
    from ._load import ParityInputError as ParityInputError
    from ._load import load_artifact_set as load_artifact_set
    from ._load import resolve_run as resolve_run
    from ._report import report_json as report_json
    from ._report import report_markdown as report_markdown

_EXPORTS = {
    "Difference": "._compare",
    "ParityReport": "._compare",
    "apply_accepted": "._compare",
    "compare": "._compare",
    "load_accepted": "._compare",
    "ArtifactSet": "._load",
    "ParityInputError": "._load",
    "load_artifact_set": "._load",
    "resolve_run": "._load",
    "report_json": "._report",
    "report_markdown": "._report",
}
__all__ = sorted(_EXPORTS)
__getattr__ = exports(__name__, _EXPORTS)
