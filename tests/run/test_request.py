"""RunRequest: argv building and the one-line errors, without dbt or Prefect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dbtflow.dbt._project import load_project
from dbtflow.run._request import InvalidRequest, build_request
from tests.conftest import TENANT


@pytest.fixture(scope="module")
def project():
    return load_project(TENANT)


def argv(project, **params):
    return [s.argv for s in build_request(project, **params).steps]


def test_defaults_build_on_the_target(project):
    assert argv(project, target="local") == [["build", "--target", "local"]]


def test_job_options_go_to_every_step_that_takes_them(project, tmp_path: Path):
    (tmp_path / "manifest.json").write_text("{}")
    steps = argv(
        project,
        target="dev",
        steps=["seed", "run --select tag:daily", "test"],
        exclude="stg_brands",
        full_refresh=True,
        threads=8,
        vars={"b": 1, "a": "x"},
        state=str(tmp_path),
        fail_fast=True,
    )
    assert steps[0][0] == "seed" and "--full-refresh" in steps[0]
    assert steps[1][:3] == ["run", "--select", "tag:daily"]
    assert "--full-refresh" not in steps[2], "dbt test takes no --full-refresh"
    for step in steps:
        assert step[step.index("--threads") + 1] == "8"
        assert json.loads(step[step.index("--vars") + 1]) == {"a": "x", "b": 1}
        assert step[step.index("--state") + 1] == str(tmp_path.resolve())
        assert step[-2:] == ["--target", "dev"]


def test_freshness_first_and_docs_last_are_not_fatal(project):
    request = build_request(project, target="local", command="build", source_freshness=True, generate_docs=True)
    assert [(s.command, s.fatal) for s in request.steps] == [
        ("source freshness", False),
        ("build", True),
        ("docs generate", False),
    ]


def test_select_as_list_or_space_separated_and_yaml_vars(project):
    a = argv(project, target="local", select=["tag:daily", "+fct_shipments"], vars="{region: europe}")
    b = argv(project, target="local", select="tag:daily +fct_shipments", vars='{"region": "europe"}')
    assert a == b
    assert a[0][:4] == ["build", "--select", "tag:daily", "+fct_shipments"]


def test_run_operation_and_step_aliases(project):
    steps = argv(project, target="local", steps=["dbt run-operation grant_select --args '{role: x}'", "list -s a"])
    assert steps[0][:4] == ["run-operation", "grant_select", "--args", '{"role": "x"}']
    assert steps[1][:3] == ["ls", "--select", "a"]


def test_selector_is_checked_against_selectors_yml(project):
    assert argv(project, target="local", selector="daily")[0][:3] == ["build", "--selector", "daily"]
    with pytest.raises(InvalidRequest, match="no selector 'nightly'"):
        build_request(project, target="local", selector="nightly")


@pytest.mark.parametrize(
    "selection",
    [
        "my_model",
        "+tag:daily",
        "path:models/marts",
        "@stg_brands",
        "2+fct_shipments+3",
        "tag:a,config.materialized:table",
        "source:erp.shipments+",
        "test_type:generic",
        "models/marts/*.sql",
        "stg_ünïcødé_名前",
        "+tag:données,path:models/étape",
    ],
)
def test_valid_selector_syntax(project, selection):
    assert argv(project, target="local", select=selection)[0][2] == selection


def test_a_yaml_alias_bomb_in_vars_is_refused_at_once(project):
    import time

    bomb = "\n".join(
        ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
        + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    )
    started = time.monotonic()
    with pytest.raises(InvalidRequest, match=r"^vars holds more than 10000 values once YAML aliases are expanded"):
        build_request(project, target="local", vars=bomb)
    assert time.monotonic() - started < 2


def test_vars_as_a_mapping_are_bounded_too(project):
    """The deployment's `vars` parameter arrives as a mapping: the same bound applies."""
    with pytest.raises(InvalidRequest, match="more than 10000 values"):
        build_request(project, target="local", vars={"ids": list(range(20_000))})
    with pytest.raises(InvalidRequest, match=r"holds 2000004 characters of values; the limit is 100000"):
        build_request(project, target="local", vars={"blob": "x" * 2_000_000})
    aliased = argv(project, target="local", vars="{a: &a [1, 2], b: *a}")  # a few aliases are fine
    assert aliased[0][1:3] == ["--vars", '{"a": [1, 2], "b": [1, 2]}']
