"""flows/dbt_wg_flow.py as prefect-cloud deploys it: its own code on the file's text, its own `--parameter` parser.

`reference()` is the owner of the flow's parameters (today `dbt_flow`'s flow; re-point it at the
parameters model when one owns them): the entry file's literal copy must equal it.
"""

from __future__ import annotations

import inspect
import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prefect.utilities.callables import parameter_docstrings

from dbtflow.dbt._project import load_project
from dbtflow.run._flow import dbt_flow
from dbtflow.run._request import build_request
from flows.dbt_wg_flow import PROJECT_DIR, run_dbt_wg
from tests.conftest import REPO

ENTRY = REPO / "flows" / "dbt_wg_flow.py"
# The values, as an operator types them after `prefect-cloud deploy/run`
OPERATOR_LINE = """--parameter command=build --parameter target=prod --parameter vars='{"key":"value"}' \
--parameter select='["tag:daily","fct_x"]' --parameter full_refresh=true --parameter threads=8"""

# prefect-cloud runs from `uvx` where neither Prefect nor dbtflow is installed: its schema of the
# file must come from the text and the file's own imports only, so the subprocess hides them.
CLOUD_SCHEMA = """
import importlib.abc, json, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"prefect", "dbtflow", "dbt", "flows"}:
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Hide())
from prefect_cloud.utilities.callables import get_parameter_schema_from_content
schema = get_parameter_schema_from_content(open(sys.argv[1]).read(), sys.argv[2])
print(json.dumps(schema.model_dump_for_openapi()))
"""


def reference() -> Callable[..., Any]:
    """The flow the parameters are defined on (with their docs)."""
    return dbt_flow(PROJECT_DIR, name="run_dbt_wg").fn


def cloud_schema(path: Path, function: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-c", CLOUD_SCHEMA, str(path), function], capture_output=True, text=True, timeout=120
    )


def test_entry_signature_and_docs_equal_the_reference():
    entry = inspect.signature(run_dbt_wg.fn, eval_str=True).parameters.values()
    source = inspect.signature(reference(), eval_str=True).parameters.values()
    assert [(p.name, p.kind, p.annotation, p.default) for p in entry] == [
        (p.name, p.kind, p.annotation, p.default) for p in source
    ]
    docs = parameter_docstrings(inspect.getdoc(run_dbt_wg.fn))
    assert list(docs) == [p.name for p in entry], "one `Args:` line per parameter, in order"
    assert docs == parameter_docstrings(inspect.getdoc(reference()))


def test_prefect_clouds_schema_of_the_text_equals_prefects_runtime_schema():
    done = cloud_schema(ENTRY, "run_dbt_wg")
    assert done.returncode == 0, done.stderr
    static = json.loads(done.stdout)
    runtime = run_dbt_wg.parameters.model_dump_for_openapi()
    assert static == runtime
    assert static["properties"]["engine"]["enum"] == ["fast", "prefect-dbt"]  # Literal evaluated, not `Any`
    assert static["properties"]["threads"]["description"].startswith("dbt threads (1-64)")
    assert {name: p.get("default") for name, p in static["properties"].items()} == {
        p.name: p.default for p in inspect.signature(reference()).parameters.values()
    }


def test_prefect_cloud_cannot_find_a_flow_that_is_assigned(tmp_path: Path):
    """The old entry file (`run_dbt_wg = dbt_flow(...)`): prefect-cloud's function refuses it."""
    old = tmp_path / "dbt_wg_flow.py"
    old.write_text("from dbtflow.run._flow import dbt_flow\n\nrun_dbt_wg = dbt_flow('tenants/x', name='run_dbt_wg')\n")
    done = cloud_schema(old, "run_dbt_wg")
    assert done.returncode != 0 and "ValueError: Function run_dbt_wg not found" in done.stderr


def test_operator_parameters_through_prefect_clouds_parser_validate_and_build_a_request():
    from prefect_cloud.cli.utilities import process_key_value_pairs

    pairs = shlex.split(OPERATOR_LINE)[1::2]
    parsed = process_key_value_pairs(pairs, as_json=True)
    validated = run_dbt_wg.validate_parameters(parsed)
    assert {k: validated[k] for k in parsed} == {
        "command": "build",
        "target": "prod",
        "vars": {"key": "value"},
        "select": ["tag:daily", "fct_x"],
        "full_refresh": True,
        "threads": 8,
    }
    (step,) = build_request(load_project(PROJECT_DIR), **validated).steps
    assert step.argv == [
        "build", "--select", "tag:daily", "fct_x", "--full-refresh", "--threads", "8",
        "--vars", '{"key": "value"}', "--target", "prod",
    ]  # fmt: skip


@pytest.mark.parametrize("pair", ["threads=many", "engine=slow", "full_refresh=maybe"])
def test_a_parameter_the_flow_refuses(pair: str):
    from prefect.exceptions import ParameterTypeError
    from prefect_cloud.cli.utilities import process_key_value_pairs

    with pytest.raises(ParameterTypeError, match=pair.split("=")[0]):
        run_dbt_wg.validate_parameters(process_key_value_pairs([pair], as_json=True))
