"""A writer killed with SIGKILL in the middle of a put leaves nothing under the key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

WRITER = r"""
import sys, time
from mediamill.storage.blobs import LocalBlobStore
from mediamill.storage.blobs.s3 import S3BlobStore

class Endless:
    def __init__(self): self.n = 0
    def read(self, size=-1):
        size = 1 << 20 if size is None or size < 0 else size
        self.n += size
        if self.n > (6 << 20):
            print("midway", flush=True)
            time.sleep(60)
        return b"x" * size
    def readinto(self, buf):
        data = self.read(len(buf)); buf[: len(data)] = data; return len(data)

kind, where = sys.argv[1], sys.argv[2]
if kind == "local":
    store = LocalBlobStore(where)
else:
    bucket, endpoint = where.split("|")
    store = S3BlobStore(bucket, "", endpoint_url=endpoint, access_key_id="testing",
                        secret_access_key="testing", region="us-east-1",
                        multipart_threshold_bytes=5 << 20, multipart_chunk_bytes=5 << 20)
store.put("victim/key", Endless())
"""


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_sigkill_mid_put_leaves_no_object(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "local":
        from mediamill.storage.blobs import LocalBlobStore

        store = LocalBlobStore(tmp_path / "store")
        where = str(tmp_path / "store")
    else:
        from integration.conftest import make_s3_store

        moto = request.getfixturevalue("moto_server")
        store = make_s3_store(moto, f"crash-{os.getpid()}")
        where = f"{store.bucket}|{moto.endpoint_url}"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, kind, where], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "midway", "the writer got under way"
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert not store.exists("victim/key")
    assert list(store.list("victim/")) == []
