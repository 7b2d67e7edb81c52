"""Snowflake private keys: whether one loads, before a block holds it or dbt uses it.

Contract
- `check_private_key(key, passphrase, what=, fix=)` returns when `key` (PEM, or base64 DER as
  dbt-snowflake accepts) loads as an RSA or EC private key with `passphrase`, and otherwise
  raises a one-line `UserError` naming `what` was wrong and ending with `fix`.

Pitfalls
- The message never holds the key or the passphrase, only what kind of mistake it is.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from dbtflow.errors import UserError
from dbtflow.settings import SNOWFLAKE_PRIVATE_KEY_PASSPHRASE as ENV_PASSPHRASE


def check_private_key(key: str, passphrase: str | None, *, what: str, fix: str) -> None:
    """Raise a one-line UserError unless `key` (PEM, or base64 DER as dbt-snowflake accepts) loads."""
    text = key.strip()
    password = passphrase.encode() if passphrase else None
    try:
        if text.startswith("-"):
            loaded: Any = serialization.load_pem_private_key(text.encode(), password=password)
        else:
            loaded = serialization.load_der_private_key(base64.b64decode(text, validate=True), password=password)
    except TypeError:  # cryptography: encrypted without a password, or a password for a plain key
        if password is None:
            raise UserError(f"{what} is encrypted and no passphrase was given ({ENV_PASSPHRASE}): {fix}") from None
        raise UserError(f"{what} is not encrypted but a passphrase was given: drop {ENV_PASSPHRASE}; {fix}") from None
    except (ValueError, binascii.Error, UnsupportedAlgorithm) as exc:
        if password is not None and "ENCRYPTED" in text and "decrypt" in str(exc).lower():
            raise UserError(f"the passphrase does not decrypt {what}: {fix}") from None
        raise UserError(
            f"{what} is not a private key in PEM (a 'BEGIN PRIVATE KEY' block) or base64 DER form: {fix}"
        ) from None
    if not isinstance(loaded, RSAPrivateKey | EllipticCurvePrivateKey):
        raise UserError(f"{what} is a {type(loaded).__name__}; Snowflake key-pair auth needs an RSA or EC key: {fix}")
