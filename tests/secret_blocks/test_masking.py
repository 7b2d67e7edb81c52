"""Secret-looking vars: which names count, and what the masked forms look like."""

from __future__ import annotations

import json

from dbtflow.secrets._masking import MASK, masked_argv, masked_parameters, scrub_files, secret_values


def test_secret_looking_names_at_any_depth_are_masked_and_others_kept() -> None:
    text = json.dumps(
        {
            "db_password": "hunter22",  # pragma: allowlist secret
            "SNOWFLAKE_TOKEN": "abcd1234",
            "nested": {"api_key": ["k-1111"]},
            "region": "eu",
        }
    )
    argv = ["build", "--vars", text, "--target", "dev"]

    masked = masked_argv(argv)

    assert json.loads(masked[2]) == {
        "db_password": MASK, "SNOWFLAKE_TOKEN": MASK, "nested": {"api_key": [MASK]}, "region": "eu"
    }  # fmt: skip
    assert masked[:2] == ["build", "--vars"] and masked[3:] == ["--target", "dev"]
    assert argv[2] == text, "the argv dbt gets is not changed"
    assert secret_values([text]) == ["abcd1234", "hunter22", "k-1111"]  # longest first: a value inside another


def test_parameters_as_yaml_text_or_mapping_and_short_values() -> None:
    assert masked_parameters({"vars": "{private_key: PEMPEMPEM, n: 3}"})["vars"] == json.dumps(
        {"n": 3, "private_key": MASK}
    )
    assert masked_parameters({"vars": {"secret": "abc", "x": 1}})["vars"] == {"secret": "abc", "x": 1}  # too short
    assert masked_parameters({"vars": None, "target": "dev"}) == {"vars": None, "target": "dev"}
    assert masked_argv(["run-operation", "m", "--args", '{"token": "t0k3n"}']) == [
        "run-operation", "m", "--args", json.dumps({"token": MASK})
    ]  # fmt: skip


def test_kept_artifacts_are_scrubbed_of_secret_values_raw_or_json_escaped(tmp_path, monkeypatch):
    secret = 'pa"ss\\word-0123'  # pragma: allowlist secret
    monkeypatch.setenv("DBT_ENV_SECRET_DBTFLOW_VARS_0", secret)
    step = tmp_path / "01-build"
    (step / "compiled").mkdir(parents=True)
    (step / "run_results.json").write_text(json.dumps({"args": {"vars": {"api_token": secret}}}))
    (step / "compiled" / "m.sql").write_text(f"select '{secret}' as x")
    scrub_files(step)
    assert json.loads((step / "run_results.json").read_text()) == {"args": {"vars": {"api_token": MASK}}}
    assert (step / "compiled" / "m.sql").read_text() == f"select '{MASK}' as x"


def test_masked_values_passed_back_as_input_are_found_by_name() -> None:
    """A run started from Prefect's stored (masked) parameters must be refused, not run with the mask."""
    from dbtflow.secrets._masking import masked_vars

    stored = masked_parameters({"vars": {"api_token": "abcd1234", "nested": {"db_password": ["pw-12345"]}, "n": 1}})
    assert masked_vars(stored) == ["api_token", "nested.db_password[0]"]
    assert masked_vars(masked_parameters({"vars": json.dumps({"token": "abcd1234"})})) == ["token"]
    assert masked_vars({"vars": {"region": MASK}}) == [], "an innocent name holding the mask is a value like any"
    assert masked_vars({"vars": {"api_token": "abcd1234"}, "target": "dev"}) == []
