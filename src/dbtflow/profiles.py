"""Profiles: the one target a run needs, with Prefect block references resolved in memory.

Contract
- `resolved_profiles(project, target)` yields a temporary folder holding a profiles.yml with
  only the chosen profile and target. Prefect references in it
  (`{{ prefect.blocks.<type>.<name>.<field> }}`, `{{ prefect.variables.<name> }}`, the
  templating prefect-dbt supports) are resolved through the Prefect API, and each value is
  handed to dbt as `{{ env_var('...') }}` whose value lives only in this process's
  environment: the file on disk never holds a secret. The folder is deleted on exit.
- Narrowing to one target first means a `dev` run reads dev's blocks only: prod credentials
  are never loaded in a dev run, and a target with no block references needs no Prefect API.

Pitfalls
- prefect-dbt's own `resolve_profiles_yml` resolves every target of the file; dbtflow hands it
  this already-resolved folder, so its pass finds nothing left to resolve.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from dbtflow.errors import UserError
from dbtflow.project import Project

PREFECT_REFERENCE = re.compile(r"\{\{\s*prefect\.(blocks|variables)\.")


@contextmanager
def resolved_profiles(project: Project, target: str) -> Iterator[Path]:
    raw = yaml.safe_load(project.profiles_path.read_text()) or {}
    output = raw[project.profile_name]["outputs"][target]
    narrowed: dict[str, Any] = {project.profile_name: {"target": target, "outputs": {target: output}}}
    if isinstance(raw.get("config"), dict):
        narrowed["config"] = raw["config"]
    if PREFECT_REFERENCE.search(yaml.safe_dump(output)):
        narrowed = _resolve_references(narrowed, project, target)
    with tempfile.TemporaryDirectory(prefix="dbtflow-profiles-") as folder:
        path = Path(folder) / "profiles.yml"
        path.write_text(yaml.safe_dump(narrowed, sort_keys=False))
        path.chmod(0o600)
        yield Path(folder)


def _resolve_references(profile: dict[str, Any], project: Project, target: str) -> dict[str, Any]:
    from prefect.utilities.asyncutils import run_coro_as_sync
    from prefect.utilities.templating import resolve_block_document_references, resolve_variables
    from prefect_dbt.utilities import replace_with_env_var_call

    try:
        profile = run_coro_as_sync(
            resolve_block_document_references(profile, value_transformer=replace_with_env_var_call)
        )
        return run_coro_as_sync(resolve_variables(profile))
    except Exception as exc:
        raise UserError(
            f"target {target!r} of {project.profiles_path} refers to a Prefect block or variable that "
            f"could not be read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}); "
            f"create it with `dbtflow blocks setup --target {target}`"
        ) from None
