"""Selector methods: whether one manifest node matches `method:value` (`tag:daily`, `path:models/x`, ...).

Contract
- `matcher(method, value)` returns a predicate over `ManifestNode`s that follows dbt 1.x's own
  selector methods (`dbt.graph.selector_methods`): fqn (the default for a bare name, with and
  without the package, `*` globs, versioned models), `unit_test`, `tag`, `path`, `file`
  (the default for `x.sql`), `package`, `resource_type`, `source` (`src`, `src.table`,
  `pkg.src.table`), `exposure`/`metric`/`semantic_model`/`saved_query` (`name` or
  `pkg.name`), `config.<key>[.<key>]`, `test_name`, `test_type`, `group`, `access`.
- A method it does not evaluate raises `UnsupportedMethod` whose message says which and why
  (`state:` needs the comparison state, ...); callers report it, never guess.

Pitfalls
- `path:` is matched against `original_file_path` and its parent folders without touching
  the disk (dbt globs the project folder); `package:this` needs the root project's name and is
  not evaluated.
- `config.` values compare as strings, like dbt: `config.materialized:table`; `severity` is
  case-insensitive and `true` matches a boolean true.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from fnmatch import fnmatchcase
from pathlib import PurePosixPath
from typing import Any

from dbtflow.dbt._artifacts import ManifestNode

UNSUPPORTED_METHODS = {
    "state": "needs the comparison state (--state artifacts) that run used",
    "result": "needs the previous run's results that run used",
    "source_status": "needs the sources.json files that run compared",
    "version": "needs model version metadata parity does not read",
}
_BY_NAME = ("exposure", "metric", "semantic_model", "saved_query")


class UnsupportedMethod(LookupError):
    """A selector method parity does not evaluate; str() says which and why."""


Matcher = Callable[[ManifestNode, str, list[str]], bool]


def matcher(method: str, value: str) -> Callable[[ManifestNode], bool]:
    """A predicate for `method:value`; `UnsupportedMethod` (with the reason) for a method not evaluated here."""
    name, _, rest = method.partition(".")
    if not name:
        name = "path" if "/" in value else "file" if value.lower().endswith((".sql", ".py", ".csv")) else "fqn"
    if name in UNSUPPORTED_METHODS:
        raise UnsupportedMethod(f"`{method}:{value}` {UNSUPPORTED_METHODS[name]}")
    keys = rest.split(".") if rest else []
    if name in _BY_NAME:
        return lambda n: n.resource_type == name and _name_match(n, value)
    matches = _METHODS.get(name)
    if matches is None or (name == "config") != bool(keys) or (name, value) == ("package", "this"):
        raise UnsupportedMethod(f"`{method}:{value}` uses a selector method parity does not evaluate")
    return lambda n: matches(n, value, keys)


_TEST_TYPES = {"data": ("generic", "singular"), "generic": ("generic",), "singular": ("singular",), "unit": ("unit",)}
_METHODS: dict[str, Matcher] = {
    "fqn": lambda n, v, _: _fqn_match(n, v),
    "unit_test": lambda n, v, _: n.resource_type == "unit_test" and _fqn_match(n, v),
    "tag": lambda n, v, _: any(fnmatchcase(t, v) for t in n.tags),
    "path": lambda n, v, _: _path_match(n.original_file_path, v),
    "file": lambda n, v, _: _file_match(n.original_file_path, v),
    "package": lambda n, v, _: fnmatchcase(n.package_name or "", v),
    "resource_type": lambda n, v, _: n.resource_type == v,
    "source": lambda n, v, _: n.resource_type == "source" and _source_match(n, v),
    "config": lambda n, v, keys: _config_match(n.config, keys, v),
    "test_name": lambda n, v, _: bool(n.test_name) and fnmatchcase(n.test_name or "", v),
    "test_type": lambda n, v, _: _test_type(n) in _TEST_TYPES.get(v, (v,)),
    "group": lambda n, v, _: n.config.get("group") == v,
    "access": lambda n, v, _: n.config.get("access") == v,
}


def _fqn_match(node: ManifestNode, selector: str) -> bool:
    """dbt's `is_selected_node`, for the fqn with and without its package."""
    fqn = list(node.fqn)
    if not fqn:
        return False
    return _fqn_prefix(fqn, selector, node.version is not None) or _fqn_prefix(
        fqn[1:], selector, node.version is not None
    )


def _fqn_prefix(fqn: list[str], selector: str, versioned: bool) -> bool:
    if not fqn:
        return False
    if fqn[-1] == selector or fnmatchcase(fqn[-1], selector):
        return True
    if versioned and len(fqn) > 1 and (fqn[-2] == selector or "_".join(fqn[-2:]) == selector.replace(".", "_")):
        return True
    flat = [part for segment in fqn for part in segment.split(".")]
    wanted = selector.split(".")
    if len(flat) < len(wanted):
        return False
    for have, want in zip(flat, wanted, strict=False):
        if want == "*":
            return True
        if not fnmatchcase(have, want):
            return False
    return True


def _path_match(path: str | None, selector: str) -> bool:
    if not path:
        return False
    pattern = selector.strip().removeprefix("./").rstrip("/")
    file = PurePosixPath(path.replace("\\", "/"))
    return any(fnmatchcase(str(p), pattern) for p in (file, *file.parents) if str(p) != ".")


def _file_match(path: str | None, selector: str) -> bool:
    if not path:
        return False
    file = PurePosixPath(path.replace("\\", "/"))
    return fnmatchcase(file.name, selector) or fnmatchcase(file.stem, selector)


def _source_match(node: ManifestNode, selector: str) -> bool:
    parts = selector.split(".")
    have = {
        1: [node.source_name],
        2: [node.source_name, node.name],
        3: [node.package_name, node.source_name, node.name],
    }
    values = have.get(len(parts))
    return values is not None and all(fnmatchcase(v or "", p) for v, p in zip(values, parts, strict=True))


def _name_match(node: ManifestNode, selector: str) -> bool:
    package, _, name = selector.rpartition(".")
    return fnmatchcase(node.name, name) and (not package or fnmatchcase(node.package_name or "", package))


def _config_match(config: Mapping[str, Any], keys: list[str], selector: str) -> bool:
    value: Any = config
    for key in keys:
        if not isinstance(value, Mapping) or key not in value:
            return False
        value = value[key]
    wanted: Any = selector
    if keys == ["severity"]:
        value, wanted = str(value).lower(), selector.lower()
    values = value if isinstance(value, list) else [value]
    return wanted in values or (selector.lower() == "true" and True in values)


def _test_type(node: ManifestNode) -> str | None:
    if node.resource_type == "unit_test":
        return "unit"
    if node.resource_type == "test":
        return "generic" if node.test_name else "singular"
    return None
