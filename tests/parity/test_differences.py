"""A pair of runs with every kind of difference: each one gets its reason (no dbt, no Prefect)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbtflow.parity._compare import apply_accepted, compare, load_accepted
from dbtflow.parity._load import load_artifact_set
from dbtflow.parity._report import report_json, report_markdown
from tests.parity.builders import manifest, node, run_results, write_run, write_step

P = "wg"
SEED, STG = f"seed.{P}.brands", f"model.{P}.stg_brands"
NOT_NULL = f"test.{P}.not_null_stg_brands_id"
WEEKLY, NEW, OLD = f"model.{P}.weekly_report", f"model.{P}.new_model", f"model.{P}.old_model"
LEGACY_SEED, CHANGED = f"seed.{P}.legacy_seed", f"model.{P}.changed"
EPHEMERAL, UNIT = f"model.{P}.now_ephemeral", f"unit_test.{P}.stg_brands.ut_brand"
EXPOSURE, HOOK = f"exposure.{P}.dashboard", f"operation.{P}.{P}-on-run-start-0"
OLD_TEST = f"test.{P}.accepted_values_stg_brands_kind.abc123"
FLAKY, AFTER, FLAKY_TEST = f"model.{P}.flaky", f"model.{P}.after_flaky", f"test.{P}.unique_flaky_id"
CHANGED_TEST, MYSTERY, EXCLUDED = f"test.{P}.not_null_changed_id", f"model.{P}.mystery", f"model.{P}.legacy_excluded"
NEW_NAME_TEST = f"test.{P}.accepted_values_stg_brands_kind.def456"  # the same test as OLD_TEST, named by dbt 1.10


def common() -> list[dict]:
    daily = ("daily",)
    return [
        node(SEED, tags=("raw",)),
        node(STG, tags=daily, materialized="view", depends_on=(SEED,)),
        node(NOT_NULL, test_name="not_null", depends_on=(STG,)),
        node(WEEKLY, tags=("weekly",), depends_on=(STG,)),
        node(FLAKY, tags=daily, depends_on=(STG,)),
        node(AFTER, tags=daily, depends_on=(FLAKY,)),
        node(FLAKY_TEST, test_name="unique", depends_on=(FLAKY,)),
        node(MYSTERY, tags=daily, depends_on=(STG,)),
        node(EXCLUDED, tags=daily, depends_on=(STG,)),
        node(EXPOSURE, depends_on=(WEEKLY,)),
        node(HOOK),
    ]


def cloud_docs() -> tuple[dict, dict]:
    nodes = [
        *common(),
        node(OLD, tags=("daily",), depends_on=(STG,)),
        node(LEGACY_SEED, tags=("raw",)),
        node(CHANGED, tags=("daily",), checksum="v1", depends_on=(STG,)),
        node(CHANGED_TEST, test_name="not_null", depends_on=(CHANGED,)),
        node(EPHEMERAL, tags=("daily",), depends_on=(STG,)),
        node(OLD_TEST, test_name="accepted_values", depends_on=(STG,)),
    ]
    ran = [
        SEED,
        STG,
        NOT_NULL,
        FLAKY,
        AFTER,
        FLAKY_TEST,
        MYSTERY,
        OLD,
        LEGACY_SEED,
        CHANGED,
        CHANGED_TEST,
        EPHEMERAL,
        OLD_TEST,
    ]
    results = [(u, "pass" if u.startswith("test.") else "success") for u in ran]
    return (
        manifest(nodes, dbt_version="1.7.0", schema=11),
        run_results(
            results, select=["tag:daily", "tag:raw"], exclude=["legacy_excluded"], dbt_version="1.7.0", schema=5
        ),
    )


def prefect_docs(select: list[str] | None = None) -> tuple[dict, dict]:
    nodes = [
        *common(),
        node(NEW, tags=("daily",), depends_on=(STG,)),
        node(CHANGED, tags=("daily",), checksum="v2", depends_on=(STG,)),
        node(CHANGED_TEST, test_name="not_null", depends_on=(CHANGED,)),
        node(EPHEMERAL, tags=("daily",), materialized="ephemeral", depends_on=(STG,)),
        node(UNIT, depends_on=(STG,)),
        node(NEW_NAME_TEST, test_name="accepted_values", depends_on=(STG,)),
    ]
    results = [
        (SEED, "success"),
        (STG, "success"),
        (NOT_NULL, "pass"),
        (WEEKLY, "success"),
        (NEW, "success"),
        (CHANGED, "success"),
        (CHANGED_TEST, "fail", "Got 2 results, configured to fail if != 0"),
        (UNIT, "pass"),
        (EXPOSURE, "no-op"),
        (HOOK, "success"),
        (FLAKY, "error", "Database Error in model flaky: relation brands_v2 does not exist"),
        (AFTER, "skipped"),
        (FLAKY_TEST, "skipped"),
        (EXCLUDED, "success"),
        (NEW_NAME_TEST, "pass"),
    ]
    return (
        manifest(nodes, dbt_version="1.10.4", disabled=[node(LEGACY_SEED, tags=("raw",))]),
        run_results(results, select=select),
    )


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    cloud = write_step(tmp_path / "cloud", *cloud_docs())
    prefect = write_run(
        tmp_path / "runs" / "run-1", "7d0c1ad8-5a4f-4b9e-9a57-3c1a2b3c4d5e", [("build", *prefect_docs())]
    )
    return cloud, prefect


EXPECTED = {
    WEEKLY: ("only_prefect", "selection", True),
    EXCLUDED: ("only_prefect", "selection", True),
    NEW: ("only_prefect", "added", True),
    OLD: ("only_cloud", "removed", True),
    LEGACY_SEED: ("only_cloud", "disabled", True),
    CHANGED: ("changed_code", "changed_code", True),
    CHANGED_TEST: ("status", "changed_code", True),
    EPHEMERAL: ("only_cloud", "ephemeral", True),
    UNIT: ("only_prefect", "dbt_version", True),
    EXPOSURE: ("only_prefect", "dbt_version", True),
    HOOK: ("only_prefect", "dbt_version", True),
    OLD_TEST: ("only_cloud", "dbt_version", True),
    NEW_NAME_TEST: ("only_prefect", "dbt_version", True),
    FLAKY: ("status", "status", False),
    AFTER: ("status", "upstream", True),
    FLAKY_TEST: ("status", "upstream", True),
    MYSTERY: ("only_cloud", "unexplained", False),
}


def test_every_kind_of_difference_has_its_reason(pair: tuple[Path, Path]):
    cloud, prefect = pair
    report = compare(load_artifact_set(cloud, "dbt Cloud"), load_artifact_set(prefect, "Prefect"))

    got = {d.unique_id: (d.kind, d.reason, d.explained) for d in report.differences}
    assert got == EXPECTED
    assert report.same == 3  # the seed, stg_brands and its not_null test
    why = {d.unique_id: d.explanation for d in report.differences}
    assert "`dbt build --select tag:daily tag:raw --exclude legacy_excluded`" in why[WEEKLY]
    assert "selected by Prefect only" in why[EXCLUDED]
    assert "not in dbt Cloud's manifest" in why[NEW] and "not in Prefect's manifest" in why[OLD]
    assert "disabled in Prefect's project" in why[LEGACY_SEED]
    assert "ephemeral in Prefect's project" in why[EPHEMERAL]
    assert "unit tests exist from dbt 1.8" in why[UNIT] and "1.7.0" in why[UNIT]
    assert "exposures" in why[EXPOSURE] and "hooks" in why[HOOK]
    assert "exists only under dbt 1.7.0" in why[OLD_TEST] and f"names the same test `{NEW_NAME_TEST}`" in why[OLD_TEST]
    assert f"dbt 1.7.0 names the same test `{OLD_TEST}`" in why[NEW_NAME_TEST]
    assert "relation brands_v2 does not exist" in why[FLAKY] and "dbt Cloud ok (OK)" in why[FLAKY]
    assert f"because `{FLAKY}` failed there" in why[AFTER]
    assert f"`{CHANGED}`" in why[CHANGED_TEST] and "Got 2 results" in why[CHANGED_TEST]
    assert "selects it, but dbt Cloud did not run it" not in why[MYSTERY]
    assert "Prefect's `dbt build` selects it, but Prefect did not run it" in why[MYSTERY]
    assert report.exit_code == 1 and {d.unique_id for d in report.open} == {FLAKY, MYSTERY}


def test_report_lists_unexplained_first_and_is_json_serialisable(pair: tuple[Path, Path]):
    import json

    cloud, prefect = pair
    report = compare(load_artifact_set(cloud, "dbt Cloud"), load_artifact_set(prefect, "Prefect"))
    markdown = report_markdown(report)
    assert markdown.startswith("# dbt parity: ❌ 2 unexplained differences")
    assert markdown.index("## Unexplained (2)") < markdown.index("## Explained (15)")
    for title in (
        "selected by one run only (2)",
        "added (only in Prefect's manifest) (1)",
        "disabled in one project (1)",
    ):
        assert f"### {title}" in markdown
    assert "| dbt | 1.7.0 | 1.10.4 |" in markdown
    assert "| schemas | manifest v11, run_results v5 | manifest v12, run_results v6 |" in markdown
    data = json.loads(json.dumps(report_json(report)))
    assert data["exit_code"] == 1 and data["counts"]["unexplained"] == 2 and data["counts"]["differences"] == 17
    assert data["prefect"]["flow_run_id"] == "7d0c1ad8-5a4f-4b9e-9a57-3c1a2b3c4d5e"
    flaky = next(d for d in data["differences"] if d["unique_id"] == FLAKY)
    assert flaky["cloud"]["normalized"] == "ok" and flaky["prefect"]["normalized"] == "failed"
    assert "brands_v2" in flaky["prefect"]["message"]


def test_accept_file_marks_reviewed_differences(pair: tuple[Path, Path], tmp_path: Path):
    cloud, prefect = pair
    accept = tmp_path / "accept.yml"
    accept.write_text(
        f"- unique_id: {FLAKY}\n  kind: status\n  note: brands_v2 lands with the next release\n"
        f"- unique_id: {MYSTERY}\n  kind: only_cloud\n"
        f"- unique_id: model.{P}.gone\n  kind: only_prefect\n"
    )
    report = compare(load_artifact_set(cloud, "dbt Cloud"), load_artifact_set(prefect, "Prefect"))
    report = apply_accepted(report, load_accepted(accept))
    assert report.exit_code == 0 and not report.open
    assert [a.unique_id for a in report.unused_accepts] == [f"model.{P}.gone"]
    markdown = report_markdown(report)
    assert "## Accepted (2)" in markdown and "brands_v2 lands with the next release" in markdown
    assert "matched no difference" in markdown


def test_wrong_kind_in_accept_file_does_not_accept(pair: tuple[Path, Path], tmp_path: Path):
    cloud, prefect = pair
    accept = tmp_path / "accept.json"
    accept.write_text(f'[{{"unique_id": "{FLAKY}", "kind": "only_cloud"}}]')
    report = apply_accepted(
        compare(load_artifact_set(cloud, "dbt Cloud"), load_artifact_set(prefect, "Prefect")), load_accepted(accept)
    )
    assert FLAKY in {d.unique_id for d in report.open}


def test_selection_parity_cannot_evaluate_is_said_not_guessed(tmp_path: Path):
    cloud = write_step(tmp_path / "cloud", *cloud_docs())
    prefect = write_step(tmp_path / "prefect", *prefect_docs(select=["state:modified+"]))
    report = compare(load_artifact_set(cloud, "dbt Cloud"), load_artifact_set(prefect, "Prefect"))
    mystery = next(d for d in report.differences if d.unique_id == MYSTERY)
    assert mystery.reason == "unexplained" and not mystery.explained
    assert "parity cannot evaluate it" in mystery.explanation and "state:modified+" in mystery.explanation
    assert "selection evaluated | yes | no:" in report_markdown(report)
