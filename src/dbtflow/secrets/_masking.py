"""Masking: vars whose names look secret never reach run.json, summary.md, dbt.log or the console.

Contract
- A var is secret when its key (at any depth) looks like one: `password`, `passwd`, `pwd`,
  `passphrase`, `secret`, `token`, `api_key`/`apikey`, `private_key`, `credential(s)`, in any
  case and inside a longer name (`db_password`, `SNOWFLAKE_TOKEN`). Every scalar under such a
  key is a secret value.
- `masked_vars(parameters)` names the secret vars whose value is the mask itself (a masked copy
  passed back as input).
- `masked_argv(argv)` and `masked_parameters(parameters)` return copies with those values as
  `*****` (dbt's own mask), for what dbtflow writes and prints: run.json, summary.md, the step
  lines of logs and messages. dbt itself still gets the real values.
- `secret_env(argv_lists)` is a context manager that puts each secret value in the environment
  as `DBT_ENV_SECRET_DBTFLOW_VARS_<n>` while dbt runs: dbt scrubs the values of `DBT_ENV_SECRET_*`
  from dbt.log and its messages, as it does for secrets of the profile. `scrubber()` gives the
  same scrubbing (dbt's) for the lines dbtflow forwards from dbt's events (console, Prefect logs),
  and `scrub_files(folder)` to the artifacts a step keeps in the run's folder (dbt writes the
  vars into run_results.json's `args`, and a model using one into its compiled SQL), so what
  the run folder and the run store hold is masked too.

Pitfalls
- Values shorter than MIN_SECRET characters are not masked (masking `1` everywhere would wreck
  every log); a secret that short is no secret.
- Masking is by name: a secret under an innocent key (`vars: {x: hunter2}`) is not found. The
  safe way is a Prefect Secret block or an environment variable, never vars (docs/secrets.md).
- The flow run's parameters stored by Prefect hold the real values from the run's creation to
  its start, when the flow replaces them with `masked_parameters` (`dbtflow.run._flow`); dbt's
  own files in its target folder keep what was passed. A flow retry in the same process still
  gets the real vars (Prefect calls the flow again with the parameters it holds in memory; the
  flow passes `--vars` to `dbt retry`, which dbt prefers to the masked args of the kept
  run_results). A run started from the stored, masked parameters (a retry on a new worker,
  "Run again" in the UI) gets `*****`: `masked_vars` finds them and the flow refuses in one
  line instead of running dbt with the mask. Hence: Secret blocks (`env_vars` DBT_ENV_SECRET_*).
- Pure but for `secret_env`, which changes `os.environ` for the duration of the run (dbt reads
  its secrets from there); it restores what was there before.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from dbtflow.secrets._env_names import environment

MASK = "*****"
MIN_SECRET = 4
SECRET_KEY = re.compile(r"passw(?:or)?d|pwd|passphrase|secret|token|api_?key|private_?key|credential", re.IGNORECASE)
ENV_PREFIX = "DBT_ENV_SECRET_DBTFLOW_VARS_"  # profiles.py uses DBT_ENV_SECRET_DBTFLOW_<block field>
_MAPPING_FLAGS = ("--vars", "--args")


def masked_argv(argv: list[str]) -> list[str]:
    """argv with the secret values of its --vars/--args JSON replaced by the mask."""
    masked = list(argv)
    for i, token in enumerate(masked[:-1]):
        if token in _MAPPING_FLAGS:
            masked[i + 1] = _masked_json(masked[i + 1])
    return masked


def masked_parameters(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The run's parameters with secret vars masked (vars as a mapping or as JSON/YAML text)."""
    masked = dict(parameters)
    value = masked.get("vars")
    if isinstance(value, Mapping):
        masked["vars"] = _mask_tree(value, False)
    elif isinstance(value, str):
        masked["vars"] = _masked_json(value)  # JSON of the masked mapping when it holds a secret
    return masked


def masked_vars(parameters: Mapping[str, Any]) -> list[str]:
    """The secret-looking vars whose value is the mask itself: a masked copy passed back as a run's input."""
    value = parameters.get("vars")
    tree = _load(value) if isinstance(value, str) else value
    found: list[str] = []
    _masks(tree, "", False, found)
    return found


def secret_values(mapping_texts: Iterable[str]) -> list[str]:
    """The secret values in JSON (or YAML) mapping texts, longest first."""
    found: set[str] = set()
    for text in mapping_texts:
        _collect(_load(text), False, found)
    return sorted(found, key=lambda v: (-len(v), v))


@contextlib.contextmanager
def secret_env(argv_lists: Iterable[list[str]]) -> Iterator[list[str]]:
    """While the block runs, dbt scrubs the secret vars of these argvs from dbt.log and its messages."""
    texts = [argv[i + 1] for argv in argv_lists for i, t in enumerate(argv[:-1]) if t in _MAPPING_FLAGS]
    values = secret_values(texts)
    names = [f"{ENV_PREFIX}{n}" for n in range(len(values))]
    with environment(dict(zip(names, values, strict=True))):
        yield values


def scrubber() -> Callable[[str], str]:
    """Masks every `DBT_ENV_SECRET_*` value set now in a dbt message, as dbt masks its log file (read once)."""
    values = sorted(_env_secrets(), key=len, reverse=True)

    def scrub_now(text: str) -> str:
        for value in values:
            text = text.replace(value, MASK)
        return text

    return scrub_now


def scrub_files(folder: Path) -> None:
    """Mask every `DBT_ENV_SECRET_*` value (raw or JSON-escaped) in the text files under `folder`, in place."""
    forms = sorted({form for v in _env_secrets() for form in (v, json.dumps(v)[1:-1])}, key=len, reverse=True)
    if not forms:
        return
    for path in (p for p in folder.rglob("*") if p.is_file()):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # not text: dbt writes none with vars in it
        scrubbed = text
        for form in forms:
            scrubbed = scrubbed.replace(form, MASK)
        if scrubbed != text:
            path.write_text(scrubbed, encoding="utf-8")


def _env_secrets() -> list[str]:
    """The values dbt scrubs: every `DBT_ENV_SECRET_*` variable's, unless too short to be a secret."""
    return [v for k, v in os.environ.items() if k.startswith("DBT_ENV_SECRET") and len(v) >= MIN_SECRET]


def _load(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return None


def _masked_json(text: str) -> str:
    value = _load(text)
    if not isinstance(value, Mapping) or not secret_values([text]):
        return text
    return json.dumps(_mask_tree(value, False), sort_keys=True)


def _mask_tree(value: Any, secret: bool) -> Any:
    if isinstance(value, Mapping):
        return {k: _mask_tree(v, secret or bool(SECRET_KEY.search(str(k)))) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_tree(v, secret) for v in value]
    return MASK if secret and value is not None and len(str(value)) >= MIN_SECRET else value


def _masks(value: Any, path: str, secret: bool, found: list[str]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _masks(v, f"{path}.{k}" if path else str(k), secret or bool(SECRET_KEY.search(str(k))), found)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _masks(v, f"{path}[{i}]", secret, found)
    elif secret and value == MASK:
        found.append(path)


def _collect(value: Any, secret: bool, found: set[str]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _collect(v, secret or bool(SECRET_KEY.search(str(k))), found)
    elif isinstance(value, list | tuple):
        for v in value:
            _collect(v, secret, found)
    elif secret and value is not None and len(str(value)) >= MIN_SECRET:
        found.add(str(value))
