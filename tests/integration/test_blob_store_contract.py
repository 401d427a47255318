"""One contract, two stores: every test runs on the local directory store and on S3 (moto).

The data is generated in the test (seeded, so failures reproduce) and every
assertion is on real outputs: bytes read back, hashes, sizes, listed keys, what
is left in the store's temporary area and, on S3, the raw bucket state (ETags,
open multipart uploads, leftover temporary keys).
"""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path
from typing import Any, BinaryIO, cast
from urllib.parse import urlparse
from urllib.request import url2pathname

import httpx
import pytest

from mediamill.config.settings import ConfigError, Settings
from mediamill.schemas.errors import BlobNotFoundError, InvalidRequestError
from mediamill.storage.blobs import (
    BlobStore,
    LocalBlobStore,
    StoredBlob,
    open_store,
    validate_key,
)

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
# The S3 fixture uses 5 MiB parts; the local store reads 8 MiB chunks. Nothing may
# ask the source for more than this in one call (and never for "everything").
MAX_READ_BYTES = 16 * MIB


class SourceFailedError(Exception):
    """Raised by a source stream to simulate a client that disconnects mid-upload."""


class CountingStream(io.RawIOBase):
    """A source stream that records the largest read asked of it and refuses unbounded reads.

    With `fail_after_bytes` set it raises `SourceFailedError` once that many bytes were served.
    """

    def __init__(self, data: bytes, fail_after_bytes: int | None = None) -> None:
        super().__init__()
        self._data = memoryview(data)
        self._position = 0
        self._fail_after_bytes = fail_after_bytes
        self.max_read_bytes = 0
        self.read_calls = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            raise AssertionError("the store asked for the whole stream at once")
        self.read_calls += 1
        self.max_read_bytes = max(self.max_read_bytes, size)
        if self._fail_after_bytes is not None and self._position >= self._fail_after_bytes:
            raise SourceFailedError(f"source failed after {self._position} bytes")
        chunk = bytes(self._data[self._position : self._position + size])
        self._position += len(chunk)
        return chunk

    def readinto(self, buffer: Any) -> int:
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def as_binary_io(stream: CountingStream) -> BinaryIO:
    """A CountingStream is a binary file object; say so to the type checker."""
    return cast(BinaryIO, stream)


def make_bytes(size_bytes: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size_bytes)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_back(store: BlobStore, key: str, chunk_bytes: int = MIB) -> bytes:
    """Read an object through `open()` in bounded chunks, as a consumer would."""
    parts: list[bytes] = []
    with store.open(key) as stream:
        while chunk := stream.read(chunk_bytes):
            assert len(chunk) <= chunk_bytes
            parts.append(chunk)
    return b"".join(parts)


def is_local(store: BlobStore) -> bool:
    return isinstance(store, LocalBlobStore)


def raw_s3_keys(store: Any) -> list[str]:
    """Every key in the S3 store's bucket, including ones the store hides."""
    keys: list[str] = []
    for page in store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return sorted(keys)


def assert_no_leftovers(store: BlobStore, expected_keys: list[str]) -> None:
    """No temporary file, no temporary key, no open multipart upload; only `expected_keys`."""
    assert sorted(store.list()) == sorted(expected_keys)
    if isinstance(store, LocalBlobStore):
        assert list((store.root / ".tmp").iterdir()) == []
        files = sorted(
            p.relative_to(store.root).as_posix()
            for p in store.root.rglob("*")
            if p.is_file() and ".tmp" not in p.relative_to(store.root).parts
        )
        assert files == sorted(expected_keys)
    else:
        s3: Any = store
        uploads = s3.client.list_multipart_uploads(Bucket=s3.bucket).get("Uploads", [])
        assert uploads == []
        assert raw_s3_keys(s3) == sorted(f"{s3.prefix}/{k}" for k in expected_keys)


# -- put / open ----------------------------------------------------------------


def test_put_then_open_round_trips_with_exact_hash_and_size(blob_store: BlobStore) -> None:
    data = make_bytes(300_001, seed=1)
    blob = blob_store.put("originals/a.bin", io.BytesIO(data), content_type="audio/wav")

    assert blob == StoredBlob(key="originals/a.bin", size_bytes=len(data), sha256=sha256_hex(data))
    assert read_back(blob_store, "originals/a.bin") == data
    assert blob_store.size("originals/a.bin") == len(data)
    assert blob_store.exists("originals/a.bin")
    assert_no_leftovers(blob_store, ["originals/a.bin"])


def test_put_empty_stream_stores_an_empty_object(blob_store: BlobStore) -> None:
    blob = blob_store.put("empty", io.BytesIO(b""))

    assert blob.size_bytes == 0
    assert blob.sha256 == sha256_hex(b"")
    assert blob_store.size("empty") == 0
    assert read_back(blob_store, "empty") == b""


def test_put_replaces_an_existing_object(blob_store: BlobStore) -> None:
    blob_store.put("k", io.BytesIO(b"old bytes, longer than the new ones"))
    blob = blob_store.put("k", io.BytesIO(b"new"))

    assert blob.size_bytes == 3
    assert read_back(blob_store, "k") == b"new"
    assert_no_leftovers(blob_store, ["k"])


def test_large_put_streams_and_uses_multipart(blob_store: BlobStore) -> None:
    """20 MiB + a tail: several S3 parts, never more than MAX_READ_BYTES read at once."""
    data = make_bytes(20 * MIB + 123, seed=2)
    source = CountingStream(data)

    blob = blob_store.put("originals/big.bin", as_binary_io(source), content_type="video/mp4")

    assert blob.size_bytes == len(data)
    assert blob.sha256 == sha256_hex(data)
    assert 0 < source.max_read_bytes <= MAX_READ_BYTES
    assert source.max_read_bytes < len(data)
    assert source.read_calls >= 3
    assert read_back(blob_store, "originals/big.bin") == data
    if not is_local(blob_store):
        s3: Any = blob_store
        head = s3.client.head_object(Bucket=s3.bucket, Key=f"{s3.prefix}/originals/big.bin")
        # 20 MiB + 123 bytes in 5 MiB parts: 5 parts, and S3 says so in the ETag.
        assert head["ETag"].strip('"').endswith("-5")
        assert head["ContentType"] == "video/mp4"
        assert head["ContentLength"] == len(data)
    assert_no_leftovers(blob_store, ["originals/big.bin"])


# -- content addressing --------------------------------------------------------


@pytest.mark.parametrize("size_bytes", [1_000, 12 * MIB + 7], ids=["small", "multipart"])
def test_put_content_addressed_dedupes(blob_store: BlobStore, size_bytes: int) -> None:
    data = make_bytes(size_bytes, seed=3)
    digest = sha256_hex(data)

    first, created_first = blob_store.put_content_addressed(
        "originals", as_binary_io(CountingStream(data)), content_type="audio/flac"
    )
    second, created_second = blob_store.put_content_addressed("originals", io.BytesIO(data))

    assert first == StoredBlob(key=f"originals/{digest}", size_bytes=size_bytes, sha256=digest)
    assert created_first is True
    assert second == first
    assert created_second is False
    assert read_back(blob_store, first.key) == data
    assert_no_leftovers(blob_store, [f"originals/{digest}"])


def test_put_content_addressed_keeps_distinct_contents_apart(blob_store: BlobStore) -> None:
    a, _ = blob_store.put_content_addressed("o", io.BytesIO(b"a"))
    b, _ = blob_store.put_content_addressed("o", io.BytesIO(b"b"))

    assert a.key != b.key
    assert list(blob_store.list("o/")) == sorted([a.key, b.key])


# -- atomicity -----------------------------------------------------------------


def test_failed_put_leaves_nothing_behind(blob_store: BlobStore) -> None:
    # Fails after 7 MiB: past S3's threshold, so a multipart upload has been started.
    source = CountingStream(make_bytes(12 * MIB, seed=4), fail_after_bytes=7 * MIB)

    with pytest.raises(SourceFailedError):
        blob_store.put("originals/partial.bin", as_binary_io(source))

    assert not blob_store.exists("originals/partial.bin")
    with pytest.raises(BlobNotFoundError):
        blob_store.size("originals/partial.bin")
    assert_no_leftovers(blob_store, [])


def test_failed_small_put_leaves_nothing_behind(blob_store: BlobStore) -> None:
    source = CountingStream(make_bytes(2 * MIB, seed=5), fail_after_bytes=1)

    with pytest.raises(SourceFailedError):
        blob_store.put("small", as_binary_io(source))

    assert_no_leftovers(blob_store, [])


def test_failed_overwrite_keeps_the_previous_object(blob_store: BlobStore) -> None:
    old = make_bytes(1_000, seed=6)
    blob_store.put("k", io.BytesIO(old))
    source = CountingStream(make_bytes(12 * MIB, seed=7), fail_after_bytes=6 * MIB)

    with pytest.raises(SourceFailedError):
        blob_store.put("k", as_binary_io(source))

    assert read_back(blob_store, "k") == old
    assert_no_leftovers(blob_store, ["k"])


def test_failed_put_content_addressed_leaves_nothing_behind(blob_store: BlobStore) -> None:
    source = CountingStream(make_bytes(12 * MIB, seed=8), fail_after_bytes=7 * MIB)

    with pytest.raises(SourceFailedError):
        blob_store.put_content_addressed("originals", as_binary_io(source))

    assert list(blob_store.list("originals/")) == []
    assert_no_leftovers(blob_store, [])


# -- exists / size / delete / list / move --------------------------------------


def test_exists_size_and_idempotent_delete(blob_store: BlobStore) -> None:
    blob_store.put("a/b/c.txt", io.BytesIO(b"12345"))

    assert blob_store.exists("a/b/c.txt")
    assert not blob_store.exists("a/b")
    assert not blob_store.exists("a/b/c.tx")
    assert blob_store.size("a/b/c.txt") == 5

    blob_store.delete("a/b/c.txt")
    assert not blob_store.exists("a/b/c.txt")
    blob_store.delete("a/b/c.txt")
    blob_store.delete("never/was")
    with pytest.raises(BlobNotFoundError):
        blob_store.size("a/b/c.txt")
    assert list(blob_store.list()) == []


def test_list_is_sorted_prefix_filtered_and_paginated(blob_store: BlobStore) -> None:
    keys = ["b/2", "a/1", "a/10", "a/2", "a-b", "ab/c", "c", "a/sub/x=1.ts"]
    for index, key in enumerate(keys):
        blob_store.put(key, io.BytesIO(str(index).encode()))
    list_calls: list[str] = []
    if not is_local(blob_store):
        s3: Any = blob_store
        s3.client.meta.events.register(
            "before-call.s3.ListObjectsV2", lambda **_: list_calls.append("call")
        )

    assert list(blob_store.list()) == sorted(keys)
    if not is_local(blob_store):
        # 8 keys, 2 per page: the store followed the continuation tokens.
        assert len(list_calls) >= 4
    assert list(blob_store.list("a/")) == ["a/1", "a/10", "a/2", "a/sub/x=1.ts"]
    assert list(blob_store.list("a/sub")) == ["a/sub/x=1.ts"]
    assert list(blob_store.list("a")) == sorted(k for k in keys if k.startswith("a"))
    assert list(blob_store.list("a/1")) == ["a/1", "a/10"]
    assert list(blob_store.list("zzz")) == []
    assert list(blob_store.list("c/")) == []


def test_move_renames_and_replaces(blob_store: BlobStore) -> None:
    data = make_bytes(6 * MIB, seed=9)  # above the S3 threshold: a multipart server-side copy
    blob_store.put("incoming/x.bin", io.BytesIO(data), content_type="video/mp4")
    blob_store.put("final/x.bin", io.BytesIO(b"to be replaced"))

    blob_store.move("incoming/x.bin", "final/x.bin")

    assert not blob_store.exists("incoming/x.bin")
    assert read_back(blob_store, "final/x.bin") == data
    if not is_local(blob_store):
        s3: Any = blob_store
        head = s3.client.head_object(Bucket=s3.bucket, Key=f"{s3.prefix}/final/x.bin")
        assert head["ContentType"] == "video/mp4"
    assert_no_leftovers(blob_store, ["final/x.bin"])


def test_move_to_a_new_directory_and_onto_itself(blob_store: BlobStore) -> None:
    blob_store.put("a", io.BytesIO(b"payload"))

    blob_store.move("a", "deep/er/b")
    blob_store.move("deep/er/b", "deep/er/b")

    assert read_back(blob_store, "deep/er/b") == b"payload"
    assert list(blob_store.list()) == ["deep/er/b"]


# -- urls and local paths ------------------------------------------------------


def test_url_downloads_the_same_bytes(blob_store: BlobStore) -> None:
    data = make_bytes(100_000, seed=10)
    blob_store.put("renditions/a/128k.mp3", io.BytesIO(data), content_type="audio/mpeg")

    url = blob_store.url("renditions/a/128k.mp3", expires_in_s=60)

    if is_local(blob_store):
        parsed = urlparse(url)
        assert parsed.scheme == "file"
        assert Path(url2pathname(parsed.path)).read_bytes() == data
    else:
        assert urlparse(url).scheme == "http"
        assert "X-Amz-Signature=" in url
        with httpx.Client(trust_env=False, timeout=30.0) as client:
            response = client.get(url)
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["content-type"] == "audio/mpeg"


@pytest.mark.parametrize("expires_in_s", [0, -5, 8 * 24 * 3600])
def test_url_refuses_bad_lifetimes(blob_store: BlobStore, expires_in_s: int) -> None:
    blob_store.put("k", io.BytesIO(b"x"))
    with pytest.raises(InvalidRequestError):
        blob_store.url("k", expires_in_s=expires_in_s)


def test_local_path_gives_a_readable_seekable_file(blob_store: BlobStore) -> None:
    data = make_bytes(7 * MIB + 3, seed=11)
    blob_store.put("originals/song.flac", io.BytesIO(data))

    with blob_store.local_path("originals/song.flac") as path:
        assert path.is_file()
        assert path.name == "song.flac"
        assert path.read_bytes() == data
        with path.open("rb") as handle:
            handle.seek(-3, io.SEEK_END)
            assert handle.read() == data[-3:]

    # Removed on exit: the download (S3), or the private hard link no link planted in
    # the store later can redirect (local); the object stays.
    assert not path.exists()
    assert not path.parent.exists()
    assert blob_store.exists("originals/song.flac")


# -- errors --------------------------------------------------------------------


def test_missing_keys_raise_blob_not_found(blob_store: BlobStore) -> None:
    with pytest.raises(BlobNotFoundError), blob_store.open("nope"):
        pass
    with pytest.raises(BlobNotFoundError):
        blob_store.size("nope")
    with pytest.raises(BlobNotFoundError), blob_store.local_path("nope"):
        pass
    with pytest.raises(BlobNotFoundError):
        blob_store.move("nope", "elsewhere")
    assert not blob_store.exists("nope")
    assert not blob_store.exists("elsewhere")


BAD_KEYS = [
    "",
    "../x",
    "/abs",
    "a/../b",
    "a/./b",
    "a\\b",
    "a//b",
    "a/",
    "a\x00b",
    "a b",
    "caf\u00e9",
    ".tmp/x",
    "x/.incoming/y",
    "k" * 1025,
]


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_bad_keys_are_refused_by_every_operation(
    blob_store: BlobStore, key: str, tmp_path: Path
) -> None:
    blob_store.put("good", io.BytesIO(b"good"))

    with pytest.raises(InvalidRequestError):
        blob_store.put(key, io.BytesIO(b"evil"))
    with pytest.raises(InvalidRequestError):
        blob_store.put_content_addressed(key, io.BytesIO(b"evil"))
    with pytest.raises(InvalidRequestError), blob_store.open(key):
        pass
    with pytest.raises(InvalidRequestError), blob_store.local_path(key):
        pass
    with pytest.raises(InvalidRequestError):
        blob_store.exists(key)
    with pytest.raises(InvalidRequestError):
        blob_store.size(key)
    with pytest.raises(InvalidRequestError):
        blob_store.delete(key)
    with pytest.raises(InvalidRequestError):
        blob_store.move("good", key)
    with pytest.raises(InvalidRequestError):
        blob_store.move(key, "good")
    with pytest.raises(InvalidRequestError):
        blob_store.url(key)

    # Nothing was written anywhere: not in the store, not beside it.
    assert read_back(blob_store, "good") == b"good"
    assert_no_leftovers(blob_store, ["good"])
    assert not (tmp_path / "x").exists()
    assert not Path("/abs").exists()


@pytest.mark.parametrize("prefix", ["../", "/", "/a", "a//", "a/../"])
def test_bad_list_prefixes_are_refused(blob_store: BlobStore, prefix: str) -> None:
    with pytest.raises(InvalidRequestError):
        list(blob_store.list(prefix))


@pytest.mark.parametrize(
    "key", ["originals/" + "0" * 64, "renditions/abc/mp3-128000-2.mp3", "p/x=1/seg_0001.m4s"]
)
def test_validate_key_accepts_ordinary_keys(key: str) -> None:
    assert validate_key(key) == key


# -- open_store ----------------------------------------------------------------


def test_open_store_builds_a_local_store_from_a_file_url(tmp_path: Path) -> None:
    store = open_store(Settings(storage_url=(tmp_path / "blobs").as_uri()))

    assert isinstance(store, LocalBlobStore)
    assert store.root == (tmp_path / "blobs").resolve()
    store.put("k", io.BytesIO(b"v"))
    assert (tmp_path / "blobs" / "k").read_bytes() == b"v"


def test_open_store_defaults_to_the_data_dir(tmp_path: Path) -> None:
    store = open_store(Settings(data_dir=tmp_path / "data", storage_url=None))

    assert isinstance(store, LocalBlobStore)
    assert store.root == (tmp_path / "data" / "store").resolve()


def test_open_store_builds_an_s3_store_from_settings(moto_server: Any) -> None:
    settings = Settings(
        storage_url="s3://open-store-test/some/prefix",
        s3_endpoint_url=moto_server.endpoint_url,
        s3_access_key_id="testing",
        s3_secret_access_key="testing",
        s3_multipart_threshold_bytes=5 * MIB,
        s3_multipart_chunk_bytes=6 * MIB,
    )
    store: Any = open_store(settings)
    try:
        assert type(store).__name__ == "S3BlobStore"
        assert (store.bucket, store.prefix) == ("open-store-test", "some/prefix")
        assert store.multipart_threshold_bytes == 5 * MIB
        assert store.multipart_chunk_bytes == 6 * MIB
        store.ensure_bucket()
        store.ensure_bucket()  # idempotent
        store.put("k", io.BytesIO(b"v"))
        assert raw_s3_keys(store) == ["some/prefix/k"]
        assert read_back(store, "k") == b"v"
    finally:
        moto_server.reset()


@pytest.mark.parametrize("url", ["file://relative/path", "s3:///no-bucket"])
def test_open_store_refuses_malformed_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        open_store(Settings(storage_url=url))


# -- store-specific error mapping ----------------------------------------------


def test_s3_unreachable_endpoint_is_a_storage_error(tmp_path: Path) -> None:
    """Connection failures are transient StorageErrors carrying the botocore error as cause."""
    import boto3
    from botocore.config import Config

    from mediamill.schemas.errors import StorageError
    from mediamill.storage.blobs import S3BlobStore

    closed_port_url = "http://127.0.0.1:9"  # discard port: nothing listens on loopback
    client = boto3.client(
        "s3",
        endpoint_url=closed_port_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    store = S3BlobStore("bucket", client=client)

    with pytest.raises(StorageError) as caught:
        store.exists("k")
    assert caught.value.__cause__ is not None
    assert not caught.value.permanent
    with pytest.raises(StorageError):
        store.put("k", io.BytesIO(b"v"))
    with pytest.raises(StorageError), store.open("k"):
        pass
    with pytest.raises(StorageError):
        list(store.list())


def test_s3_missing_bucket_is_not_a_missing_blob(moto_server: Any) -> None:
    from mediamill.schemas.errors import StorageError
    from mediamill.storage.blobs import S3BlobStore

    store = S3BlobStore(
        "no-such-bucket-here",
        endpoint_url=moto_server.endpoint_url,
        access_key_id="testing",
        secret_access_key="testing",
    )
    with pytest.raises(StorageError) as caught:
        store.put("k", io.BytesIO(b"v"))
    assert not isinstance(caught.value, BlobNotFoundError)
    with pytest.raises(StorageError) as caught_get, store.open("k"):
        pass
    assert not isinstance(caught_get.value, BlobNotFoundError)


def test_s3_missing_key_keeps_the_client_error_as_cause(s3_store: BlobStore) -> None:
    with pytest.raises(BlobNotFoundError) as caught:
        s3_store.size("nope")
    assert type(caught.value.__cause__).__name__ == "ClientError"


def test_local_key_that_needs_a_file_as_directory_is_refused(tmp_path: Path) -> None:
    """S3 allows keys `a` and `a/b` side by side; a filesystem cannot. Refused, not corrupted."""
    store = LocalBlobStore(tmp_path / "store")
    store.put("a", io.BytesIO(b"file"))

    with pytest.raises(InvalidRequestError):
        store.put("a/b", io.BytesIO(b"nested"))

    assert read_back(store, "a") == b"file"
    assert_no_leftovers(store, ["a"])
