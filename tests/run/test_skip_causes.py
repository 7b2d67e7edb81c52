"""Which failures a skipped node names (`failed_ancestors`), on dbt's own graph shapes; pure, no dbt."""

from __future__ import annotations

from dbtflow.run._outcome import failed_ancestors

PARENTS = {
    "model.p.stg": ["source.p.raw.events"],
    "model.p.fct": ["model.p.stg"],
    "model.p.other": ["model.p.unrelated"],
    "test.p.source_not_null_raw_events_id": ["source.p.raw.events"],
    "test.p.not_null_stg_id": ["model.p.stg"],
    "test.p.not_null_other_id": ["model.p.other"],
    "unit_test.p.fct.ut_fct": ["model.p.fct"],
}


def causes(unique_id: str, *failed: str) -> list[str]:
    return failed_ancestors(unique_id, lambda uid: PARENTS.get(uid, []), set(failed))


def test_a_failed_test_on_a_source_or_an_ancestor_is_named() -> None:
    assert causes("model.p.fct", "test.p.source_not_null_raw_events_id") == ["test.p.source_not_null_raw_events_id"]
    assert causes("model.p.fct", "test.p.not_null_stg_id") == ["test.p.not_null_stg_id"]


def test_a_failed_ancestor_stops_the_walk_and_unrelated_failures_are_not_named() -> None:
    assert causes("model.p.fct", "model.p.stg", "test.p.not_null_other_id") == ["model.p.stg"]
    assert causes("model.p.stg", "test.p.not_null_stg_id") == []  # a test on the node runs after it


def test_a_failed_unit_test_names_itself_as_the_models_cause() -> None:
    assert causes("model.p.fct", "unit_test.p.fct.ut_fct") == ["unit_test.p.fct.ut_fct"]


def test_a_skipped_hook_names_the_failed_hook() -> None:
    assert causes("operation.p.p-on-run-start-1", "operation.p.p-on-run-start-0", "model.p.stg") == [
        "operation.p.p-on-run-start-0"
    ]
