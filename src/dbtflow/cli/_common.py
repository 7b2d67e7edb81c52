"""What every `dbtflow` command shares: its two consoles, the one-line error, usage errors, id options.

Contract
- `out` (stdout) and `err` (stderr): rich consoles that neither highlight nor wrap long lines, so
  a message, a path or a URL reads and pastes as one line.
- `fail(error, code=2)` prints `error: <error>` on stderr as one line and returns the `typer.Exit`
  to raise. Exit codes, everywhere: 2 for input a user can fix (`UserError`, a usage error), 1
  for a service that failed (dbt Cloud past its retries, the Prefect API) or a run that failed.
- `OneLine`: the typer command class of every command: a usage error (an unknown option, a
  missing value) is one line naming `--help`, exit 2, instead of click's box.
- `ids(option, values)`: dbt Cloud ids given as text (`--job 12,34`), checked here, so a typo is
  one line.

Pitfalls
- Messages are printed with `markup=False`: an error may hold `[brackets]` (a list, a path) that
  rich would otherwise eat as markup.
- Light: no Prefect, no dbt, no pydantic (`dbtflow --help` imports every CLI module).
"""

from __future__ import annotations

import importlib
from typing import Any

import click
import typer
from rich.console import Console
from typer.core import TyperCommand

from dbtflow.errors import UserError

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)


def fail(error: Exception | str, code: int = 2) -> typer.Exit:
    """Print `error: ...` on stderr, one line; the exit to raise.

    Args:
        error: what went wrong and how to fix it (a `UserError`'s text is already that).
        code: 2 for input a user can fix, 1 for a failed service or run.

    Returns:
        `typer.Exit(code)`, for `raise fail(exc) from None`.
    """
    err.print(f"error: {error}", markup=False)
    return typer.Exit(code)


def _usage_errors() -> tuple[type[Exception], ...]:
    """click's UsageError, and typer's vendored copy of it (typer >= 0.26 ships its own click)."""
    try:
        vendored = importlib.import_module("typer._click.exceptions").UsageError
    except (ImportError, AttributeError):
        vendored = click.UsageError
    return tuple({click.UsageError, vendored})


class OneLine(TyperCommand):
    """Usage errors (an unknown option, a missing value) as one line and exit 2, like every other error."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return list(super().parse_args(ctx, args))
        except _usage_errors() as exc:
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            raise fail(f"{message}; see `{ctx.command_path} --help`") from None


def ids(option: str, values: list[str] | None) -> list[int]:
    """dbt Cloud ids from `--option 12,34 --option 56`.

    Args:
        option: the option's name, for the message.
        values: what was given (each may hold several ids separated by commas).

    Returns:
        The ids, in order.

    Raises:
        UserError: a value that is not a number, naming the option.
    """
    found = []
    for value in values or []:
        for part in value.split(","):
            if not part.strip().isdigit():
                raise UserError(f"{option} {value!r} is not a dbt Cloud id: pass a number, e.g. {option} 1234")
            found.append(int(part))
    return found
