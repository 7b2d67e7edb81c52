"""The summary counts each node once: a `seed` then a `build` step run the seeds twice, the table says 2 seeds for 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbtflow.run._flow import dbt_flow
from tests.run.reliability.conftest import make_project

pytestmark = pytest.mark.usefixtures("prefect_api")


def nodes_table(summary: str) -> dict[str, dict[str, str]]:
    """The summary's `## Nodes` table as {resource type: {status: count}}."""
    lines = summary.split("## Nodes", 1)[1].strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")][1:]
    rows = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells[1:], strict=True))
    return rows


def test_a_seed_then_build_run_counts_each_node_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs_dir = tmp_path / "runs"
    monkeypatch.setenv("DBTFLOW_RUNS_DIR", str(runs_dir))
    model = "select * from {{ ref('s1') }} union all select * from {{ ref('s2') }}"
    project = make_project(tmp_path / "mini", {"m": model})
    (project / "seeds").mkdir()
    for name in ("s1", "s2"):
        (project / "seeds" / f"{name}.csv").write_text("id\n1\n2\n")

    state = dbt_flow(project, name="summary_counts")(target="local", steps=["seed", "build"], return_state=True)

    assert state.is_completed(), state.message
    summary = (runs_dir / str(state.state_details.flow_run_id) / "summary.md").read_text()
    table = nodes_table(summary)
    assert table["seed"]["success"] == "2", summary
    assert table["model"]["success"] == "1", summary
    assert state.message == "dbt on local: 3 success", state.message
    assert "| 1 | `seed --target local` | ok | 2 |" in summary  # each step's own row still says what it ran
    assert "| 2 | `build --target local` | ok | 3 |" in summary
