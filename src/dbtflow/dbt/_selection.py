"""Selection: which nodes a dbt invocation selected, re-evaluated from its args and its manifest.

Contract
- `evaluate(step)` reads the step's run_results `args` (`which`, `select`/`models`, `exclude`,
  `selector`, `indirect_selection`, `resource_types`, `exclude_resource_types`) and returns a
  `Selection`: the unique_ids that command would execute against that manifest (what dbt's
  `NodeSelector` selects, minus what the command never runs: ephemeral models, sources,
  resource types of other commands), and `text`, the invocation as a person would type it.
- Supported forms: bare names and fqn (`staging`, `pkg.staging.*`), `fqn:`, `tag:`, `path:`,
  `file:`, `package:`, `resource_type:`, `source:`, `exposure:`, `metric:`, `semantic_model:`,
  `saved_query:`, `config.<key>:`, `test_name:`, `test_type:`, `group:`, `access:`,
  `unit_test:`; graph operators `+x`, `N+x`, `x+`, `x+N`, `@x`; intersections (`a,b`), unions,
  `--exclude`, yaml selectors from the manifest (`--selector`, a `default: true` selector),
  and indirect selection of tests (eager, cautious, buildable, empty).
- A form it cannot evaluate (`state:`, `result:`, `source_status:`, `version:`, an unknown
  method or selector) is never guessed: `Selection.nodes` is None and `unsupported` says
  which form and why, so the caller can say so.

Pitfalls
- Selection is evaluated against the step's own manifest: the same `--select` can pick
  different nodes in two projects. Node and test membership follow dbt 1.x semantics, not a
  particular patch release; parity double-checks by requiring that the run which executed a
  node also selects it here before using selection as an explanation.
- Pure: no dbt, no I/O. Linear in nodes + edges per selector atom.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dbtflow.dbt._artifacts import ManifestNode, StepArtifacts
from dbtflow.dbt._selection_methods import UnsupportedMethod, matcher

# dbt's own grammar for one selector atom (dbt.graph.selector_spec.RAW_SELECTOR_PATTERN).
_ATOM = re.compile(
    r"\A(?P<at>@)?(?P<parents>(?P<parents_depth>\d*)\+)?((?P<method>[\w.]+):)?(?P<value>.*?)"
    r"(?P<children>\+(?P<children_depth>\d*))?\Z"
)
# What each command executes (before `--resource-type`), and from which dbt version a type runs.
COMMAND_TYPES = {
    "build": frozenset({"model", "seed", "snapshot", "test", "unit_test", "exposure", "saved_query", "function"}),
    "run": frozenset({"model"}),
    "test": frozenset({"test", "unit_test"}),
    "seed": frozenset({"seed"}),
    "snapshot": frozenset({"snapshot"}),
}
HOOKS = "operation"
SINCE: dict[str, tuple[tuple[int, int], str]] = {
    HOOKS: ((1, 8), "dbt lists project hooks (on-run-start/end) in run_results from dbt 1.8"),
    "unit_test": ((1, 8), "unit tests exist from dbt 1.8"),
    "exposure": ((1, 10), "dbt build runs exposures (as no-ops) from dbt 1.10"),
    "function": ((1, 11), "user-defined functions exist from dbt 1.11"),
}


class Unsupported(Exception):
    """A selection form that cannot be evaluated here; str() says which and why."""


@dataclass(frozen=True)
class Selection:
    text: str
    nodes: frozenset[str] | None
    unsupported: str | None = None


def dbt_version(text: str | None) -> tuple[int, int] | None:
    found = re.match(r"(\d+)\.(\d+)", text or "")
    return (int(found.group(1)), int(found.group(2))) if found else None


def runs_type(resource_type: str, version: str | None) -> bool:
    """Whether dbt `version` lists nodes of this type in run_results (True when unknown)."""
    since, have = SINCE.get(resource_type), dbt_version(version)
    return since is None or have is None or have >= since[0]


def invocation_text(args: Mapping[str, Any]) -> str:
    command = {"generate": "docs generate", "freshness": "source freshness"}.get(args.get("which") or "", "")
    parts = ["dbt", command or str(args.get("which") or "?")]
    for flag, key in (("--select", "select"), ("--select", "models"), ("--exclude", "exclude")):
        values = _tokens(args.get(key))
        if values:
            parts += [flag, *values]
    for flag, key in (("--selector", "selector"), ("--indirect-selection", "indirect_selection")):
        if args.get(key) and not (key == "indirect_selection" and args[key] == "eager"):
            parts += [flag, str(args[key])]
    for flag, key in (("--resource-type", "resource_types"), ("--exclude-resource-type", "exclude_resource_types")):
        for value in _tokens(args.get(key)):
            parts += [flag, value]
    return " ".join(parts)


def evaluate(step: StepArtifacts) -> Selection:
    """The nodes `step`'s command selected for execution, from its args and its manifest.

    Args:
        step: one step's artifacts (its run_results args and its manifest).

    Returns:
        The selection's text and node ids, or why it could not be evaluated (an unsupported method).
    """
    text = invocation_text(step.args)
    try:
        return Selection(text, frozenset(_Selector(step).executed()))
    except Unsupported as exc:
        return Selection(text, None, str(exc))


class _Selector:
    def __init__(self, step: StepArtifacts) -> None:
        self.step = step
        self.nodes = step.nodes
        self.indirect = str(step.args.get("indirect_selection") or "eager")
        self._children: dict[str, list[str]] | None = None

    # --- the command ------------------------------------------------------------------
    def executed(self) -> set[str]:
        args = self.step.args
        command = str(args.get("which") or "")
        if command == "retry":
            raise Unsupported("`dbt retry` re-runs an earlier step's failures, which parity cannot see")
        if command not in COMMAND_TYPES:
            raise Unsupported(f"`dbt {command}` is not a command that builds nodes")
        selector, select = args.get("selector"), _tokens(args.get("select") or args.get("models"))
        if selector:
            direct, indirect = self._selector(str(selector))
        elif select:
            direct, indirect = self._union([self._token(t) for t in select])
        else:
            default = [name for name, s in self.step.selectors.items() if isinstance(s, Mapping) and s.get("default")]
            direct, indirect = self._selector(default[0]) if default else (set(self.nodes), set())
        exclude = [] if selector else _tokens(args.get("exclude"))
        selected, _ = self._combine([(direct, indirect), self._union([self._token(t) for t in exclude])], "difference")
        types = set(COMMAND_TYPES[command])
        chosen = {t for t in _tokens(args.get("resource_types")) if t not in ("all", "default")}
        if chosen:
            types &= chosen
        types -= set(_tokens(args.get("exclude_resource_types")))
        version = self.step.manifest_dbt_version or self.step.dbt_version
        types = {t for t in types if runs_type(t, version)}
        chosen_nodes = {u for u in selected if self._runs(self.nodes.get(u), types)}
        if runs_type(HOOKS, version):
            chosen_nodes |= {u for u, n in self.nodes.items() if n.resource_type == HOOKS}
        return chosen_nodes

    @staticmethod
    def _runs(node: ManifestNode | None, types: set[str]) -> bool:
        return node is not None and node.resource_type in types and node.materialized != "ephemeral"

    # --- specs: unions, intersections, yaml selectors -----------------------------------
    def _token(self, token: str) -> tuple[set[str], set[str]]:
        """One CLI token: comma-separated atoms are intersected."""
        parts = [self._atom(a) for a in token.split(",") if a]
        return self._combine(parts, "intersection")

    def _union(self, parts: list[tuple[set[str], set[str]]]) -> tuple[set[str], set[str]]:
        return self._combine(parts, "union")

    def _combine(self, parts: list[tuple[set[str], set[str]]], how: str) -> tuple[set[str], set[str]]:
        if not parts:
            return set(), set()
        directs = [d for d, _ in parts]
        wides = [d | i for d, i in parts]
        if how == "union":
            direct, wide = set().union(*directs), set().union(*wides)
        elif how == "intersection":
            direct, wide = set.intersection(*directs), set.intersection(*wides)
        else:  # difference
            direct, wide = directs[0] - set().union(*directs[1:]), wides[0] - set().union(*wides[1:])
        return self._incorporate(direct, wide), wide

    def _selector(self, name: str, seen: tuple[str, ...] = ()) -> tuple[set[str], set[str]]:
        entry = self.step.selectors.get(name)
        if not isinstance(entry, Mapping) or name in seen:
            raise Unsupported(f"selector `{name}` is not in that run's manifest (selectors.yml)")
        return self._definition(entry.get("definition"), (*seen, name))

    def _definition(self, definition: Any, seen: tuple[str, ...]) -> tuple[set[str], set[str]]:
        if isinstance(definition, str):
            return self._union([self._token(t) for t in definition.split()])
        if not isinstance(definition, Mapping):
            raise Unsupported(f"selector definition {definition!r} is not one parity understands")
        for how in ("union", "intersection"):
            if how in definition:
                items = list(definition[how] or [])
                excludes = [i["exclude"] for i in items if _is_exclude(i)]
                combined = self._combine([self._definition(i, seen) for i in items if not _is_exclude(i)], how)
                return self._minus(combined, excludes, seen)
        if len(definition) == 1 and "method" not in definition:
            ((method, value),) = definition.items()
            definition = {"method": method, "value": value}
        if definition.get("method") == "selector":
            return self._selector(str(definition.get("value")), seen)
        criteria = self._criteria(definition)
        excludes = [definition["exclude"]] if "exclude" in definition else []
        return self._minus(criteria, excludes, seen)

    def _minus(
        self, base: tuple[set[str], set[str]], excludes: list[Any], seen: tuple[str, ...]
    ) -> tuple[set[str], set[str]]:
        if not excludes:
            return base
        gone = [self._definition({"union": list(e) if isinstance(e, list) else [e]}, seen) for e in excludes]
        return self._combine([base, *gone], "difference")

    def _criteria(self, d: Mapping[str, Any]) -> tuple[set[str], set[str]]:
        method = str(d.get("method") or "")
        value = str(d.get("value") if d.get("value") is not None else "")
        parents = int(d.get("parents_depth") or 0) if d.get("parents") or d.get("parents_depth") else None
        children = int(d.get("children_depth") or 0) if d.get("children") or d.get("children_depth") else None
        indirect = str(d.get("indirect_selection") or self.indirect)
        return self._select(method, value, parents, children, bool(d.get("childrens_parents")), indirect)

    def _atom(self, atom: str) -> tuple[set[str], set[str]]:
        m = _ATOM.match(atom)
        if not m or not m.group("value"):
            raise Unsupported(f"`{atom}` is not dbt selector syntax")
        parents = int(m.group("parents_depth") or 0) if m.group("parents") else None
        children = int(m.group("children_depth") or 0) if m.group("children") else None
        method, value = m.group("method") or "", m.group("value")
        return self._select(method, value, parents, children, bool(m.group("at")), self.indirect)

    # --- one criterion: method match, graph operators, indirect tests --------------------
    def _select(
        self, method: str, value: str, parents: int | None, children: int | None, at: bool, indirect: str
    ) -> tuple[set[str], set[str]]:
        """`parents`/`children`: None = no operator, 0 = unlimited depth, N = up to N levels."""
        found = self._match(method, value)
        selected = set(found)
        if parents is not None:
            selected |= self._walk(found, self._parents, parents)
        if children is not None or at:
            below = self._walk(found, self._kids, 0 if at else children or 0)
            selected |= below
            if at:
                selected |= self._walk(below | found, self._parents, 0)
        return self._expand(selected, indirect)

    def _expand(self, selected: set[str], indirect: str) -> tuple[set[str], set[str]]:
        """Tests attached to selected nodes (dbt's `expand_selection`)."""
        direct, maybe = set(selected), set[str]()
        if indirect == "empty":
            return direct, maybe
        around = selected | self._walk(selected, self._parents, 0) if indirect == "buildable" else selected
        for uid in {c for s in selected for c in self._kids(s)}:
            node = self.nodes.get(uid)
            if node is None or node.resource_type not in ("test", "unit_test"):
                continue
            parents = set(self._parents(uid))
            if indirect == "eager" or parents <= selected or (indirect == "buildable" and parents <= around):
                direct.add(uid)
            else:
                maybe.add(uid)
        return direct, maybe

    def _incorporate(self, direct: set[str], indirect: set[str]) -> set[str]:
        """Cautious/buildable: indirectly selected tests whose parents all made it in."""
        if self.indirect not in ("cautious", "buildable") or indirect <= direct:
            return direct
        around = direct | self._walk(direct, self._parents, 0) if self.indirect == "buildable" else direct
        return direct | {u for u in indirect - direct if set(self._parents(u)) <= around}

    def _match(self, method: str, value: str) -> set[str]:
        try:
            matches = matcher(method, value)
        except UnsupportedMethod as exc:
            raise Unsupported(str(exc.args[0])) from None
        return {n.unique_id for n in self.nodes.values() if matches(n)}

    # --- the graph ----------------------------------------------------------------------
    def _parents(self, uid: str) -> Iterable[str]:
        listed = self.step.parent_map.get(uid)
        if listed is not None:
            return listed
        node = self.nodes.get(uid)
        return node.depends_on if node else ()

    def _kids(self, uid: str) -> Iterable[str]:
        if self._children is None:
            self._children = {}
            for child in self.nodes:
                for parent in self._parents(child):
                    self._children.setdefault(parent, []).append(child)
        return self._children.get(uid, ())

    @staticmethod
    def _walk(start: Iterable[str], step: Any, depth: int) -> set[str]:
        """Everything reachable from `start` through `step` (excluding start), up to `depth` levels (0 = all)."""
        seen: set[str] = set()
        queue = deque((uid, 0) for uid in start)
        while queue:
            uid, level = queue.popleft()
            if depth and level >= depth:
                continue
            for nxt in step(uid):
                if nxt not in seen:
                    seen.add(nxt)
                    queue.append((nxt, level + 1))
        return seen


def _is_exclude(item: Any) -> bool:
    return isinstance(item, Mapping) and set(item) == {"exclude"}


def _tokens(value: Any) -> list[str]:
    if not value:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [token for item in items for token in str(item).split()]
