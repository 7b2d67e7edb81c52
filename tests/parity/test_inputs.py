"""What parity reads: every reference artifact version, the building step of a run, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dbtflow.dbt._artifacts import step_from_json
from dbtflow.parity._compare import compare
from dbtflow.parity._load import ParityInputError, artifact_set_from_json, load_artifact_set, resolve_run
from tests.conftest import SHARED
from tests.parity.builders import manifest, node, run_results, write_run, write_step

REFERENCE = SHARED / "reference" / "dbt-artifacts"
MANIFESTS = sorted(REFERENCE.glob("manifest*.json"))
RUN_RESULTS = sorted(REFERENCE.glob("run_results*.json"))


def test_the_reference_folder_is_what_we_expect():
    names = {p.name for p in REFERENCE.glob("*.json")}
    assert {p.name for p in MANIFESTS} | {p.name for p in RUN_RESULTS} == names
    assert len(MANIFESTS) == 4 and len(RUN_RESULTS) == 3


@pytest.mark.parametrize("manifest_path", MANIFESTS, ids=lambda p: p.name)
def test_every_reference_manifest_loads(manifest_path: Path):
    raw = json.loads(manifest_path.read_text())
    step = step_from_json(manifest_path, RUN_RESULTS[-1])
    assert step.manifest_schema in (10, 11, 12)
    expected = sum(
        len(raw.get(s) or {})
        for s in ("nodes", "sources", "unit_tests", "exposures", "metrics", "semantic_models", "saved_queries")
    )
    assert len(step.nodes) == expected and len(step.disabled) == len(raw.get("disabled") or {})
    models = [n for n in step.nodes.values() if n.resource_type == "model"]
    assert models and all(n.fqn and n.checksum and n.materialized for n in models)
    assert all(n.checksum is None for n in step.nodes.values() if n.test_name)  # generic tests: no checksum


@pytest.mark.parametrize("results_path", RUN_RESULTS, ids=lambda p: p.name)
def test_every_reference_run_results_loads(results_path: Path):
    raw = json.loads(results_path.read_text())
    step = step_from_json(None, results_path)
    assert step.run_results_schema in (4, 5, 6) and step.command == "build"
    assert len(step.results) == len(raw["results"]) and all(r.status for r in step.results)


@pytest.mark.parametrize(
    "cloud,prefect",
    [
        ("manifest_v10.json", "run_results_v4.json"),
        ("manifest_v11.json", "run_results_v5.json"),
        ("manifest_v12_dbt1.8.json", "run_results_v6.json"),
        ("manifest_v12_dbt1.10.json", "run_results_v6.json"),
    ],
)
def test_reference_pairs_compare_and_every_difference_has_a_reason(cloud: str, prefect: str):
    base = artifact_set_from_json(REFERENCE / "manifest_v11.json", REFERENCE / "run_results_v5.json", "dbt Cloud")
    other = artifact_set_from_json(REFERENCE / cloud, REFERENCE / prefect, "Prefect")
    report = compare(base, other)
    assert all(d.reason and d.explanation for d in report.differences)
    same = compare(other, other)
    assert same.differences == [] and same.exit_code == 0


def test_the_building_step_is_used_not_docs_generate(tmp_path: Path):
    nodes = [node("seed.wg.brands"), node("model.wg.stg", depends_on=("seed.wg.brands",))]
    built = run_results([("seed.wg.brands", "success"), ("model.wg.stg", "error", "boom")])
    docs = run_results([("seed.wg.brands", "success"), ("model.wg.stg", "success")], which="generate")
    folder = write_run(
        tmp_path / "run",
        "0b8f7a5e-1c2d-4e3f-8a9b-0c1d2e3f4a5b",
        [
            ("source freshness", manifest(nodes), None),
            ("build", manifest(nodes), built),
            ("docs generate", manifest(nodes), docs),
        ],
    )
    (folder / "01-source-freshness" / "sources.json").write_text("{}")
    run = load_artifact_set(folder, "Prefect")
    assert [s.folder for s in run.used_steps] == ["02-build"]
    assert run.results["model.wg.stg"].status == "error"  # not docs generate's blanket "success"
    ignored = {s.folder: s.why for s in run.steps if not s.used}
    assert "every node success" in ignored["03-docs-generate"] and "freshness" in ignored["01-source-freshness"]

    from dbtflow.parity._report import report_markdown

    markdown = report_markdown(compare(run, run))
    assert "| step(s) used | `02-build`: `dbt build` |" in markdown
    assert "`03-docs-generate` (docs only; its run_results mark every node success)" in markdown


def test_a_job_of_seed_run_test_steps_matches_one_build(tmp_path: Path):
    nodes = [
        node("seed.wg.brands"),
        node("model.wg.stg", depends_on=("seed.wg.brands",)),
        node("test.wg.not_null_stg_id", test_name="not_null", depends_on=("model.wg.stg",)),
    ]
    m = manifest(nodes)
    cloud = write_run(
        tmp_path / "cloud",
        None,
        [
            ("seed", m, run_results([("seed.wg.brands", "success")], which="seed")),
            ("run", m, run_results([("model.wg.stg", "success")], which="run")),
            ("test", m, run_results([("test.wg.not_null_stg_id", "pass")], which="test")),
            ("docs generate", m, run_results([(n["unique_id"], "success") for n in nodes], which="generate")),
        ],
    )
    prefect = write_step(
        tmp_path / "prefect",
        m,
        run_results([("seed.wg.brands", "success"), ("model.wg.stg", "success"), ("test.wg.not_null_stg_id", "pass")]),
    )
    report = compare(load_artifact_set(cloud, "dbt Cloud"), load_artifact_set(prefect, "Prefect"))
    assert report.differences == [] and report.same == 3
    assert [s.folder for s in report.cloud.used_steps] == ["01-seed", "02-run", "03-test"]


def test_a_flat_folder_of_docs_generate_is_refused(tmp_path: Path):
    m = manifest([node("model.wg.stg")])
    folder = write_step(tmp_path / "target", m, run_results([("model.wg.stg", "success")], which="generate"))
    with pytest.raises(
        ParityInputError, match=r"is from `dbt docs generate`.*give the artifacts of the step that built"
    ):
        load_artifact_set(folder, "dbt Cloud")


def test_a_run_without_a_building_step_is_refused(tmp_path: Path):
    m = manifest([node("model.wg.stg")])
    folder = write_run(
        tmp_path / "run", None, [("compile", m, run_results([("model.wg.stg", "success")], which="compile"))]
    )
    with pytest.raises(ParityInputError, match=r"no step in .* built anything: 01-compile \(compile: compiles only"):
        load_artifact_set(folder, "Prefect")


@pytest.mark.parametrize(
    "content,message",
    [
        (
            b'{"metadata": {"dbt_schema_version": "https://schemas.getdbt.com/dbt/run-results/v6.json"}, "resu',
            "is not valid JSON",
        ),
        (b"<html>502 Bad Gateway</html>", "is not valid JSON"),
        (b"", "is empty"),
        (b"[1, 2]", "a JSON object was expected"),
        (
            b'{"metadata": {"dbt_schema_version": "https://schemas.getdbt.com/dbt/run-results/v7.json"}}',
            "is run-results v7; dbtflow reads run-results v4-v6",
        ),
        (
            b'{"metadata": {"dbt_schema_version": "https://schemas.getdbt.com/dbt/catalog/v1.json"}}',
            "is not a dbt run-results artifact",
        ),
        (
            b'{"metadata": {"dbt_schema_version": "https://schemas.getdbt.com/dbt/run-results/v6.json"},'
            b' "results": [{}]}',
            "malformed result",
        ),
    ],
)
def test_bad_run_results_is_one_clear_line(tmp_path: Path, content: bytes, message: str):
    folder = write_step(tmp_path / "target", manifest([node("model.wg.stg")]), None)
    (folder / "run_results.json").write_bytes(content)
    with pytest.raises(ParityInputError, match=message) as raised:
        load_artifact_set(folder, "dbt Cloud")
    assert "\n" not in str(raised.value) and str(raised.value).startswith("dbt Cloud: ")


def test_unknown_manifest_version_and_missing_manifest(tmp_path: Path):
    folder = write_step(tmp_path / "t", manifest([node("model.wg.stg")], schema=13), run_results([]))
    with pytest.raises(ParityInputError, match=r"is manifest v13; dbtflow reads manifest v10-v12"):
        load_artifact_set(folder, "Prefect")
    (folder / "manifest.json").unlink()
    with pytest.raises(ParityInputError, match=r"manifest.json not found"):
        load_artifact_set(folder, "Prefect")
    with pytest.raises(ParityInputError, match=r"is not a folder"):
        load_artifact_set(tmp_path / "nowhere", "Prefect")


def test_resolve_latest_and_unknown_runs(tmp_path: Path):
    import os
    import time

    with pytest.raises(ParityInputError, match="no stored runs"):
        resolve_run(tmp_path, "latest")
    for index, name in enumerate(("older", "newer")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text("{}")
        os.utime(tmp_path / name / "run.json", (time.time() - 100 + index * 50,) * 2)
    assert resolve_run(tmp_path, "latest").name == "newer"
    assert resolve_run(tmp_path, "older").name == "older"
    with pytest.raises(ParityInputError, match=r"no run nope in .*the latest are: newer, older"):
        resolve_run(tmp_path, "nope")
