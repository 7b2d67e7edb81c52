"""Cutover from dbt Cloud to Prefect: the parity gate, the journal, and rollback.

Public names are imported on first use (`dbtflow._lazy`); the modules behind them are private.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbtflow._lazy import exports

if TYPE_CHECKING:
    from ._cutover import CutoverStopped as CutoverStopped
    from ._cutover import apply_cutover as apply_cutover
    from ._cutover import open_journal as open_journal
    from ._cutover import plan_cutover as plan_cutover
    from ._gate import check_reports as check_reports
    from ._gate import parse_reports as parse_reports
    from ._journal import Journal as Journal
    from ._journal import JournalStore as JournalStore
    from ._rollback import apply_rollback as apply_rollback
    from ._rollback import plan_rollback as plan_rollback

_EXPORTS = {
    "CutoverStopped": "._cutover",
    "apply_cutover": "._cutover",
    "open_journal": "._cutover",
    "plan_cutover": "._cutover",
    "check_reports": "._gate",
    "parse_reports": "._gate",
    "Journal": "._journal",
    "JournalStore": "._journal",
    "apply_rollback": "._rollback",
    "plan_rollback": "._rollback",
}
__all__ = sorted(_EXPORTS)
__getattr__ = exports(__name__, _EXPORTS)
