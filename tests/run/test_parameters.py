"""RunParameters is the one list of a run's parameters: the flow, the entry file and `dbtflow run` follow it."""

from __future__ import annotations

import ast
import inspect
from typing import Any

import pytest

from dbtflow.run._parameters import DEFAULT_TARGET, InvalidRequest, RunParameters
from tests.conftest import REPO

ENTRY = REPO / "flows" / "dbt_wg_flow.py"
CLI_NAMES = {"steps": "step", "env_vars": "env_var"}  # `dbtflow run --step X --step Y`: one option per item
CLI_DEFAULTS = {"target": None}  # `dbtflow run` without --target: the profile's own target


def model_defaults() -> dict[str, Any]:
    return {name: field.default for name, field in RunParameters.model_fields.items()}


def test_the_flow_takes_run_parameters_in_order_with_their_defaults():
    from dbtflow.run._flow import dbt_flow

    flow = dbt_flow(REPO / "tenants" / "dbt_williamgrant", name="check")
    signature = inspect.signature(flow.fn).parameters
    assert {name: p.default for name, p in signature.items()} == model_defaults()
    assert list(signature) == list(RunParameters.model_fields)
    for name in RunParameters.model_fields:  # Prefect shows each parameter's description from the docstring
        assert f"{name}:" in (flow.fn.__doc__ or ""), f"the flow's Args docstring does not describe {name}"


def _literal_entry_function() -> ast.FunctionDef | None:
    tree = ast.parse(ENTRY.read_text())
    return next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run_dbt_wg"), None)


def test_the_entry_files_literal_signature_matches_when_it_has_one():
    """prefect-cloud reads a literal `def run_dbt_wg(...)` from the entry file; its parameters must be these."""
    func = _literal_entry_function()
    if func is None:  # the entry file binds dbt_flow (checked above); nothing literal to compare
        from flows.dbt_wg_flow import run_dbt_wg

        assert list(inspect.signature(run_dbt_wg.fn).parameters) == list(RunParameters.model_fields)
        return
    args = func.args.args
    defaults = [ast.literal_eval(d) for d in func.args.defaults]
    literal = dict(zip([a.arg for a in args][len(args) - len(defaults) :], defaults, strict=True))
    assert literal == model_defaults()
    assert [a.arg for a in args] == list(RunParameters.model_fields)


def test_dbtflow_run_takes_every_parameter_with_the_same_default():
    from dbtflow.cli import run

    options = {name: p.default for name, p in inspect.signature(run).parameters.items()}
    options.pop("project_dir"), options.pop("profiles_dir")
    expected = {CLI_NAMES.get(n, n): CLI_DEFAULTS.get(n, d) for n, d in model_defaults().items()}
    assert options == expected


def test_parse_fills_defaults_and_normalises():
    params = RunParameters.parse({"threads": "4", "timeout_seconds": 60})
    assert params.target == DEFAULT_TARGET and params.command == "build" and params.threads == 4


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"engine": "slow"}, "engine 'slow' is unknown; use one of: fast, prefect-dbt"),
        ({"threads": 0}, "threads must be between 1 and 64, not 0"),
        ({"full_refresh": "maybe"}, "full_refresh: Input should be a valid boolean"),
        ({"taget": "dev"}, "unknown parameter 'taget'; use one of: command, target,"),
        ({"steps": "build"}, "steps must be a list of dbt commands"),
    ],
)
def test_bad_values_are_one_line_errors(values: dict[str, Any], message: str):
    with pytest.raises(InvalidRequest) as caught:
        RunParameters.parse(values)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
