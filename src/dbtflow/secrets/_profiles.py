"""Profiles: the one target a run needs, with Prefect block references resolved in memory.

Contract
- `resolved_profiles(project, target)` yields a temporary folder holding a profiles.yml with
  only the chosen profile and target. Prefect references in it
  (`{{ prefect.blocks.<type>.<name>.<field> }}`, `{{ prefect.variables.<name> }}`, the
  templating prefect-dbt supports) are resolved through the Prefect API, and each block value
  is handed to dbt as `{{ env_var('...') }}` whose value lives only in this process's
  environment, and only while the context is open: the file on disk never holds a block value.
  Secret fields (the block schema's secret fields, or a name like password, private_key,
  passphrase, token, secret) go through `DBT_ENV_SECRET_*` variables, which dbt scrubs from
  its logs and never records for partial parsing. Integers and booleans keep their type
  (`| as_number`, `| as_bool`); an unset field is an empty string, which dbt adapters read as
  "not set" (dbt-snowflake skips an empty password, private_key, host or port 0).
- Narrowing to one target first means a `dev` run reads dev's blocks only: prod credentials
  are never loaded in a dev run, and a target with no block references needs no Prefect API.
- Every failure is a one-line `UserError` naming the block and the fix: a block that does not
  exist (yet), a block of another type under that name, a field the block does not have, an
  unreachable or refusing API, and a Snowflake private key that is malformed or encrypted
  without a passphrase (checked before dbt starts). No message carries a value.

Pitfalls
- prefect-dbt's own `resolve_profiles_yml` resolves every target of the file and writes
  `str(None)` for unset fields; dbtflow resolves here instead, and hands prefect-dbt's engine
  this already-resolved folder, so its pass finds nothing left to resolve.
- The environment variables are process-wide; concurrent runs of the same target share them
  (counted, removed when the last run ends), and a rotation between two such runs is seen by
  the later step of the earlier run.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.utilities.asyncutils import run_coro_as_sync
from prefect.utilities.collections import get_from_dict
from prefect.utilities.templating import resolve_variables

from dbtflow.dbt._project import Project
from dbtflow.errors import UserError
from dbtflow.secrets._keys import check_private_key
from dbtflow.settings import BLOCK_VALUE_PREFIX

PREFECT_REFERENCE = re.compile(r"\{\{\s*prefect\.(blocks|variables)\.")
BLOCK_REFERENCE = re.compile(r"\{\{\s*prefect\.blocks\.([\w-]+)\.([\w-]+)((?:\.[\w\[\]-]+)*)\s*\}\}")
CREDENTIALS = "snowflake-credentials"
CONNECTOR = "snowflake-connector"
TARGET_CONFIGS = "dbt-cli-snowflake-target-configs"
PROFILE = "dbt-cli-profile"
MANAGED = (CREDENTIALS, CONNECTOR, TARGET_CONFIGS, PROFILE)
SECRET_HINTS = ("password", "passphrase", "private_key", "token", "secret")

_ENV_LOCK = threading.Lock()
_ENV_USERS: Counter[str] = Counter()


@contextmanager
def resolved_profiles(project: Project, target: str) -> Iterator[Path]:
    """A folder holding a profiles.yml for `target` alone, its block references resolved, while the context is open.

    Args:
        project: the dbt project (its profiles.yml and profile name).
        target: the target to keep.

    Returns:
        (yields) the folder to pass to dbt as `--profiles-dir`; block values reach dbt through
        environment variables, never through the file, and both are gone when the context ends.

    Raises:
        UserError: a block is missing, unreadable, of the wrong type, or holds a key that does not load.
    """
    output = project.output(target)
    narrowed: dict[str, Any] = {project.profile_name: {"target": target, "outputs": {target: output}}}
    if project.profiles_config is not None:
        narrowed["config"] = project.profiles_config
    env: dict[str, str] = {}
    if any(BLOCK_REFERENCE.search(text) for text in _strings(output)):
        resolver = _BlockResolver(project, target)
        narrowed[project.profile_name]["outputs"][target] = resolver.resolve(output)
        env = resolver.env
        if output.get("type") == "snowflake":
            _check_snowflake_key(resolver, target)
    if PREFECT_REFERENCE.search(yaml.safe_dump(narrowed)):
        narrowed = _resolve_variables(narrowed, project, target)
    _acquire(env)
    try:
        with tempfile.TemporaryDirectory(prefix="dbtflow-profiles-") as folder:
            path = Path(folder) / "profiles.yml"
            path.touch(0o600)
            path.write_text(yaml.safe_dump(narrowed, sort_keys=False))
            yield Path(folder)
    finally:
        _release(env)


def referenced_blocks(project: Project, target: str) -> list[tuple[str, str]]:
    """The (block type slug, block name) pairs the target's profile refers to, in order."""
    output = project.output(target)
    found = [(m[1], m[2]) for text in _strings(output) for m in BLOCK_REFERENCE.finditer(text)]
    return list(dict.fromkeys(found))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


class _BlockResolver:
    """Replaces block placeholders by env_var calls; reads each block document once."""

    def __init__(self, project: Project, target: str) -> None:
        self.project = project
        self.target = target
        self.env: dict[str, str] = {}
        self.values: dict[str, tuple[str, Any]] = {}  # profile key -> (block, value), whole-value references only
        self._documents: dict[tuple[str, str], Any] = {}

    def resolve(self, output: dict[str, Any]) -> dict[str, Any]:
        resolved: dict[str, Any] = {}
        for key, value in output.items():
            whole = BLOCK_REFERENCE.fullmatch(value.strip()) if isinstance(value, str) else None
            if whole:
                block, _, raw = self._lookup(whole)
                self.values[str(key)] = (block, raw)
            resolved[key] = self._walk(value)
        return resolved

    def _walk(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self._walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk(v) for v in value]
        if not isinstance(value, str) or not BLOCK_REFERENCE.search(value):
            return value
        whole = BLOCK_REFERENCE.fullmatch(value.strip())
        if whole:
            return self._env_call(whole, typed=True)
        return BLOCK_REFERENCE.sub(lambda m: self._env_call(m, typed=False), value)

    def _env_call(self, match: re.Match[str], *, typed: bool) -> str:
        block, path, raw = self._lookup(match)
        slug, name = match[1], match[2]
        secret = self._is_secret(slug, name, path)
        prefix = "DBT_ENV_SECRET_DBTFLOW_" if secret else BLOCK_VALUE_PREFIX
        var = prefix + re.sub(r"[^A-Za-z0-9]+", "_", f"{slug}_{name}_{path}").strip("_").upper()
        if isinstance(raw, dict | list):
            raise UserError(
                f"profiles.yml target {self.target!r}: {block}.{path} is a "
                f"{'mapping' if isinstance(raw, dict) else 'list'}; refer to one of its fields"
            )
        if raw is None:
            self.env[var] = ""
            return f"{{{{ env_var('{var}') }}}}"
        self.env[var] = str(raw).lower() if isinstance(raw, bool) else str(raw)
        if typed and isinstance(raw, bool):
            return f"{{{{ env_var('{var}') | as_bool }}}}"
        if typed and isinstance(raw, int | float):
            return f"{{{{ env_var('{var}') | as_number }}}}"
        return f"{{{{ env_var('{var}') }}}}"

    def _lookup(self, match: re.Match[str]) -> tuple[str, str, Any]:

        slug, name, path = match[1], match[2], match[3].lstrip(".")
        block = f"{slug}/{name}"
        document = self._document(slug, name)
        data = document.data
        if not path:
            if len(data) == 1 and "value" in data:
                return block, "value", data["value"]
            raise UserError(f"profiles.yml target {self.target!r} refers to the whole block {block}: name a field")
        missing = object()
        raw = get_from_dict(data, path, default=missing)
        if raw is missing:
            fields = ", ".join(sorted(str(k) for k in data)) or "none"
            raise UserError(
                f"Prefect block {block} has no field {path!r} (its fields: {fields}): is it the wrong block type? "
                f"fix profiles.yml target {self.target!r} or recreate it with {self._setup}"
            )
        return block, path, raw

    def _is_secret(self, slug: str, name: str, path: str) -> bool:
        document = self._documents[(slug, name)]
        schema_fields = (document.block_schema.fields if document.block_schema else {}) or {}
        for field in schema_fields.get("secret_fields") or []:
            if path == field or path.startswith(f"{field}.") or (field.endswith(".*") and path.startswith(field[:-1])):
                return True
        leaf = path.rsplit(".", 1)[-1].lower()
        return any(hint in leaf for hint in SECRET_HINTS)

    @property
    def _setup(self) -> str:
        return f"`dbtflow blocks setup --target {self.target}`"

    def _document(self, slug: str, name: str) -> Any:
        if (slug, name) not in self._documents:
            self._documents[(slug, name)] = self._read(slug, name)
        return self._documents[(slug, name)]

    def _read(self, slug: str, name: str) -> Any:

        block = f"{slug}/{name}"
        try:
            with get_client(sync_client=True) as client:
                try:
                    return client.read_block_document_by_name(name, slug, include_secrets=True)
                except ObjectNotFound:
                    pass
                others = _block_types_named(client, name)
        except httpx.HTTPStatusError as exc:
            code = exc.response.status_code
            if code in (401, 403):
                raise UserError(
                    f"the Prefect API refused to read block {block} (HTTP {code}): give this API key's service "
                    f"account read access to {self.target}'s blocks (see docs/secrets.md)"
                ) from None
            raise UserError(f"the Prefect API failed reading block {block} (HTTP {code}); try again") from None
        except (httpx.HTTPError, OSError) as exc:
            raise UserError(
                f"cannot reach the Prefect API to read block {block} ({type(exc).__name__}): "
                "check PREFECT_API_URL (and PREFECT_API_KEY for Prefect Cloud)"
            ) from None
        expected = {s for s, n in referenced_blocks(self.project, self.target) if n == name} | set(MANAGED)
        others = [other for other in others if other not in expected]
        if others:
            raise UserError(
                f"profiles.yml target {self.target!r} expects a {slug} block named {name!r}, but {name!r} is a "
                f"{' and a '.join(others)} block: wrong block type; create the right one with {self._setup}"
            )
        siblings = [ref for ref in referenced_blocks(self.project, self.target) if ref != (slug, name)]
        if not any(self._exists(*ref) for ref in siblings):
            raise UserError(
                f"target {self.target!r} has no Prefect blocks yet (profiles.yml needs {block}): "
                f"create them with {self._setup}"
            )
        raise UserError(f"Prefect block {block} does not exist (profiles.yml target {self.target!r} needs it): "
                        f"create it with {self._setup}")  # fmt: skip

    def _exists(self, slug: str, name: str) -> bool:

        try:
            with get_client(sync_client=True) as client:
                client.read_block_document_by_name(name, slug, include_secrets=False)
            return True
        except ObjectNotFound:
            return False


def _block_types_named(client: Any, name: str) -> list[str]:
    """The block type slugs that have a block document called `name`."""
    response = client.request(
        "POST",
        "/block_documents/filter",
        json={"block_documents": {"name": {"any_": [name]}}, "include_secrets": False, "limit": 50},
    )
    return sorted({str(doc["block_type"]["slug"]) for doc in response.json() if doc.get("block_type")})


def _check_snowflake_key(resolver: _BlockResolver, target: str) -> None:
    """A key dbt-snowflake would fail on at every node fails here once, before dbt starts."""
    key = resolver.values.get("private_key")
    if not key or not key[1]:
        return
    passphrase = resolver.values.get("private_key_passphrase")
    check_private_key(
        str(key[1]),
        str(passphrase[1]) if passphrase and passphrase[1] else None,
        what=f"the private key in Prefect block {key[0]}",
        fix=f"store a good one with `dbtflow blocks setup --target {target} --rotate`",
    )


def _resolve_variables(profile: dict[str, Any], project: Project, target: str) -> dict[str, Any]:

    try:
        resolved: dict[str, Any] = run_coro_as_sync(resolve_variables(profile))
        return resolved
    except Exception as exc:
        raise UserError(
            f"target {target!r} of {project.profiles_path} refers to a Prefect variable that could not be read "
            f"({type(exc).__name__}); create it with `prefect variable set <name> <value>`"
        ) from None


def _acquire(env: dict[str, str]) -> None:
    with _ENV_LOCK:
        for name, value in env.items():
            os.environ[name] = value
            _ENV_USERS[name] += 1


def _release(env: dict[str, str]) -> None:
    with _ENV_LOCK:
        for name in env:
            _ENV_USERS[name] -= 1
            if _ENV_USERS[name] <= 0:
                del _ENV_USERS[name]
                os.environ.pop(name, None)
