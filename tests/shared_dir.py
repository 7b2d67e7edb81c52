"""Where the shared reference material is: `shared/` beside the checkout, or beside an ancestor of it.

The main checkout has it at `../shared`; a git worktree (e.g. `/work/wt/<name>`) has it further up
(`/work/shared`), so the nearest ancestor holding `shared/reference` wins.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = next((p / "shared" for p in REPO.parents if (p / "shared" / "reference").is_dir()), REPO.parent / "shared")
