"""A Snowflake stand-in on loopback for tests: fakesnow's server, plus Snowflake's login checks.

fakesnow (PyPI `fakesnow[server]`) speaks the Snowflake wire protocol and runs SQL on DuckDB,
but it accepts any credentials. To test rotation and revocation honestly, this module puts a
login gate in front of fakesnow's `/session/v1/login-request` handler that does what
Snowflake does for a service user, and nothing more:

- key-pair (`AUTHENTICATOR=SNOWFLAKE_JWT`): the JWT's issuer names the public key's SHA-256
  fingerprint (`ACCOUNT.USER.SHA256:<fp>`); the key must be one of the user's registered
  public keys (Snowflake's `RSA_PUBLIC_KEY` / `RSA_PUBLIC_KEY_2`, two slots so a key can be
  rotated without downtime), the signature must verify with it and `sub` must be
  `ACCOUNT.USER`. Otherwise: code 390144, "JWT token is invalid. [<request id>]".
- password: the password must match. Otherwise: code 390100, "Incorrect username or password
  was specified.". An unknown user gets the same answer (Snowflake does not tell them apart).

The users live in a JSON file the gate re-reads at every login, so a test "runs ALTER USER"
by rewriting it (`FakeSnowflake.set_user`); passwords are stored as SHA-256 digests only, and
keys as public keys, so the registry holds nothing secret. Sessions already open stay valid
(as in Snowflake, where revoking a key does not end live sessions).

Like Snowflake, a query request retried with the same `requestId` (the connector retries when a
response takes longer than its 60 s socket timeout, which happens on a loaded machine) gets the
first execution's answer instead of running again: without that, a slow seed insert ran twice.

`POST /__fakesnowflake__/reset` swaps in an empty in-memory database (fakesnow cannot re-run
incremental models or snapshots, so each dbt run gets a fresh one); `FakeSnowflake` runs the
server in its own process (python tests/fakesnowflake.py --port N --users FILE), one per test.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gzip
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

ACCOUNT = "FAKESNOW"
RESET_PATH = "/__fakesnowflake__/reset"


def public_key_fingerprint(public_key_pem: str) -> str:
    """Snowflake's `RSA_PUBLIC_KEY_FP`: SHA256 of the DER SubjectPublicKeyInfo, base64."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_public_key(public_key_pem.encode())
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode()


def check_login(data: dict[str, Any], users: dict[str, Any]) -> tuple[str, str] | None:
    """None when Snowflake would let this login in, else (code, message) as Snowflake answers."""
    import jwt

    login = str(data.get("LOGIN_NAME") or "").upper()
    user = users.get(login) or {}
    if str(data.get("AUTHENTICATOR") or "").upper() == "SNOWFLAKE_JWT":
        invalid = ("390144", f"JWT token is invalid. [{uuid.uuid4()}]")
        token = str(data.get("TOKEN") or "")
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
            account, name, fingerprint = str(claims["iss"]).split(".", 2)
            keys = {public_key_fingerprint(pem): pem for pem in user.get("rsa_public_keys", [])}
            if fingerprint not in keys or name != login or account != ACCOUNT:
                return invalid
            verified = jwt.decode(
                token, keys[fingerprint], algorithms=["RS256"], options={"require": ["iss", "sub", "iat", "exp"]}
            )
        except Exception:
            return invalid
        return None if verified["sub"] == f"{ACCOUNT}.{login}" else invalid
    password = str(data.get("PASSWORD") or "")
    if hashlib.sha256(password.encode()).hexdigest() in user.get("password_sha256", []):
        return None
    return ("390100", "Incorrect username or password was specified.")


def build_app(users_file: Path) -> Any:
    """fakesnow's Starlette app with the login gate and the reset route."""
    import fakesnow.server as fs_server
    from fakesnow.instance import FakeSnow
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    login_path, query_path = "/session/v1/login-request", "/queries/v1/query-request"
    answers: dict[str, asyncio.Future[Response]] = {}

    async def gated_login(request: Request) -> Any:
        body = await request.body()  # cached on the request: fakesnow's handler reads it again
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        users = json.loads(users_file.read_text()) if users_file.exists() else {}
        failure = check_login(json.loads(body).get("data") or {}, users)
        if failure is not None:
            code, message = failure
            data = {"errorCode": code, "nextAction": "RETRY_LOGIN"}
            return JSONResponse({"data": data, "code": code, "message": message, "success": False})
        return await fs_server.login_request(request)

    async def query_once(request: Request) -> Response:
        request_id = request.query_params.get("requestId")
        if not request_id:
            return await fs_server.query_request(request)
        if request_id in answers:  # a retry: answer as the first execution did
            first = await asyncio.shield(answers[request_id])
            return Response(first.body, status_code=first.status_code, media_type="application/json")
        answers[request_id] = asyncio.get_running_loop().create_future()
        try:
            response: Response = await fs_server.query_request(request)
        except BaseException as exc:
            answers.pop(request_id).set_exception(exc)
            raise
        answers[request_id].set_result(response)
        return response

    async def reset(request: Request) -> JSONResponse:
        old = fs_server.shared_fs
        answers.clear()
        fs_server.sessions.clear()
        fs_server.shared_fs = FakeSnow()
        with contextlib.suppress(Exception):
            old.duck_conn.close()
        return JSONResponse({"success": True})

    routes = [
        Route(login_path, gated_login, methods=["POST"]),
        Route(query_path, query_once, methods=["POST"]),
        Route(RESET_PATH, reset, methods=["POST"]),
    ]
    routes += [r for r in fs_server.routes if getattr(r, "path", None) not in (login_path, query_path)]
    return Starlette(routes=routes)


def settings_args(snowflake: FakeSnowflake, user: str) -> list[str]:
    """`dbtflow blocks setup` options for `user` on this server (endpoint overrides host/port/protocol http)."""
    return [
        "--account", snowflake.account, "--user", user, "--role", f"{user}_ROLE", "--warehouse", "WG_WH",
        "--database", "WG", "--schema", "DBT", "--host", snowflake.host, "--port", str(snowflake.port),
        "--protocol", "http",
    ]  # fmt: skip


class FakeSnowflake:
    """A gated fakesnow server in its own process on a free loopback port."""

    def __init__(self, folder: Path) -> None:
        self.users_file = folder / "snowflake-users.json"
        self.users_file.write_text("{}")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.host = "127.0.0.1"
        self.account = ACCOUNT.lower()
        self.log_path = folder / "fakesnowflake.log"
        self._log = self.log_path.open("a")
        cmd = [sys.executable, __file__, "--port", str(self.port), "--users", str(self.users_file)]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while not self._listening():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"fakesnow did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.2)

    def _listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex((self.host, self.port)) == 0

    def set_user(self, name: str, *, public_keys: Sequence[str] = (), passwords: Sequence[str] = ()) -> None:
        """Snowflake's ALTER USER: the user's registered public keys (PEM) and passwords, replaced."""
        users = json.loads(self.users_file.read_text())
        users[name.upper()] = {
            "rsa_public_keys": list(public_keys),
            "password_sha256": [hashlib.sha256(p.encode()).hexdigest() for p in passwords],
        }
        self.users_file.write_text(json.dumps(users))

    def reset(self) -> None:
        """A fresh, empty database (fakesnow cannot re-run incrementals or snapshots)."""
        httpx.post(f"http://{self.host}:{self.port}{RESET_PATH}", timeout=30).raise_for_status()

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self._log.close()


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--users", type=Path, required=True)
    args = parser.parse_args()
    uvicorn.run(build_app(args.users), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
