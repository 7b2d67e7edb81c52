"""Our table of dbt commands and options, pinned against dbt's own click CLI (fails when dbt renames or drops one)."""

from __future__ import annotations

import click
import pytest
from dbt.cli.main import cli
from dbt.graph.selector_methods import MethodName

from dbtflow.dbt._commands import ALIASES, CHOICES, COMMANDS, MANAGED, OPTIONS, SELECTOR_METHODS


def dbt_command(name: str) -> click.Command:
    group: click.Command = cli
    for word in name.split():
        assert isinstance(group, click.Group), f"dbt {name}: {word!r} is not a dbt command group"
        assert word in group.commands, f"dbt has no command {name!r} (dbt renamed or dropped it)"
        group = group.commands[word]
    return group


def options_of(command: click.Command) -> dict[str, click.Parameter]:
    return {opt: param for param in command.params for opt in [*param.opts, *getattr(param, "secondary_opts", [])]}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_we_accept_is_an_option_of_that_dbt_command(name: str):
    theirs = options_of(dbt_command(name))
    missing = sorted(set(COMMANDS[name]) - set(theirs))
    assert not missing, f"dbt {name} no longer takes {missing}"
    for option in COMMANDS[name]:
        assert option in OPTIONS, f"{option} (dbt {name}) has no kind in OPTIONS"


def test_aliases_and_managed_options_are_dbts():
    build = options_of(dbt_command("build"))
    for alias, option in ALIASES.items():
        assert alias in build and build[alias] is build[option], f"{alias} is not dbt's spelling of {option}"
    for option in MANAGED:
        assert option in build, f"dbt build has no {option} (dbtflow refuses it in steps)"


@pytest.mark.parametrize("option", sorted(CHOICES))
def test_choices_are_values_dbt_accepts(option: str):
    param = options_of(dbt_command("build" if option != "--output" else "ls"))[option]
    kind = param.type
    choices = getattr(kind, "choices", None) or getattr(getattr(kind, "item_type", None), "choices", None)
    assert choices, f"{option} is no longer a choice in dbt"
    assert set(CHOICES[option]) <= {str(c) for c in choices}, f"dbt dropped choices of {option}"


def test_selector_methods_are_dbts():
    theirs = {m.value for m in MethodName}
    assert set(SELECTOR_METHODS) <= theirs, f"not dbt selector methods: {sorted(set(SELECTOR_METHODS) - theirs)}"
    assert "wildcard" not in SELECTOR_METHODS
