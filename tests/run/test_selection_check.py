"""Selection check: dbt's own `dbt ls`, on one parse, says whether a step's selection matches a node it runs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dbtflow.dbt._project import load_project
from dbtflow.errors import UserError
from dbtflow.run._request import build_request
from dbtflow.run._selection_check import SelectionCheck, ls_argv
from tests.run.reliability.conftest import make_project


def test_ls_argv_keeps_the_selection_and_the_commands_resource_types(tmp_path: Path) -> None:
    project = load_project(make_project(tmp_path / "mini", {"a": "select 1 as id"}))
    request = build_request(project, target="local", steps=["seed", "run --select a+ b --exclude c", "build"])
    seed, run, build = (ls_argv(s) for s in request.steps)
    assert seed is None and build is None, "a step that selects nothing in particular is not checked"
    assert run == ["ls", "--select", "a+", "b", "--exclude", "c", "--resource-type", "model"]
    (tmp_path / "manifest.json").write_text("{}")
    deferred = build_request(project, target="local", select="state:modified+", state=str(tmp_path))
    assert [ls_argv(s) for s in deferred.steps] == [None], "state: needs the run's state: not checked here"


@pytest.mark.parametrize(
    ("params", "refused"),
    [
        ({"select": "a+"}, None),
        ({"steps": ["build --select tag:nightly"]}, None),
        ({"select": "does_not_exist_model"}, "step `build --select does_not_exist_model --target local`"),
        ({"steps": ["seed --select a"]}, "step `seed --select a --target local`"),  # a model: no seed selected
        ({"select": "a b", "exclude": "a b"}, "step `build --select a b --exclude a b --target local`"),
        ({"steps": ["run --select stg_ünïcødé"]}, None),
    ],
)
def test_a_selection_is_refused_only_when_dbt_lists_no_node_the_step_runs(
    tmp_path: Path, params: dict[str, object], refused: str | None
) -> None:
    models = {"a": "{{ config(tags=['nightly']) }}\nselect 1 as id", "b": "select * from {{ ref('a') }}",
              "stg_ünïcødé": "select 2 as id"}  # fmt: skip
    project = load_project(make_project(tmp_path / "mini", models))
    request = build_request(project, target="local", **params)

    with SelectionCheck(project) as check:
        if refused is None:
            check.check("schedule 'x'", request)
            return
        with pytest.raises(UserError) as caught:
            check.check("schedule 'x'", request)
    assert str(caught.value).startswith(f"schedule 'x': {refused} selects no node in "), caught.value
    assert not (project.project_dir / "target").exists(), "nothing written in the project"


def test_one_parse_serves_every_request(tmp_path: Path) -> None:
    project = load_project(make_project(tmp_path / "mini", {f"m{i}": "select 1 as id" for i in range(20)}))
    requests = [build_request(project, target="local", select=f"m{i}") for i in range(20)]
    with SelectionCheck(project) as check:
        started = time.perf_counter()
        check.check("first", requests[0])
        first = time.perf_counter() - started
        started = time.perf_counter()
        for request in requests[1:]:
            check.check("next", request)
        rest = time.perf_counter() - started
    assert rest / 19 < max(first / 2, 0.5), (first, rest / 19)
