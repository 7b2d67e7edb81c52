"""Secret-looking vars: which names count, and what the masked forms look like."""

from __future__ import annotations

import json

from dbtflow.secrets._masking import MASK, masked_argv, masked_parameters, secret_values


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
