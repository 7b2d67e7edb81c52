"""dbt's commands and options as dbtflow accepts them: the one table, and the one BUILDING set.

Contract
- `COMMANDS` maps each allowed subcommand (`build`, `source freshness`, ...) to the options a
  step may give it; `OPTIONS` says how each option's value is checked (its kind), `ALIASES` maps
  dbt's short and legacy spellings onto them, `CHOICES` holds the allowed values of the choice
  options, and `MANAGED` the options dbtflow owns (refused in a step, with why).
- `SELECTOR_METHODS` are dbt's selector methods (`tag:`, `path:`, ...).
- `BUILDING`: the subcommands whose run_results describe what was built (`Step.builds`, parity).
- `tests/dbt_core/test_commands.py` pins all of it against dbt's own click CLI and `MethodName`: it
  fails when dbt renames or drops an option, a choice or a method we accept.

Pitfalls
- A subset of dbt's options on purpose (the ones a job needs): adding one here makes it
  reachable from a flow parameter, so give it a kind that checks its value.
- Pure data: no dbt import (the CLI validates requests before dbt loads).
"""

from __future__ import annotations

# Option kinds: how the value(s) after an option are checked.
FLAG, SELECTION, NAME, INT, MAPPING, PATH, CHOICE, TEXT = (
    "flag",
    "selection",
    "name",
    "int",
    "mapping",
    "path",
    "choice",
    "text",
)

RESOURCE_TYPES = [
    "analysis",
    "exposure",
    "metric",
    "model",
    "saved_query",
    "seed",
    "semantic_model",
    "snapshot",
    "source",
    "test",
    "unit_test",
    "function",
    "all",
    "default",
]
CHOICES: dict[str, tuple[str, ...]] = {
    "--resource-type": tuple(RESOURCE_TYPES),
    "--exclude-resource-type": tuple(t for t in RESOURCE_TYPES if t != "all"),  # dbt: nothing left to build
    "--indirect-selection": ("eager", "cautious", "buildable", "empty"),
    "--output": ("json", "name", "path", "selector"),
}

# Long option -> kind. Short aliases map onto these.
OPTIONS: dict[str, str] = {
    "--select": SELECTION,
    "--exclude": SELECTION,
    "--selector": NAME,
    "--full-refresh": FLAG,
    "--fail-fast": FLAG,
    "--threads": INT,
    "--vars": MAPPING,
    "--state": PATH,
    "--defer": FLAG,
    "--favor-state": FLAG,
    "--resource-type": CHOICE,
    "--exclude-resource-type": CHOICE,
    "--indirect-selection": CHOICE,
    "--store-failures": FLAG,
    "--empty": FLAG,
    "--warn-error": FLAG,
    "--output": CHOICE,
    "--output-keys": NAME,
    "--args": MAPPING,
    "--inline": TEXT,
    "--limit": INT,
    "--no-compile": FLAG,
    "--static": FLAG,
    "--empty-catalog": FLAG,
}
ALIASES = {
    "-s": "--select",
    "-m": "--select",
    "--models": "--select",
    "--model": "--select",
    "-f": "--full-refresh",
    "-x": "--fail-fast",
}
MANAGED = {
    "--target": "set `target` as a run parameter, not inside a step",
    "-t": "set `target` as a run parameter, not inside a step",
    "--profiles-dir": "dbtflow resolves profiles itself; pass --profiles-dir to `dbtflow run`",
    "--project-dir": "dbtflow binds the project; pass --project-dir to `dbtflow run`",
    "--target-path": "dbtflow keeps each run's artifacts; remove --target-path",
    "--log-path": "dbtflow keeps each run's dbt.log; remove --log-path",
    "--profile": "the profile comes from dbt_project.yml; remove --profile",
}

_SEL = ("--select", "--exclude", "--selector")
_DEFER = ("--state", "--defer", "--favor-state")
_COMMON = ("--threads", "--vars", "--warn-error")
# Subcommand -> the options it accepts (a subset of dbt's own, the ones a job needs).
COMMANDS: dict[str, frozenset[str]] = {
    name: frozenset(opts)
    for name, opts in {
        "build": (
            *_SEL,
            *_DEFER,
            *_COMMON,
            "--full-refresh",
            "--fail-fast",
            "--resource-type",
            "--exclude-resource-type",
            "--indirect-selection",
            "--store-failures",
            "--empty",
        ),
        "run": (*_SEL, *_DEFER, *_COMMON, "--full-refresh", "--fail-fast", "--empty"),
        "test": (
            *_SEL,
            *_DEFER,
            *_COMMON,
            "--fail-fast",
            "--resource-type",
            "--exclude-resource-type",
            "--indirect-selection",
            "--store-failures",
        ),
        "seed": (*_SEL, *_DEFER, *_COMMON, "--full-refresh", "--fail-fast"),
        "snapshot": (*_SEL, *_DEFER, *_COMMON, "--fail-fast", "--empty"),
        "source freshness": (*_SEL, *_COMMON),
        "docs generate": (*_SEL, *_COMMON, "--no-compile", "--static", "--empty-catalog"),
        "compile": (*_SEL, *_DEFER, *_COMMON, "--full-refresh", "--inline", "--empty"),
        "ls": (*_SEL, "--state", "--vars", "--resource-type", "--exclude-resource-type", "--output", "--output-keys"),
        "parse": ("--threads", "--vars"),
        "retry": (*_COMMON, "--full-refresh", "--fail-fast"),
        "deps": ("--vars", "--warn-error"),  # dbt deps has no --target-path and no --threads
        "run-operation": ("--args", "--vars", "--threads"),
        "show": (*_SEL[:2], *_DEFER, "--threads", "--vars", "--inline", "--limit"),
        "clone": (*_SEL, "--state", *_COMMON, "--full-refresh", "--resource-type", "--exclude-resource-type"),
    }.items()
}
ALIASED_COMMANDS = {"list": "ls"}
TWO_WORD = {"source": "freshness", "docs": "generate"}
# The one definition of which subcommands build: their run_results describe nodes built or tested from
# this project (parity and summaries key on these). clone copies relations from elsewhere; compile and
# docs generate mark every node success without building it.
BUILDING = frozenset({"build", "run", "test", "seed", "snapshot", "retry"})

SELECTOR_METHODS = [
    "tag",
    "path",
    "file",
    "fqn",
    "package",
    "config",
    "test_name",
    "test_type",
    "state",
    "exposure",
    "metric",
    "result",
    "source",
    "source_status",
    "group",
    "access",
    "version",
    "semantic_model",
    "saved_query",
    "unit_test",
    "resource_type",
]
