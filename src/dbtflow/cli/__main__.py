"""`python -m dbtflow.cli`: the `dbtflow` command."""

from dbtflow.cli import main

main()
