"""The blob store interface shared by the local-directory and S3/MinIO stores.

Every store streams (bounded memory whatever the object size), hashes while it
writes (one read of the source gives the SHA-256 that content addressing needs)
and publishes atomically: a failed or interrupted write never leaves a partial
object under its key. Keys are validated before they touch a path or a URL.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mediamill.schemas.errors import InvalidRequestError, MediaMillError

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# Reads from a source stream are at most this big unless a store is configured
# otherwise: large enough for throughput, small enough for bounded memory.
DEFAULT_CHUNK_BYTES = 8 * MIB
# S3's own limit on key length; the local store keeps it for identical contracts.
MAX_KEY_BYTES = 1024
# Presigned SigV4 URLs cannot live longer than 7 days.
MAX_URL_EXPIRES_S = 7 * 24 * 3600

_KEY_CHARS = re.compile(r"[A-Za-z0-9._\-=/]+")

# Scratch directories (stage outputs, downloads of objects to decode) are named
# `<SCRATCH_PREFIX><pid>-<random>`, so a worker starting on the same machine can
# remove what a killed one left behind (workers/worker.py).
SCRATCH_PREFIX = "mediamill-"


def scratch_prefix() -> str:
    """The name prefix of this process's scratch directories."""
    return f"{SCRATCH_PREFIX}{os.getpid()}-"


@dataclass(frozen=True)
class StoredBlob:
    """What a write produced: the key, the exact size and the SHA-256 (hex) of the bytes."""

    key: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class BucketObject:
    """An object as the bucket reports it (HEAD): what tells one version of a key from
    another, whatever a notification about it claims."""

    key: str  # the raw bucket key, store prefix included
    size_bytes: int
    etag: str | None
    version_id: str | None  # None (or S3's "null") when the bucket is not versioned
    last_modified: str | None = None

    @property
    def identity(self) -> str:
        """`v:<versionId>` in a versioned bucket, else `e:<ETag>:<size>`."""
        if self.version_id and self.version_id != "null":
            return f"v:{self.version_id}"
        if self.etag:
            return f"e:{self.etag}:{self.size_bytes}"
        return f"m:{self.last_modified}:{self.size_bytes}"

    @property
    def identities(self) -> tuple[str, ...]:
        """`identity`, and the `e:<ETag>` that versions before HEAD-checking recorded."""
        if self.identity.startswith("e:"):
            return (self.identity, f"e:{self.etag}")
        return (self.identity,)


def validate_key(key: str) -> str:
    """Return `key` unchanged if it is a safe object key, else raise InvalidRequestError.

    A key is `/`-separated segments of `[A-Za-z0-9._\\-=]`. Refused: empty keys,
    a leading `/`, empty segments (`a//b`, a trailing `/`), segments starting
    with `.` (so `.` and `..`, and the stores' reserved `.tmp`/`.incoming`
    names), backslashes, NUL, any other character, and keys over 1024 bytes.
    Stores map keys to paths and URLs only after this check.
    """
    if not isinstance(key, str) or not key:
        raise InvalidRequestError("blob key must be a non-empty string", key=key)
    if len(key) > MAX_KEY_BYTES:
        raise InvalidRequestError(f"blob key longer than {MAX_KEY_BYTES} bytes", key=key)
    if _KEY_CHARS.fullmatch(key) is None:
        raise InvalidRequestError("blob key may only contain A-Z a-z 0-9 . _ - = and /", key=key)
    if key.startswith("/"):
        raise InvalidRequestError("blob key must not start with '/'", key=key)
    for segment in key.split("/"):
        if not segment:
            raise InvalidRequestError("blob key must not contain empty segments", key=key)
        if segment.startswith("."):
            raise InvalidRequestError(
                "blob key segments must not start with '.' ('.', '..' and dot-names are refused)",
                key=key,
            )
    return key


_UNSAFE_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


def validate_bucket_key(key: str) -> str:
    """Return `key` if it is a safe name for an object that someone else wrote into the
    bucket (a bucket notification's key), else raise InvalidRequestError.

    The structure rules of `validate_key` (no leading `/`, no empty segments, no segment
    starting with `.`, so no `..`; at most 1024 bytes) with a wider alphabet: any
    character but control characters and backslashes, since people name uploads
    `My Song (final).flac`. Such a key is only ever handed to the S3 API as an object
    name (`S3BlobStore.import_object`), never mapped to a path or used as a store key.
    """
    if not isinstance(key, str) or not key:
        raise InvalidRequestError("object key must be a non-empty string", key=key)
    try:
        size_bytes = len(key.encode("utf-8"))
    except UnicodeEncodeError as exc:  # a lone surrogate from a JSON escape
        raise InvalidRequestError("object key is not valid Unicode", key=key) from exc
    if size_bytes > MAX_KEY_BYTES:
        raise InvalidRequestError(f"object key longer than {MAX_KEY_BYTES} bytes", key=key)
    if _UNSAFE_NAME_CHARS.search(key):
        raise InvalidRequestError(
            "object key must not contain control characters or backslashes", key=key
        )
    if key.startswith("/"):
        raise InvalidRequestError("object key must not start with '/'", key=key)
    for segment in key.split("/"):
        if not segment:
            raise InvalidRequestError("object key must not contain empty segments", key=key)
        if segment.startswith("."):
            raise InvalidRequestError(
                "object key segments must not start with '.' (so no '.' or '..')", key=key
            )
    return key


def validate_prefix(prefix: str) -> str:
    """Return `prefix` if it can start a valid key ("" and a trailing `/` allowed).

    Used by `list()`: a prefix is matched as a plain string prefix of keys, as on
    S3, so `a/b` matches `a/b/c` and `a/bc`.
    """
    if prefix == "":
        return prefix
    body = prefix[:-1] if prefix.endswith("/") else prefix
    if not body:
        raise InvalidRequestError("list prefix must not be '/'", prefix=prefix)
    try:
        validate_key(body)
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"invalid list prefix: {exc.message}", prefix=prefix) from exc
    return prefix


def validate_expiry(expires_in_s: int) -> int:
    """Refuse URL lifetimes that are not positive or exceed what SigV4 allows."""
    if not isinstance(expires_in_s, int) or not 0 < expires_in_s <= MAX_URL_EXPIRES_S:
        raise InvalidRequestError(
            f"expires_in_s must be an integer in 1..{MAX_URL_EXPIRES_S}",
            expires_in_s=expires_in_s,
        )
    return expires_in_s


def read_full_chunk(stream: BinaryIO, chunk_bytes: int) -> bytes:
    """Read up to `chunk_bytes` from `stream`, looping over short reads.

    Returns fewer bytes only at end of stream (so b"" means EOF). Never asks the
    stream for more than `chunk_bytes` in one call.
    """
    first = stream.read(chunk_bytes)
    if not first or len(first) == chunk_bytes:
        return bytes(first or b"")
    buffer = bytearray(first)
    while len(buffer) < chunk_bytes:
        more = stream.read(chunk_bytes - len(buffer))
        if not more:
            break
        buffer += more
    return bytes(buffer)


def skip_bytes(stream: BinaryIO, count: int, chunk_bytes: int = 256 * 1024) -> None:
    """Move `count` bytes into an open object: a seek where the stream can (a local
    file), else reading past them in bounded chunks (a remote store's body)."""
    if count <= 0:
        return
    if stream.seekable():
        stream.seek(count)
        return
    while count > 0 and (chunk := stream.read(min(chunk_bytes, count))):
        count -= len(chunk)


def iter_chunks(stream: BinaryIO, chunk_bytes: int) -> Iterator[bytes]:
    """Yield non-empty chunks of exactly `chunk_bytes` (the last may be shorter)."""
    while True:
        chunk = read_full_chunk(stream, chunk_bytes)
        if not chunk:
            return
        yield chunk
        if len(chunk) < chunk_bytes:
            return


def copy_hashing(
    stream: BinaryIO, write: Callable[[bytes], object], chunk_bytes: int
) -> tuple[int, str]:
    """Stream `stream` into `write` chunk by chunk; return (size_bytes, sha256 hex)."""
    hasher = hashlib.sha256()
    size_bytes = 0
    for chunk in iter_chunks(stream, chunk_bytes):
        hasher.update(chunk)
        size_bytes += len(chunk)
        write(chunk)
    return size_bytes, hasher.hexdigest()


class BlobStore(ABC):
    """Where originals, renditions and packages live, addressed by validated keys.

    Errors: `InvalidRequestError` for a bad key, `BlobNotFoundError` for a missing
    object, `StorageError` (transient, retried) for I/O and network failures.
    Exceptions raised by a caller's source stream propagate unchanged, after the
    store has cleaned up its temporary state.
    """

    @abstractmethod
    def put(self, key: str, stream: BinaryIO, *, content_type: str | None = None) -> StoredBlob:
        """Store `stream` under `key` (replacing any object there), streaming and hashing.

        Atomic: on any failure the previous state of `key` is untouched.
        """

    @abstractmethod
    def put_content_addressed(
        self, prefix: str, stream: BinaryIO, *, content_type: str | None = None
    ) -> tuple[StoredBlob, bool]:
        """Store `stream` under `f"{prefix}/{sha256}"`; return (blob, created).

        The bytes go to a temporary location first (their hash is unknown until
        the end); `created` is False when the key already existed, in which case
        the temporary copy is discarded. Atomic like `put`.
        """

    @abstractmethod
    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A streamed, read-only binary file object; BlobNotFoundError if missing."""

    @abstractmethod
    def local_path(self, key: str) -> AbstractContextManager[Path]:
        """A local file path holding the object, for decoders that need to seek.

        The local store yields its stored file (read it, never write it); remote
        stores download to a temporary file that is removed on exit.
        """

    @abstractmethod
    def exists(self, key: str) -> bool:
        """True when an object is stored under `key`."""

    @abstractmethod
    def size(self, key: str) -> int:
        """The object's size in bytes; BlobNotFoundError if missing."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""

    def discard(self, key: str | None) -> None:
        """Delete a staged copy nothing will read any more (an upload's bytes, a bucket
        object copied in); a failure is logged, not raised: a leftover is only garbage,
        which the caller's outcome must not depend on."""
        if key is None:
            return
        try:
            self.delete(key)
        except MediaMillError:
            log.warning("could not delete staged copy %s", key, exc_info=True)

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with `prefix`, sorted, fetched page by page."""

    @abstractmethod
    def move(self, src: str, dst: str) -> None:
        """Rename `src` to `dst` (replacing `dst`); BlobNotFoundError if `src` is missing."""

    def snapshot(self, src: str, dst: str) -> int:
        """Make `dst` a copy of `src` as it is now, which later writes to `src` do not
        change (replacing `dst`); return its size in bytes. BlobNotFoundError if `src`
        is missing. Stores override this with a server-side copy; this fallback
        streams the bytes through."""
        with self.open(src) as stream:
            return self.put(dst, stream).size_bytes

    def remove_orphans(self, older_than_s: float, content_prefixes: Iterable[str] = ()) -> int:
        """Delete the temporary objects of writes that never finished (their process was
        killed mid-write) once older than `older_than_s`; how many went. They are never
        under a key, so no reader sees them, but nothing else would ever remove them.
        `content_prefixes` are the prefixes given to `put_content_addressed`, under
        which a store may keep its temporary objects."""
        return 0

    @abstractmethod
    def url(self, key: str, expires_in_s: int = 3600) -> str:
        """A direct-download URL (file:// locally, presigned GET on S3).

        Does not check that the object exists (that costs a round trip on S3).
        """
