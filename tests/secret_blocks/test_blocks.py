"""dbtflow.secrets._blocks without a Prefect API: key checks, where secrets come from, block names."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from dbtflow.dbt._project import load_project
from dbtflow.errors import UserError
from dbtflow.secrets._blocks import (
    ENV_PASSPHRASE,
    ENV_PASSWORD,
    ENV_PRIVATE_KEY,
    ENV_PRIVATE_KEY_FILE,
    Secrets,
    block_names,
    check_private_key,
    read_secrets,
)
from dbtflow.secrets._profiles import referenced_blocks
from tests.conftest import TENANT
from tests.keys import new_key


def check(key: str, passphrase: str | None = None) -> None:
    check_private_key(key, passphrase, what="the key", fix="fix it")


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_good_keys_pass():
    plain, encrypted = new_key(), new_key("correct horse")
    check(plain.private_pem)
    check(plain.plain_der_b64)  # dbt-snowflake also takes base64 DER
    check(encrypted.private_pem, "correct horse")


@pytest.mark.parametrize(
    ("key", "passphrase", "fragment"),
    [
        ("not a key at all", None, "is not a private key in PEM"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", None, "is not a private key in PEM"),
        ("encrypted", None, "is encrypted and no passphrase was given"),
        ("encrypted", "wrong horse", "the passphrase does not decrypt the key"),
        ("plain", "surplus", "is not encrypted but a passphrase was given"),
        ("ed25519", None, "needs an RSA or EC key"),
    ],
)
def test_bad_keys_are_one_line_errors_without_key_material(key: str, passphrase: str | None, fragment: str):
    pair = new_key("correct horse")
    if key == "encrypted":
        key = pair.private_pem
    elif key == "plain":
        key = new_key().private_pem
    elif key == "ed25519":
        key = (
            ed25519.Ed25519PrivateKey.generate()
            .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            .decode()
        )
    message = one_line_error(check, key, passphrase)
    assert fragment in message and message.endswith("fix it")
    assert not any(line in message for line in pair.secret_lines())
    assert passphrase is None or passphrase not in message


def test_secrets_come_from_the_environment_or_a_key_file(tmp_path: Path):
    pair = new_key("pp")
    secrets = read_secrets("keypair", {ENV_PRIVATE_KEY: pair.private_pem, ENV_PASSPHRASE: "pp"})
    assert secrets is not None and secrets.private_key == pair.private_pem and secrets.private_key_passphrase == "pp"
    assert "pp" not in repr(secrets) and "BEGIN" not in repr(secrets)

    escaped = pair.private_pem.replace("\n", "\\n")  # as some CI secret stores hold it
    assert read_secrets("keypair", {ENV_PRIVATE_KEY: escaped}).private_key == pair.private_pem  # type: ignore[union-attr]

    key_file = tmp_path / "rsa_key.p8"
    key_file.write_text(pair.private_pem)
    assert read_secrets("keypair", {ENV_PRIVATE_KEY_FILE: str(key_file)}).private_key == pair.private_pem  # type: ignore[union-attr]
    assert read_secrets("keypair", {}, key_file=key_file).private_key == pair.private_pem  # type: ignore[union-attr]
    assert "keep one" in one_line_error(read_secrets, "keypair", {ENV_PRIVATE_KEY: "x"}, key_file=key_file)
    assert "cannot read the private key file" in one_line_error(read_secrets, "keypair", {}, key_file=tmp_path / "no")

    assert read_secrets("keypair", {}) is None
    assert read_secrets("password", {ENV_PASSWORD: "pw"}) == Secrets(password="pw")
    assert read_secrets("password", {}) is None


def test_a_hidden_prompt_asks_only_for_what_is_missing():
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return "typed"

    encrypted = new_key("typed")
    secrets = read_secrets("keypair", {ENV_PRIVATE_KEY: encrypted.private_pem}, prompt=prompt)
    assert secrets is not None and secrets.private_key_passphrase == "typed" and len(asked) == 1
    plain = read_secrets("keypair", {ENV_PRIVATE_KEY: new_key().private_pem}, prompt=prompt)
    assert plain is not None and plain.private_key_passphrase is None and len(asked) == 1
    assert read_secrets("password", {}, prompt=prompt) == Secrets(password="typed")


def test_block_names_come_from_the_target_s_references_only():
    project = load_project(TENANT)
    dev = block_names(project, "dev")
    assert (dev.credentials, dev.connector, dev.target_configs, dev.profile) == ("dbt-wg-dev",) * 4
    assert block_names(project, "prod").credentials == "dbt-wg-prod"
    assert {name for _, name in referenced_blocks(project, "dev")} == {"dbt-wg-dev"}  # a dev run never reads prod
    assert {slug for slug, _ in referenced_blocks(project, "dev")} == {
        "snowflake-credentials",
        "snowflake-connector",
        "dbt-cli-snowflake-target-configs",
    }
    assert "unknown target 'qa'" in one_line_error(block_names, project, "qa")
    assert "refers to no snowflake-credentials block" in one_line_error(block_names, project, "local")


def test_setup_help_offers_no_secret_option():
    from typer.testing import CliRunner

    from dbtflow.cli import app

    result = CliRunner().invoke(app, ["blocks", "setup", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "--rotate" in result.output and "--auth" in result.output and "--private-key-file" in result.output
    for option in ("--password", "--private-key ", "--passphrase", "--private-key-passphrase"):
        assert option not in result.output


def test_a_refused_login_keeps_the_driver_s_reason_in_the_step_error():
    from dbtflow.run._invoke import _first_line

    dbt_error = (
        'Runtime Error\n  Database error while listing schemas in database "WG"\n  Database Error\n'
        "    390144 (28000): Failed to connect to DB: 127.0.0.1:4000. JWT token is invalid. [0f81]\n"
    )
    assert _first_line(dbt_error) == (
        'Runtime Error Database error while listing schemas in database "WG" Database Error '
        "390144 (28000): Failed to connect to DB: 127.0.0.1:4000. JWT token is invalid. [0f81]"
    )
    assert _first_line("Parsing Error\n  at a.yml\n  bad indent\n  1| x:\n  2|  y\n") == (
        "Parsing Error at a.yml bad indent"
    )
