"""An S3 run store on loopback: moto's S3 server, prefect-aws blocks saved on the test's Prefect server.

`s3` (session) starts moto's ThreadedMotoServer on a free loopback port with a bucket, an IAM
user allowed `s3:*` and authentication enforced (so wrong credentials are refused as by AWS),
and saves on the session's Prefect server the blocks `aws-credentials/dbtflow-runs`,
`s3-bucket/dbtflow-runs` (the run store) and `s3-bucket/dbtflow-runs-wrong` (a wrong secret).
`s3.stop()` / `s3.start()` take the server down and bring it back on the same port, same data.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TENANT, free_port

BUCKET = "dbtflow-runs"
STORE = "s3-bucket/dbtflow-runs"
WRONG = "s3-bucket/dbtflow-runs-wrong"
FOLDER = "runs"  # the block's bucket_folder
WRONG_SECRET = f"wrong-{uuid.uuid4().hex}"  # the secret of the wrong-credentials block


@dataclass
class S3:
    port: int
    access_key: str
    secret_key: str
    server: Any = None
    stopped: list[bool] = field(default_factory=lambda: [False])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.stopped[0] = False

    def stop(self) -> None:
        self.server.stop()
        self.stopped[0] = True

    def objects(self) -> list[str]:
        """Every object key in the bucket, read from moto's backend (works while the server is down)."""
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        return sorted(s3_backends[DEFAULT_ACCOUNT_ID]["global"].buckets[BUCKET].keys.keys())

    def body(self, key: str) -> bytes:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        return bytes(s3_backends[DEFAULT_ACCOUNT_ID]["global"].buckets[BUCKET].keys[key].value)

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )


@pytest.fixture(scope="session")
def s3(prefect_api: str) -> Iterator[S3]:
    import boto3
    from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    store = S3(free_port(), "", "")
    store.start()
    anyone = uuid.uuid4().hex  # before authentication is on, moto takes any key
    setup = {"endpoint_url": store.url, "region_name": "us-east-1", "aws_access_key_id": anyone}
    iam = boto3.client("iam", **setup, aws_secret_access_key=anyone)
    boto3.client("s3", **setup, aws_secret_access_key=anyone).create_bucket(Bucket=BUCKET)
    iam.create_user(UserName="dbtflow")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="dbtflow", PolicyName="runs", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="dbtflow")["AccessKey"]
    store.access_key, store.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
    httpx.post(f"{store.url}/moto-api/reset-auth", content="0").raise_for_status()  # from now on: signed requests only

    # botocore's own retries off: the run store's retries (runstore.ATTEMPTS) are what is tested, and quickly
    params = AwsClientParameters(endpoint_url=store.url, config={"retries": {"max_attempts": 1}})
    good = AwsCredentials(
        aws_access_key_id=store.access_key,
        aws_secret_access_key=store.secret_key,
        region_name="us-east-1",
        aws_client_parameters=params,
    )
    wrong = AwsCredentials(
        aws_access_key_id=store.access_key,
        aws_secret_access_key=WRONG_SECRET,
        region_name="us-east-1",
        aws_client_parameters=params,
    )
    good.save("dbtflow-runs", overwrite=True)
    S3Bucket(bucket_name=BUCKET, bucket_folder=FOLDER, credentials=good).save("dbtflow-runs", overwrite=True)
    S3Bucket(bucket_name=BUCKET, bucket_folder=FOLDER, credentials=wrong).save("dbtflow-runs-wrong", overwrite=True)
    yield store
    if not store.stopped[0]:
        store.stop()


def _build_outputs(folder: str, names: list[str]) -> set[str]:
    if Path(folder).name == ".duckdb":
        return {n for n in names if n != ".gitignore"}
    return {n for n in names if n in ("target", "logs")}


def fresh_clone(where: Path) -> Path:
    """A "container": a fresh copy of the tenant project (no target/, logs/, database or runs)."""
    if where.exists():
        shutil.rmtree(where)
    shutil.copytree(TENANT, where, ignore=_build_outputs)
    return where


@pytest.fixture
def container(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh clone whose local runs folder is thrown away after each use, as a managed pool's container."""
    runs = tmp_path / "container-runs"
    monkeypatch.setenv("DBTFLOW_RUNS_DIR", str(runs))
    monkeypatch.delenv("DBTFLOW_RUN_STORAGE", raising=False)
    yield fresh_clone(tmp_path / "clone")
    shutil.rmtree(runs, ignore_errors=True)


def dbtflow(*args: str) -> subprocess.CompletedProcess[str]:
    """The `dbtflow` command as an operator runs it (a subprocess, on the session's Prefect server)."""
    from tests.conftest import BIN

    return subprocess.run([str(BIN / "dbtflow"), *args], capture_output=True, text=True, timeout=300)
