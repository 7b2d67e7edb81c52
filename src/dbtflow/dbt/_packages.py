"""Packages: does a run have to install dbt packages first? (dbt Cloud runs `dbt deps` at the start of every job.)

Contract
- `read_spec(project_dir)` reads packages.yml or dependencies.yml as plain YAML (no dbt, no
  Jinja) and returns a `Spec` (the file, its package entries), or None when the project
  declares no packages. A file that does not parse, or is not a list of packages, raises
  `UserError` with one line naming the file, the problem and the fix. `request.build_request`
  calls it, so such a file stops the request before dbt starts and before anything is written.
- `install_reason(project_dir, cli_vars)` returns None when the installed packages match
  package-lock.yml, else a short reason to run `dbt deps`. They match when the lock exists,
  its `sha1_hash` equals the hash `dbt deps` computes of the current packages spec (dbt's own
  function, on the spec rendered as dbt renders it), and the install folder
  (`packages-install-path`, default `dbt_packages/`) holds exactly the lock's packages, by the
  lock's `name`: hub packages at the locked `version` (their dbt_project.yml), git and private
  packages at the locked `revision` (the HEAD of the `.git` dbt keeps in them), local packages
  linked to their folder. Anything else (no lock, a changed spec, a missing, extra or
  different package) is a reason; a reason never names a git URL (it may hold a token).
- `hub_problem(project_dir)` returns None, or the one line that says which hub packages cannot
  be fetched because the dbt package hub (`DBT_PACKAGE_HUB_URL`, as dbt reads it) does not
  answer one GET within HUB_TIMEOUT seconds, and the fix. dbt's own hub client retries each
  request 5 times with a 30 s timeout (minutes on a network that drops packets); this bounds it.
  The line shows the hub's URL without any user or password in it.

Pitfalls
- dbt's hash is `dbt.task.deps._create_sha1_hash`, a private function: if a dbt upgrade moves
  it, the check says it cannot tell and the run installs packages (never a silent skip).
- Cost: with no packages file, two stat calls (~0.1 ms); with one, 0.13-0.3 s for the first check in a
  process (importing dbt.task.deps, compiling dbt's package schema) and 2-10 ms after.
- A git package installed without its `.git` (a vendored dbt_packages/) or from a tarball is
  checked by presence only; so is a local package copied where symlinks are unavailable.
- Runs of two targets in one project folder share the install folder: a run that reinstalls
  replaces it under the other. A deployment clones per run, so it never shares one.
- Must not import prefect or dbt at import time: `dbtflow.run._request` (imported by the CLI before
  either loads) uses `read_spec`; dbt is imported inside `install_reason` only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from dbtflow.errors import UserError

FILES = ("packages.yml", "dependencies.yml")
LOCK = "package-lock.yml"
SOURCES = ("package", "git", "local", "tarball", "private")
HUB_TIMEOUT = 10.0
DEFAULT_HUB = "https://hub.getdbt.com/"


@dataclass(frozen=True)
class Spec:
    file: str  # packages.yml or dependencies.yml
    entries: list[dict[str, Any]]

    @property
    def hub_packages(self) -> list[str]:
        return [str(e["package"]) for e in self.entries if "package" in e]


def read_spec(project_dir: Path) -> Spec | None:
    """The project's package entries as written (unrendered), or None when it declares none."""
    specs = []
    for name in FILES:
        entries = _packages(project_dir / name) if (project_dir / name).is_file() else None
        if entries is not None:
            specs.append(Spec(name, entries))
    if len(specs) > 1:
        raise UserError("packages.yml and dependencies.yml both list packages: keep the list in one of them")
    return specs[0] if specs and specs[0].entries else None


def _packages(path: Path) -> list[dict[str, Any]] | None:
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML ({str(exc).splitlines()[0]}): fix it, then run again") from None
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise UserError(f"{path} must be a mapping with a `packages:` list, not a {type(doc).__name__}: fix it")
    if "packages" not in doc:
        return None
    entries = doc["packages"]
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise UserError(f"{path}: `packages` must be a list of packages, not a {type(entries).__name__}: fix it")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not any(key in entry for key in SOURCES):
            raise UserError(
                f"{path}: packages[{i}] names no package source; give one of "
                f"{', '.join(f'`{k}:`' for k in SOURCES)} (e.g. `- package: dbt-labs/dbt_utils`)"
            )
    return entries


def install_reason(project_dir: Path, cli_vars: dict[str, Any] | None = None) -> str | None:
    """None when the installed packages match package-lock.yml; else why `dbt deps` must run first."""
    spec = read_spec(project_dir)
    if spec is None:
        return None
    lock = _read_yaml(project_dir / LOCK)
    if lock is None:
        return f"no {LOCK}" if not (project_dir / LOCK).exists() else f"{LOCK} is not a readable lock"
    current = _spec_hash(project_dir, cli_vars or {})
    if current is None:
        return f"dbt's hash of {spec.file} is unavailable in this dbt version"
    if lock.get("sha1_hash") != current:
        return f"{spec.file} changed since {LOCK} was written"
    install_dir = project_dir / _install_path(project_dir)
    if not install_dir.is_dir():
        return f"{install_dir.name}/ is missing"
    return _installed_mismatch(project_dir, install_dir, lock.get("packages") or [])


def _installed_mismatch(project_dir: Path, install_dir: Path, locked: list[Any]) -> str | None:
    names = []
    for entry in locked:
        name = entry.get("name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            return f"{LOCK} lists a package without a name (written by an older dbt)"
        names.append(name)
        problem = _package_mismatch(project_dir, install_dir / name, entry)
        if problem:
            return f"package {name!r} {problem}"
    extra = sorted(p.name for p in install_dir.iterdir() if not p.name.startswith(".") and p.name not in names)
    if extra:
        return f"{install_dir.name}/{extra[0]} is not in {LOCK}"
    return None


def _package_mismatch(project_dir: Path, folder: Path, entry: dict[str, Any]) -> str | None:
    if not (folder / "dbt_project.yml").is_file():
        return "is not installed"
    if "package" in entry:
        installed = (_read_yaml(folder / "dbt_project.yml") or {}).get("version")
        if str(installed) != str(entry.get("version")):
            return f"is installed at version {installed}, the lock says {entry.get('version')}"
    elif "git" in entry or "private" in entry:
        head, locked = _git_head(folder), str(entry.get("revision") or "")
        if head is not None and len(locked) == 40 and head != locked:
            return f"is installed at revision {head[:12]}, the lock says {locked[:12]}"
    elif "local" in entry and folder.is_symlink() and folder.resolve() != (project_dir / entry["local"]).resolve():
        return f"links to {folder.resolve()}, not to {entry['local']}"
    return None


def _git_head(folder: Path) -> str | None:
    """The commit a git package's kept `.git` has checked out (None when dbt removed `.git`)."""
    git = folder / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head.removeprefix("ref: ")
        if (git / ref).is_file():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            sha, _, name = line.partition(" ")
            if name == ref:
                return sha
    except OSError:
        return None
    return None


def _spec_hash(project_dir: Path, cli_vars: dict[str, Any]) -> str | None:
    """The `sha1_hash` `dbt deps` would write for the current spec; None if this dbt does not have it."""
    try:  # lazy: dbt loads when a run checks its packages, not when the CLI validates a request
        from dbt.config.project import package_and_project_data_from_root, package_config_from_data
        from dbt.config.renderer import PackageRenderer
        from dbt.task.deps import _create_sha1_hash
    except ImportError:
        return None
    try:
        data, specified_in = package_and_project_data_from_root(str(project_dir))
        # as dbt's DbtProjectYamlRenderer.render_packages: dependencies.yml is not rendered
        rendered = data if specified_in == "dependencies.yml" else PackageRenderer(cli_vars).render_data(data)
        return str(_create_sha1_hash(package_config_from_data(rendered, data).packages))
    except Exception as exc:  # dbt's own checks of the spec (schema, Jinja, env_var)
        problem = " ".join(str(exc).split())[:300]
        raise UserError(f"dbt cannot read the packages of {project_dir} ({problem}): fix them") from None


def hub_problem(project_dir: Path) -> str | None:
    """One line when the project needs the dbt package hub and the hub does not answer; else None."""
    spec = read_spec(project_dir)
    lock = _read_yaml(project_dir / LOCK) or {}
    locked = [str(e["package"]) for e in lock.get("packages") or [] if isinstance(e, dict) and "package" in e]
    names = sorted({*(spec.hub_packages if spec else []), *locked})
    if not names:
        return None
    base = os.environ.get("DBT_PACKAGE_HUB_URL") or DEFAULT_HUB
    try:
        response = httpx.get(f"{base}api/v1/index.json", timeout=HUB_TIMEOUT)  # the first URL dbt deps fetches
        response.raise_for_status()
        return None
    except httpx.TimeoutException:
        why = f"no answer within {HUB_TIMEOUT:.0f} s"
    except httpx.HTTPStatusError as exc:
        why = f"HTTP {exc.response.status_code}"
    except httpx.HTTPError as exc:
        why = " ".join(str(exc).split())[:200] or type(exc).__name__
    install, shown = _install_path(project_dir), httpx.URL(base).copy_with(username=None, password=None)
    return (
        f"cannot install {', '.join(names)}: the dbt package hub {shown} is unreachable ({why}); "
        f"vendor the package as a `local:` package, or run `dbt deps` where the hub is reachable "
        f"and commit {LOCK} and {install}/"
    )


def _install_path(project_dir: Path) -> str:
    project = _read_yaml(project_dir / "dbt_project.yml") or {}
    return str(project.get("packages-install-path") or "dbt_packages")


def _read_yaml(path: Path) -> dict[str, Any] | None:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return doc if isinstance(doc, dict) else None


def vars_of(argv: list[str]) -> dict[str, Any]:
    """The `--vars` mapping of a dbt argv (request.py writes it as JSON), for rendering the spec as dbt would."""
    if "--vars" not in argv:
        return {}
    value = json.loads(argv[argv.index("--vars") + 1])
    return value if isinstance(value, dict) else {}
