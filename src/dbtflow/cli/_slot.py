"""`dbtflow slot`: the target's slot (one run of a target at a time), freed when its holder is gone.

Contract
- `dbtflow slot release --target T [--project-dir DIR] [--profiles-dir DIR] [--force]` frees the
  slot `dbt-<project>-<target>` on the Prefect server of PREFECT_API_URL when the run holding it
  is gone (its flow run ended, or the server does not know its lease any more, as after a restart
  with in-memory leases), and prints one line saying what held it and why it was freed. A holder
  still Running with a live lease is refused (one line, exit 2) unless `--force`.
- Prefect's own equivalent, with no check: `prefect gcl update dbt-<project>-<target> --active-slots 0`.

Pitfalls
- The target defaults to the profile's, as for `dbtflow run`; the project's name is dbt_project.yml's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dbtflow.cli._common import OneLine, fail, out
from dbtflow.dbt._project import load_project
from dbtflow.errors import UserError

app = typer.Typer(no_args_is_help=True, help="The target's slot: one run of a target at a time.")


@app.command("release", cls=OneLine)
def release(
    target: Annotated[str | None, typer.Option("--target", "-t", help="Target (default: the profile's).")] = None,
    project_dir: Annotated[Path, typer.Option(help="The dbt project folder.")] = Path("."),
    profiles_dir: Annotated[Path | None, typer.Option(help="Folder of profiles.yml.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Free it even if its holder looks alive.")] = False,
) -> None:
    """Free the target's slot when the run holding it is gone (after a server restart, a lost run)."""
    # lazy: Prefect loads on use, so that `dbtflow --help` stays fast
    from dbtflow.run._parameters import default_target
    from dbtflow.run._slot import slot_name_of
    from dbtflow.run._slot_holder import release_slot

    try:
        project = load_project(project_dir, profiles_dir)
        out.print(release_slot(slot_name_of(project.name, target or default_target(project)), force), markup=False)
    except UserError as exc:
        raise fail(exc) from None
