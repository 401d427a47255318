"""Integration fixtures: a real S3 endpoint (moto's standalone server) and the blob stores.

The moto server runs as a subprocess on a free loopback port for the whole
session, so the S3 store is exercised over real HTTP (signing, path-style
addressing, multipart, presigned URLs). If it cannot start, tests FAIL: a
missing service is never a skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import free_port, fresh_postgres_database, stop_process

from mediamill.storage.blobs import BlobStore, LocalBlobStore

MIB = 1024 * 1024
S3_ACCESS_KEY_ID = "testing"
S3_SECRET_ACCESS_KEY = "testing"
S3_REGION = "us-east-1"
S3_MULTIPART_BYTES = 5 * MIB  # smallest part S3 allows: multipart shows up at small sizes
S3_LIST_PAGE_SIZE = 2  # so listing a handful of keys takes several pages
MOTO_START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class MotoServer:
    endpoint_url: str
    log_path: Path

    def reset(self) -> None:
        """Drop every bucket and object (moto's own reset endpoint)."""
        with httpx.Client(trust_env=False, timeout=30.0) as client:
            client.post(f"{self.endpoint_url}/moto-api/reset").raise_for_status()


def _wait_until_up(process: subprocess.Popen[bytes], endpoint_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + MOTO_START_TIMEOUT_S
    last_error: Exception | None = None
    with httpx.Client(trust_env=False, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(
                    f"moto server exited with code {process.returncode}:\n{log_path.read_text()}"
                )
            try:
                if client.get(f"{endpoint_url}/moto-api/").status_code < 500:
                    return
            except httpx.HTTPError as exc:
                last_error = exc
            time.sleep(0.1)
    pytest.fail(
        f"moto server did not answer on {endpoint_url} within {MOTO_START_TIMEOUT_S}s "
        f"({last_error!r}):\n{log_path.read_text()}"
    )


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """moto's S3-compatible server as a subprocess on a free loopback port."""
    port = free_port()
    endpoint_url = f"http://127.0.0.1:{port}"
    log_path = tmp_path_factory.mktemp("moto") / "server.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_up(process, endpoint_url, log_path)
        yield MotoServer(endpoint_url=endpoint_url, log_path=log_path)
    finally:
        stop_process(process)


def make_s3_store(moto_server: MotoServer, bucket: str, prefix: str = "") -> BlobStore:
    """An S3 store on the moto endpoint with the smallest multipart sizes S3 allows."""
    from mediamill.storage.blobs.s3 import S3BlobStore

    store = S3BlobStore(
        bucket,
        prefix,
        endpoint_url=moto_server.endpoint_url,
        access_key_id=S3_ACCESS_KEY_ID,
        secret_access_key=S3_SECRET_ACCESS_KEY,
        region=S3_REGION,
        multipart_threshold_bytes=S3_MULTIPART_BYTES,
        multipart_chunk_bytes=S3_MULTIPART_BYTES,
        list_page_size=S3_LIST_PAGE_SIZE,
    )
    store.ensure_bucket()
    return store


def s3_settings(
    moto_server: MotoServer, tmp_path: Path, bucket: str, prefix: str = "", **extra: Any
) -> Any:
    """Settings of a deployment on the S3 store `bucket[/prefix]` of the moto endpoint
    (data dir under `tmp_path`, a signing secret set); `extra` adds or overrides settings."""
    from mediamill.config.settings import Settings

    given: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "storage_url": f"s3://{bucket}/{prefix}",
        "s3_endpoint_url": moto_server.endpoint_url,
        "s3_access_key_id": S3_ACCESS_KEY_ID,
        "s3_secret_access_key": S3_SECRET_ACCESS_KEY,
        "signing_secret": "test-signing-secret-0123456789",
    }
    return Settings(**{**given, **extra})


@contextmanager
def distributed_env(
    moto_server: MotoServer,
    broker_url: str,
    data_dir: Path,
    bucket_prefix: str = "mm",
    **extra: str,
) -> Iterator[dict[str, str]]:
    """The environment of a distributed deployment for CLI subprocesses: a fresh
    PostgreSQL database (dropped afterwards), `broker_url`, a new bucket on the moto S3
    endpoint, a shared signing secret; `extra` adds or overrides MEDIAMILL_* names."""
    from support import fresh_postgres_database

    bucket = f"{bucket_prefix}-{uuid.uuid4().hex[:12]}"
    make_s3_store(moto_server, bucket)
    with fresh_postgres_database() as db_url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
        env.update(
            MEDIAMILL_BROKER_URL=broker_url,
            MEDIAMILL_DATABASE_URL=db_url,
            MEDIAMILL_STORAGE_URL=f"s3://{bucket}",
            MEDIAMILL_S3_ENDPOINT_URL=moto_server.endpoint_url,
            MEDIAMILL_S3_ACCESS_KEY_ID=S3_ACCESS_KEY_ID,
            MEDIAMILL_S3_SECRET_ACCESS_KEY=S3_SECRET_ACCESS_KEY,
            MEDIAMILL_SIGNING_SECRET="test-signing-secret-0123456789",
            MEDIAMILL_DATA_DIR=str(data_dir),
            **extra,
        )
        yield env


def settings_from_env(env: dict[str, str]):
    """The Settings a process started with `env` would read (MEDIAMILL_* names only)."""
    from mediamill.config.settings import Settings

    prefix = "MEDIAMILL_"
    return Settings(
        _env_file=None,
        **{k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix)},
    )


@pytest.fixture(params=["local", "s3"])
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    """The same contract, once per store: a local directory and S3 (fresh bucket, key prefix).

    The S3 store uses a store-level prefix so that prefix mapping is part of the
    contract being tested.
    """
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "store")
    else:
        yield request.getfixturevalue("s3_store")


@pytest.fixture
def s3_store(moto_server: MotoServer) -> Iterator[BlobStore]:
    """An S3 store on a fresh bucket under the key prefix `tenant-a`; moto is reset after."""
    bucket = f"test-{uuid.uuid4().hex[:16]}"
    yield make_s3_store(moto_server, bucket, prefix="tenant-a")
    moto_server.reset()


@pytest.fixture
def api(embedded_env):
    """The API on the embedded default (SQLite, local store, in-process worker)."""
    from api_support import running_api

    with running_api() as running:
        yield running


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Each test twice: on SQLite (None: the caller's SQLite file, or the embedded
    default under the test's data dir) and on a fresh, empty PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    with fresh_postgres_database() as url:
        yield url
