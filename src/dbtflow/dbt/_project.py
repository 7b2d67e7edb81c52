"""Project: what dbtflow needs to know about a dbt project before dbt starts.

Contract
- `load_project(project_dir, profiles_dir)` reads dbt_project.yml, profiles.yml and
  selectors.yml as plain YAML (no Jinja rendering, no dbt import) and returns the profile's
  target names and the selector names, so that a request can be validated in milliseconds.
  profiles.yml is parsed here once per run: `project.output(target)` and `project.profiles_config`
  hand its target's mapping to the modules that resolve it (secrets, the parse cache).
- profiles.yml is looked up like dbt does, except that one beside dbt_project.yml wins:
  the explicit `profiles_dir`, then the project folder, then `DBT_PROFILES_DIR`, then `~/.dbt`.

Pitfalls
- Values in profiles.yml may be Jinja or Prefect block references; they are kept as written
  (never rendered or resolved here) and out of the Project's repr, so a log or traceback that
  shows a Project never shows a profile value.
- Works for any dbt project (R-202): nothing here is specific to a tenant.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dbtflow.errors import UserError


@dataclass(frozen=True)
class Project:
    project_dir: Path
    profiles_dir: Path
    name: str
    profile_name: str
    targets: tuple[str, ...]
    default_target: str | None
    selectors: tuple[str, ...]
    profiles: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)  # profiles.yml as written

    @property
    def profiles_path(self) -> Path:
        return self.profiles_dir / "profiles.yml"

    @property
    def profiles_config(self) -> dict[str, Any] | None:
        """profiles.yml's top-level `config:` mapping, if any."""
        config = self.profiles.get("config")
        return copy.deepcopy(config) if isinstance(config, dict) else None

    def output(self, target: str) -> dict[str, Any]:
        """A copy of the target's mapping in the profile, as written (Jinja and block references unresolved).

        Args:
            target: one of `targets`.

        Returns:
            The mapping (callers may change their copy).
        """
        output = self.profiles[self.profile_name]["outputs"][target]
        return copy.deepcopy(output) if isinstance(output, dict) else {}


def load_project(project_dir: str | Path, profiles_dir: str | Path | None = None) -> Project:
    """Read what dbtflow needs of a dbt project as plain YAML (no Jinja, no dbt).

    Args:
        project_dir: the folder of dbt_project.yml.
        profiles_dir: the folder of profiles.yml; None looks beside dbt_project.yml, then in
            DBT_PROFILES_DIR, then in ~/.dbt.

    Returns:
        The project: name, profile, target names, the profile's default target, selector names.

    Raises:
        UserError: a file is missing or not the YAML mapping dbt expects (one line, with the fix).
    """
    project_path = Path(project_dir).expanduser().resolve()
    project_yml = _read_yaml(project_path / "dbt_project.yml", "run it from a dbt project or pass --project-dir")
    name = str(project_yml.get("name") or project_path.name)
    profile_name = str(project_yml.get("profile") or name)

    profiles_path = _profiles_dir(project_path, profiles_dir) / "profiles.yml"
    profiles = _read_yaml(profiles_path, "pass --profiles-dir, or put profiles.yml beside dbt_project.yml")
    profile = profiles.get(profile_name)
    if not isinstance(profile, dict) or not isinstance(profile.get("outputs"), dict):
        raise UserError(
            f"{profiles_path} has no profile {profile_name!r} with outputs; add it (dbt_project.yml names it)"
        )

    selectors_path = project_path / "selectors.yml"
    selectors: list[str] = []
    if selectors_path.exists():
        doc = _read_yaml(selectors_path, "fix its YAML")
        selectors = [str(s.get("name")) for s in doc.get("selectors") or [] if isinstance(s, dict)]
    return Project(
        project_dir=project_path,
        profiles_dir=profiles_path.parent,
        name=name,
        profile_name=profile_name,
        targets=tuple(str(t) for t in profile["outputs"]),
        default_target=profile.get("target"),
        selectors=tuple(selectors),
        profiles=profiles,
    )


def _profiles_dir(project_path: Path, explicit: str | Path | None) -> Path:
    if explicit:
        return Path(explicit).expanduser().resolve()
    if (project_path / "profiles.yml").exists():
        return project_path
    if os.environ.get("DBT_PROFILES_DIR"):
        return Path(os.environ["DBT_PROFILES_DIR"]).expanduser().resolve()
    return Path.home() / ".dbt"


def _read_yaml(path: Path, fix: str) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"{path} not found: {fix}")
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML ({str(exc).splitlines()[0]}): fix it") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path} is empty or not a mapping: fix it")
    return doc
