"""Parity's re-evaluation of select/exclude/selector matches what dbt itself selects (`dbt ls`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from dbtflow.dbt._artifacts import read_step
from dbtflow.dbt._selection import evaluate

pytestmark = pytest.mark.slow

CASES = [
    ([], [], None, "eager"),
    (["tag:daily"], [], None, "eager"),
    (["+fct_shipments"], [], None, "eager"),
    (["stg_markets+"], [], None, "eager"),
    (["@stg_brands"], [], None, "eager"),
    (["1+fct_shipments+1"], [], None, "eager"),
    (["tag:finance,config.materialized:table"], [], None, "eager"),
    (["path:models/staging"], ["stg_fx_rates"], None, "eager"),
    (["source:*+"], ["tag:weekly"], None, "cautious"),
    ([], [], "daily", "eager"),
    (["staging.stg_brands", "marts.core"], [], None, "eager"),
    (["resource_type:seed", "test_type:singular"], [], None, "eager"),
    (["tag:sales"], [], None, "cautious"),
    (["tag:sales"], [], None, "buildable"),
    (["tag:sales"], [], None, "empty"),
    (["test_name:not_null"], [], None, "eager"),
    (["file:fct_shipments.sql+"], [], None, "eager"),
    (["package:dbt_williamgrant,tag:core"], [], None, "eager"),
    (["snp_distributors+"], [], None, "eager"),
    (["+exposure:*"], [], None, "eager"),
    (["source:wg_raw.shipments+"], ["tag:finance"], None, "eager"),
]
BUILT = ("model", "seed", "snapshot", "test", "unit_test", "exposure")


def test_selection_matches_dbt_ls(tenant: Path, monkeypatch: pytest.MonkeyPatch):
    from dbt.cli.main import dbtRunner

    monkeypatch.chdir(tenant)
    monkeypatch.setenv("DBTFLOW_PROJECT_DIR", str(tenant))
    common = ["--target", "local", "--profiles-dir", str(tenant), "--project-dir", str(tenant), "--quiet"]
    parsed = dbtRunner().invoke(["parse", *common])
    assert parsed.success, parsed.exception
    step = read_step(tenant / "target")
    runner = dbtRunner(manifest=parsed.result)
    mismatches = []
    for select, exclude, selector, indirect in CASES:
        argv = ["ls", *common, "--output", "json", "--output-keys", "unique_id", "--indirect-selection", indirect]
        for rtype in BUILT:
            argv += ["--resource-type", rtype]
        argv += ["--select", *select] if select else []
        argv += ["--exclude", *exclude] if exclude else []
        argv += ["--selector", selector] if selector else []
        listed = runner.invoke(argv)
        assert listed.success, listed.exception
        expected = {json.loads(line)["unique_id"] for line in listed.result}
        expected = {u for u in expected if step.nodes[u].materialized != "ephemeral"}  # dbt build never runs them
        args = {
            "which": "build",
            "select": select,
            "exclude": exclude,
            "selector": selector,
            "indirect_selection": indirect,
        }
        selection = evaluate(dataclasses.replace(step, args=args))
        assert selection.nodes is not None, selection.unsupported
        assert expected or not select, f"{select} selects nothing: the case tests nothing"
        if set(selection.nodes) != expected:
            mismatches.append((selection.text, sorted(expected - selection.nodes), sorted(selection.nodes - expected)))
    assert not mismatches
