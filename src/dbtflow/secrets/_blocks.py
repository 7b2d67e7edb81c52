"""Blocks: create, update and rotate the Prefect blocks that hold a Snowflake target's connection.

Contract
- `setup_target(project, target, settings, secrets, auth=..., rotate=...)` writes, for one
  target, the blocks its profiles.yml refers to (names read from the references, so any tenant
  works): a prefect-snowflake `SnowflakeCredentials` (account, user, role and the secrets:
  key-pair by default, with an optional passphrase, or a password), a `SnowflakeConnector`
  (warehouse, database, schema; it refers to the credentials block), a prefect-dbt
  `SnowflakeTargetConfigs` (endpoint overrides host/port/protocol in `extras`, for PrivateLink,
  a proxy or a local fake; empty means Snowflake's default) and a `DbtCliProfile` for teams
  using prefect-dbt's block-based operations. Each refers to the one below by reference, so a
  secret is stored once, masked in the API and UI, and a rotation reaches all of them.
- Idempotent: a block whose fields already match is not written. Values not given are kept
  from the existing blocks. `rotate=True` replaces only the secret fields of the credentials
  block. It returns one `Change` per block naming the fields it changed, never a value.
- Secrets come from `read_secrets` (environment variables, or a hidden prompt), never argv.
  A private key is checked before anything is written (`check_private_key`).
- Every user mistake is a one-line `UserError` (dbtflow.errors) that names what to set.

Pitfalls
- prefect-dbt's `DbtCliProfile.target_configs` is a union of block types: saved inline it
  would store the credentials unmasked, and saved by reference Prefect cannot tell which type
  to load. So the target configs are saved by reference with `block_type_slug` in their data.
- A prefect-snowflake `private_key` is `SecretBytes`; the API returns it as text.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import httpx
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import BlockDocumentUpdate
from prefect.exceptions import ObjectNotFound
from prefect_snowflake import SnowflakeConnector, SnowflakeCredentials
from pydantic import SecretBytes, SecretStr
from pydantic_core import to_jsonable_python

from dbtflow.dbt._project import Project
from dbtflow.errors import UserError
from dbtflow.secrets._keys import check_private_key
from dbtflow.secrets._profiles import CONNECTOR, CREDENTIALS, MANAGED, PROFILE, TARGET_CONFIGS, referenced_blocks
from dbtflow.settings import SNOWFLAKE_PASSWORD as ENV_PASSWORD
from dbtflow.settings import SNOWFLAKE_PRIVATE_KEY as ENV_PRIVATE_KEY
from dbtflow.settings import SNOWFLAKE_PRIVATE_KEY_FILE as ENV_PRIVATE_KEY_FILE
from dbtflow.settings import SNOWFLAKE_PRIVATE_KEY_PASSPHRASE as ENV_PASSPHRASE
from dbtflow.settings import snowflake_setting_env

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # prefect_dbt.cli's deprecation notice
    from prefect_dbt.cli import DbtCliProfile
    from prefect_dbt.cli.configs import SnowflakeTargetConfigs

AuthKind = Literal["keypair", "password"]
SECRET_FIELDS = ("private_key", "private_key_passphrase", "password")
REQUIRED = ("account", "user", "warehouse", "database", "schema")


@dataclass(frozen=True)
class Settings:
    """Non-secret connection settings; None means "not given" (keep the stored value)."""

    account: str | None = None
    user: str | None = None
    role: str | None = None
    warehouse: str | None = None
    database: str | None = None
    schema: str | None = None
    host: str | None = None
    port: int | None = None
    protocol: str | None = None


@dataclass(frozen=True, repr=False)
class Secrets:
    private_key: str | None = None
    private_key_passphrase: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        return "Secrets(<hidden>)"

    @property
    def kind(self) -> AuthKind:
        return "password" if self.password else "keypair"


@dataclass(frozen=True)
class Change:
    action: Literal["created", "updated", "rotated", "unchanged"]
    block: str
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.action} {self.block}" + (f" ({', '.join(self.fields)})" if self.fields else "")


@dataclass(frozen=True)
class BlockNames:
    credentials: str
    connector: str
    target_configs: str
    profile: str
    unmanaged: tuple[str, ...] = ()


def block_names(project: Project, target: str) -> BlockNames:
    """The block names the target's profile refers to; unreferenced managed blocks share the credentials' name."""
    if target not in project.targets:
        raise UserError(f"unknown target {target!r}: {project.profiles_path} has {', '.join(project.targets)}")
    by_slug: dict[str, list[str]] = {}
    for slug, name in referenced_blocks(project, target):
        by_slug.setdefault(slug, []).append(name)
    for slug, names in by_slug.items():
        if slug in MANAGED and len(names) > 1:
            raise UserError(f"target {target!r} refers to several {slug} blocks ({', '.join(names)}): use one")
    if CREDENTIALS not in by_slug:
        raise UserError(
            f"target {target!r} of {project.profiles_path} refers to no {CREDENTIALS} block: add "
            f"`{{{{ prefect.blocks.{CREDENTIALS}.<name>.<field> }}}}` references first (see docs/secrets.md)"
        )
    name = by_slug[CREDENTIALS][0]
    unmanaged = tuple(f"{slug}/{n}" for slug, names in by_slug.items() if slug not in MANAGED for n in names)
    connector, target_configs, profile = (by_slug.get(slug, [name])[0] for slug in (CONNECTOR, TARGET_CONFIGS, PROFILE))
    return BlockNames(name, connector, target_configs, profile, unmanaged)


def read_secrets(
    auth: AuthKind,
    environ: Mapping[str, str],
    *,
    key_file: Path | None = None,
    prompt: Callable[[str], str] | None = None,
) -> Secrets | None:
    """The secrets for `auth` from environment variables, else a hidden prompt; None when none were offered."""
    if auth == "password":
        password = environ.get(ENV_PASSWORD) or (prompt("Snowflake password (hidden)") if prompt else "")
        return Secrets(password=password) if password else None
    key = environ.get(ENV_PRIVATE_KEY) or ""
    path = key_file or (Path(environ[ENV_PRIVATE_KEY_FILE]) if environ.get(ENV_PRIVATE_KEY_FILE) else None)
    if key and path:
        raise UserError(f"both {ENV_PRIVATE_KEY} and a private key file are set: keep one")
    if path:
        try:
            key = path.expanduser().read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read the private key file {path} ({type(exc).__name__}): fix the path") from None
    if not key.strip():
        return None
    if "\n" not in key.strip() and "\\n" in key:  # a PEM stored with escaped newlines (CI secret stores do this)
        key = key.replace("\\n", "\n")
    passphrase = environ.get(ENV_PASSPHRASE) or None
    if passphrase is None and prompt and "ENCRYPTED" in key:
        passphrase = prompt("Passphrase of the private key (hidden)") or None
    return Secrets(private_key=key.strip() + "\n", private_key_passphrase=passphrase)


def setup_target(
    project: Project,
    target: str,
    settings: Settings,
    secrets: Secrets | None,
    *,
    auth: AuthKind | None = None,
    rotate: bool = False,
) -> list[Change]:
    """Create or update the target's blocks (or, with `rotate`, only the credentials' secrets)."""
    names = block_names(project, target)
    setup = f"`dbtflow blocks setup --target {target}`"
    stored = _Stored.read(names)
    if rotate and stored.credentials is None:
        raise UserError(f"nothing to rotate: {CREDENTIALS}/{names.credentials} does not exist; create it with {setup}")
    kind: AuthKind = auth or (secrets.kind if secrets else stored.kind or "keypair")
    if secrets is not None and secrets.kind != kind:
        secrets = None  # e.g. a password in the environment while setting up key-pair auth
    if secrets is None and (rotate or stored.credentials is None or stored.kind != kind):
        needed = ENV_PASSWORD if kind == "password" else f"{ENV_PRIVATE_KEY} (or {ENV_PRIVATE_KEY_FILE})"
        doing = "rotate" if rotate else ("create" if stored.credentials is None else f"switch to {kind} auth for")
        raise UserError(f"set {needed} in the environment to {doing} {CREDENTIALS}/{names.credentials}")
    if secrets is not None and secrets.private_key:
        check_private_key(
            secrets.private_key,
            secrets.private_key_passphrase,
            what=f"the private key in {ENV_PRIVATE_KEY}",
            fix="export it with `openssl pkcs8 -topk8 -in key.pem` and try again",
        )
    given = {} if rotate else {f.name: getattr(settings, f.name) for f in fields(Settings)}
    merged = Settings(**{f.name: _pick(given.get(f.name), stored.settings.get(f.name)) for f in fields(Settings)})
    missing = [name for name in (REQUIRED[:2] if rotate else REQUIRED) if not getattr(merged, name)]
    if missing:
        options = ", ".join(f"--{name} (or {snowflake_setting_env(name)})" for name in missing)
        raise UserError(f"missing settings for target {target!r}: {options}")
    kept = dict(stored.credentials or {}) if rotate else {}  # a rotation leaves every other field as it is
    return _write(project, target, names, merged, secrets or stored.secrets, kind, kept)


def _pick(given: Any, stored: Any) -> Any:
    return given if given is not None else stored


def _write(
    project: Project,
    target: str,
    names: BlockNames,
    s: Settings,
    secrets: Secrets,
    kind: AuthKind,
    kept: dict[str, Any],
) -> list[Change]:

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # prefect_dbt.cli's deprecation notice

    rotate = bool(kept)
    fields_ = {k: v for k, v in kept.items() if k in SnowflakeCredentials.model_fields}
    fields_ |= {
        "account": s.account,
        "user": s.user,
        "role": s.role,
        "authenticator": "snowflake_jwt" if kind == "keypair" else "snowflake",
        "private_key": secrets.private_key if kind == "keypair" else None,
        "private_key_path": None,  # the key lives in the block, not in a file on some worker
        "private_key_passphrase": secrets.private_key_passphrase if kind == "keypair" else None,
        "password": secrets.password if kind == "password" else None,
    }
    credentials = SnowflakeCredentials(**fields_)
    changes = [_save(credentials, names.credentials, rotate=rotate)]
    if rotate:
        return changes
    connector = SnowflakeConnector(credentials=credentials, warehouse=s.warehouse, database=s.database, schema=s.schema)
    changes.append(_save(connector, names.connector))
    extras = {"host": s.host or "", "port": s.port or 0, "protocol": s.protocol or ""}
    threads = _threads(project, target)
    target_configs = SnowflakeTargetConfigs(connector=connector, extras=extras, threads=threads)
    changes.append(_save(target_configs, names.target_configs, tag_type=True))
    profile = DbtCliProfile(name=project.profile_name, target=target, target_configs=target_configs)
    changes.append(_save(profile, names.profile))
    return changes


def _threads(project: Project, target: str) -> int:

    threads = project.output(target).get("threads")
    return threads if isinstance(threads, int) and threads > 0 else 4


def _save(block: Any, name: str, *, rotate: bool = False, tag_type: bool = False) -> Change:
    """Write `block` under `name` unless the stored one already matches; say which fields changed."""

    slug = block.get_block_type_slug()
    document = _read_document(slug, name)
    own = _own_data(block)
    refs = {k: v._block_document_id for k, v in own.items() if isinstance(v, Block)}
    if document is None:
        changed = tuple(k for k, v in own.items() if v not in (None, "", {}) and k not in refs)
    else:
        stored_refs = {k: v["block_document"]["id"] for k, v in (document.block_document_references or {}).items()}
        changed = tuple(
            k
            for k, v in own.items()
            if (str(stored_refs.get(k)) != str(refs[k]) if k in refs else document.data.get(k) != v)
        )
        if tag_type and document.data.get("block_type_slug") != slug:
            changed += ("block_type_slug",)
        if not changed:
            block._block_document_id = document.id
            block._block_document_name = name
            return Change("unchanged", f"{slug}/{name}")
    _api(lambda: block.save(name, overwrite=True), f"save {slug}/{name}")
    if tag_type:
        data = {**own, **{k: {"$ref": {"block_document_id": str(i)}} for k, i in refs.items()}, "block_type_slug": slug}
        _api(lambda: _update_data(block._block_document_id, data), f"save {slug}/{name}")
    action: Literal["created", "updated", "rotated"] = "created" if document is None else "updated"
    if rotate and document is not None:
        action = "rotated"
    return Change(action, f"{slug}/{name}", changed)


def _own_data(block: Any) -> dict[str, Any]:
    """The block's fields as the API stores them, secrets revealed (in memory only, to compare)."""

    data: dict[str, Any] = {}
    for attr, info in type(block).model_fields.items():
        value = getattr(block, attr)
        if isinstance(value, SecretStr | SecretBytes):
            secret = value.get_secret_value()
            value = secret.decode() if isinstance(secret, bytes) else secret
        elif not isinstance(value, Block):
            value = to_jsonable_python(value)
        data[info.serialization_alias or info.alias or attr] = value
    return data


def _update_data(document_id: Any, data: dict[str, Any]) -> None:

    with get_client(sync_client=True) as client:
        client.update_block_document(document_id, BlockDocumentUpdate(data=data, merge_existing_data=False))


def _read_document(slug: str, name: str) -> Any:

    def read() -> Any:
        with get_client(sync_client=True) as client:
            try:
                return client.read_block_document_by_name(name, slug, include_secrets=True)
            except ObjectNotFound:
                return None

    return _api(read, f"read {slug}/{name}")


def _api(call: Callable[[], Any], doing: str) -> Any:

    try:
        return call()
    except httpx.HTTPStatusError as exc:
        code = exc.response.status_code
        hint = "use an API key allowed to manage blocks (see docs/secrets.md)" if code in (401, 403) else "try again"
        raise UserError(f"the Prefect API refused to {doing} (HTTP {code}): {hint}") from None
    except (httpx.HTTPError, OSError) as exc:
        raise UserError(
            f"cannot reach the Prefect API to {doing} ({type(exc).__name__}): "
            "check PREFECT_API_URL (and PREFECT_API_KEY for Prefect Cloud)"
        ) from None


@dataclass(frozen=True)
class _Stored:
    """What the target's blocks hold now (all None when they do not exist yet)."""

    credentials: dict[str, Any] | None
    settings: dict[str, Any]
    secrets: Secrets

    @property
    def kind(self) -> AuthKind | None:
        if self.credentials is None:
            return None
        return "password" if self.credentials.get("password") else "keypair"

    @classmethod
    def read(cls, names: BlockNames) -> _Stored:
        def data(slug: str, name: str) -> dict[str, Any] | None:
            document = _read_document(slug, name)
            return dict(document.data) if document is not None else None

        creds, conn = data(CREDENTIALS, names.credentials), data(CONNECTOR, names.connector)
        configs = data(TARGET_CONFIGS, names.target_configs)
        extras = (configs or {}).get("extras") or {}
        settings = {k: (creds or {}).get(k) for k in ("account", "user", "role")}
        settings |= {k: (conn or {}).get(k) for k in ("warehouse", "database", "schema")}
        settings |= {k: extras.get(k) or None for k in ("host", "port", "protocol")}
        secrets = Secrets(**{k: (creds or {}).get(k) or None for k in SECRET_FIELDS})
        return cls(creds, settings, secrets)
