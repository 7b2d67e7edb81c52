"""dbt itself, read from outside: the project, its artifacts, and dbt's selection over a manifest.

Public names are imported on first use (`dbtflow._lazy`); the modules behind them are private.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbtflow._lazy import exports

if TYPE_CHECKING:
    from ._artifacts import ArtifactError as ArtifactError
    from ._artifacts import ManifestNode as ManifestNode
    from ._artifacts import NodeResult as NodeResult
    from ._artifacts import StepArtifacts as StepArtifacts
    from ._artifacts import no_gc as no_gc
    from ._artifacts import read_step as read_step
    from ._artifacts import step_from_json as step_from_json
    from ._project import Project as Project
    from ._project import load_project as load_project
    from ._selection import Selection as Selection
    from ._selection import evaluate as evaluate

_EXPORTS = {
    "Project": "._project",
    "load_project": "._project",
    "ArtifactError": "._artifacts",
    "ManifestNode": "._artifacts",
    "NodeResult": "._artifacts",
    "StepArtifacts": "._artifacts",
    "no_gc": "._artifacts",
    "read_step": "._artifacts",
    "step_from_json": "._artifacts",
    "Selection": "._selection",
    "evaluate": "._selection",
}
__all__ = sorted(_EXPORTS)
__getattr__ = exports(__name__, _EXPORTS)
