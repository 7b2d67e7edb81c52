"""Small text forms used across dbtflow: the one slug rule, the one duration parser.

Contract
- `slug(*parts)` joins the parts with `-`, lowercases, turns every run of characters other than
  `a-z` and `0-9` into one `-`, and strips `-` from both ends: what Prefect accepts as an
  artifact key and what reads well as a limit or schedule name (artifact keys, concurrency
  limits, schedule slugs all use it).
- `parse_duration(text, option)` reads `7d`, `36h`, `90m`, `45s`, `2w`, `1d12h`, `1.5h` (case and
  outer spaces ignored; with `bare_unit`, a plain number in that unit) into a timedelta longer than
  zero and at most 10 years, else a one-line `UserError` naming the option.

Pitfalls
- The 10-year bound keeps date arithmetic (`now - since`) from overflowing (`99999999w`).
- A slug can be empty (nothing alphanumeric): callers that need a name pass a fallback part.
"""

from __future__ import annotations

import re
from datetime import timedelta

from dbtflow.errors import UserError

_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_TERM = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION = timedelta(days=3653)  # 10 years


def slug(*parts: str) -> str:
    """The slug of `parts` joined by `-`.

    Args:
        *parts: the words, e.g. `("dbt", project, target)`.

    Returns:
        e.g. `dbt-wg-prod`; empty when no part holds a letter or digit.
    """
    return _NOT_SLUG.sub("-", "-".join(parts).lower()).strip("-")


def parse_duration(text: str, option: str, *, noun: str = "a duration", bare_unit: str | None = None) -> timedelta:
    """A duration such as `7d` or `1d12h`, for a command-line option.

    Args:
        text: what the user gave.
        option: the option's name, for the message (e.g. `--since`).
        noun: what the option holds, for the message (`a duration`, `an age`).
        bare_unit: the unit of a plain number (`d`: `3` is three days); None refuses plain numbers.

    Returns:
        The duration (longer than zero).

    Raises:
        UserError: one line naming the option and showing valid forms.
    """
    cleaned = (text or "").strip().lower()
    if bare_unit and re.fullmatch(r"\d+(?:\.\d+)?", cleaned):
        cleaned += bare_unit
    terms = _TERM.findall(cleaned)
    if not terms or _TERM.sub("", cleaned).strip():
        raise UserError(f"{option} {text!r} is not {noun}: pass e.g. 7d, 36h, 90m or 2w")
    seconds = sum(float(amount) * _SECONDS[unit] for amount, unit in terms)
    if seconds > MAX_DURATION.total_seconds():
        raise UserError(f"{option} {text!r} is longer than 10 years; use e.g. 52w")
    delta = timedelta(seconds=seconds)
    if delta <= timedelta(0):
        raise UserError(f"{option} {text!r} must be longer than zero")
    return delta
