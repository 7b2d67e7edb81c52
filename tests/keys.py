"""Throw-away Snowflake key pairs for tests, made at run time (no key is ever committed)."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass(frozen=True, repr=False)
class KeyPair:
    private_pem: str  # as stored in the block: encrypted when a passphrase is set
    public_pem: str
    plain_der_b64: str  # the unencrypted key, base64 DER (what a leak of the decrypted key would look like)
    passphrase: str | None = None

    def __repr__(self) -> str:
        return "KeyPair(<hidden>)"

    def secret_lines(self) -> list[str]:
        """Every line of key material: none of them may appear anywhere but in the block."""
        body = [line for line in self.private_pem.splitlines() if line and not line.startswith("-")]
        plain = [self.plain_der_b64[i : i + 64] for i in range(0, len(self.plain_der_b64), 64)]
        return [line for line in body + plain if len(line) >= 40]


def new_key(passphrase: str | None = None) -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return KeyPair(pem, public.decode(), base64.b64encode(der).decode(), passphrase)


def key_env(key: KeyPair) -> dict[str, str]:
    """The environment `dbtflow blocks setup` reads the key from (never argv): for a subprocess's env only."""
    env = {"DBTFLOW_SNOWFLAKE_PRIVATE_KEY": key.private_pem}
    if key.passphrase:
        env["DBTFLOW_SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"] = key.passphrase
    return env
