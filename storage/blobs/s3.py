"""A blob store on S3 or an S3-compatible server (MinIO), through boto3.

Objects live under `s3://bucket/prefix/<key>`. Small writes are one
`put_object`; large ones are a multipart upload of fixed-size parts that is
aborted on any failure, so an object only ever appears complete (S3 publishes a
multipart object at `complete_multipart_upload`). Memory stays bounded by the
multipart threshold plus one part, whatever the object size.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, cast

import botocore.exceptions
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig

from mediamill.config.s3 import s3_client
from mediamill.schemas.errors import (
    BlobNotFoundError,
    ConflictError,
    InvalidRequestError,
    MediaMillError,
    StorageError,
)
from mediamill.storage.blobs.base import (
    MIB,
    BlobStore,
    BucketObject,
    StoredBlob,
    iter_chunks,
    scratch_prefix,
    validate_bucket_key,
    validate_expiry,
    validate_key,
    validate_prefix,
)

log = logging.getLogger(__name__)

MIN_PART_BYTES = 5 * MIB  # S3 refuses smaller parts (except the last one)
MAX_PARTS = 10_000  # S3's limit on parts per multipart upload
MAX_COPY_OBJECT_BYTES = 5 * 1024 * MIB  # the largest object one CopyObject may copy
INCOMING_DIR = ".incoming"  # temporary keys of put_content_addressed, never listed
READ_BUFFER_BYTES = 1 * MIB
# Error codes S3 (and MinIO) use for "no such object"; a missing bucket is a
# configuration problem, not a missing blob, so NoSuchBucket is not here.
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
_PART_CHECKSUMS = (
    "ChecksumCRC32",
    "ChecksumCRC32C",
    "ChecksumCRC64NVME",
    "ChecksumSHA1",
    "ChecksumSHA256",
)
_BOTO_ERRORS: tuple[type[BaseException], ...] = (
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
    Boto3Error,
)


def _error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _translate(exc: BaseException, action: str, key: str) -> MediaMillError:
    """Map a boto error to ours: a missing object is BlobNotFoundError, anything else transient."""
    if isinstance(exc, botocore.exceptions.ClientError) and _error_code(exc) in _NOT_FOUND_CODES:
        return BlobNotFoundError(f"no blob under {key!r}", key=key)
    return StorageError(f"S3 {action} failed for {key!r}: {exc}", key=key, action=action)


@contextlib.contextmanager
def _s3_errors(action: str, key: str) -> Iterator[None]:
    """Translate boto/botocore errors raised in the block; others pass through unchanged."""
    try:
        yield
    except _BOTO_ERRORS as exc:
        raise _translate(exc, action, key) from exc


class _BodyReader(io.RawIOBase):
    """Adapts a botocore StreamingBody to a real raw stream, translating read errors."""

    def __init__(self, body: Any, key: str) -> None:
        super().__init__()
        self._body = body
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._body.read(len(view))
        except (*_BOTO_ERRORS, OSError) as exc:
            raise StorageError(f"S3 read failed for {self._key!r}: {exc}", key=self._key) from exc
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self._body.close()
        super().close()


class S3BlobStore(BlobStore):
    """Blob store on an S3 bucket, optionally under a key prefix (`s3://bucket/prefix`)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        region: str = "us-east-1",
        multipart_threshold_bytes: int = 16 * MIB,
        multipart_chunk_bytes: int = 16 * MIB,
        list_page_size: int = 1000,
        tmp_dir: Path | str | None = None,
        client: Any | None = None,
    ) -> None:
        if not bucket:
            raise ValueError("bucket must be set")
        if multipart_chunk_bytes < MIN_PART_BYTES:
            raise ValueError(f"multipart_chunk_bytes must be at least {MIN_PART_BYTES}")
        if multipart_threshold_bytes < MIN_PART_BYTES:
            raise ValueError(f"multipart_threshold_bytes must be at least {MIN_PART_BYTES}")
        if not 1 <= list_page_size <= 1000:
            raise ValueError("list_page_size must be in 1..1000")
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
        self.bucket = bucket
        self.prefix = prefix
        self.region = region
        self.multipart_threshold_bytes = multipart_threshold_bytes
        self.multipart_chunk_bytes = multipart_chunk_bytes
        self.list_page_size = list_page_size
        self.tmp_dir = Path(tmp_dir) if tmp_dir is not None else None
        self.client = client or s3_client(
            endpoint_url=endpoint_url,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            region=region,
        )
        self._transfer_config = TransferConfig(
            multipart_threshold=multipart_threshold_bytes,
            multipart_chunksize=multipart_chunk_bytes,
        )

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    # -- keys -------------------------------------------------------------

    def _full(self, key: str) -> str:
        """The S3 key of a store key; only ever called with a validated key."""
        return f"{self.prefix}/{key}" if self.prefix else key

    def _full_key(self, key: str) -> str:
        return self._full(validate_key(key))

    # -- bucket -----------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (tests, first deployment)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except botocore.exceptions.ClientError as exc:
            if _error_code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
                raise StorageError(f"cannot check bucket {self.bucket!r}: {exc}") from exc
        except _BOTO_ERRORS as exc:
            raise StorageError(f"cannot check bucket {self.bucket!r}: {exc}") from exc
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self.client.create_bucket(**kwargs)
        except botocore.exceptions.ClientError as exc:
            if _error_code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise StorageError(f"cannot create bucket {self.bucket!r}: {exc}") from exc
        except _BOTO_ERRORS as exc:
            raise StorageError(f"cannot create bucket {self.bucket!r}: {exc}") from exc

    # -- writing ----------------------------------------------------------

    def put(self, key: str, stream: BinaryIO, *, content_type: str | None = None) -> StoredBlob:
        full = self._full_key(key)
        size_bytes, sha256 = self._upload(full, stream, content_type, key)
        return StoredBlob(key=key, size_bytes=size_bytes, sha256=sha256)

    def _upload(
        self, full: str, stream: BinaryIO, content_type: str | None, key: str
    ) -> tuple[int, str]:
        """Stream to `full`: one put_object below the threshold, else a multipart upload."""
        hasher = hashlib.sha256()
        chunks = iter_chunks(stream, self.multipart_chunk_bytes)
        buffered: list[bytes] = []
        buffered_bytes = 0
        for chunk in chunks:
            hasher.update(chunk)
            buffered.append(chunk)
            buffered_bytes += len(chunk)
            if buffered_bytes >= self.multipart_threshold_bytes:
                break
        else:
            # End of stream below the threshold: one request, nothing to clean up.
            extra = {"ContentType": content_type} if content_type else {}
            with _s3_errors("put_object", key):
                self.client.put_object(
                    Bucket=self.bucket, Key=full, Body=b"".join(buffered), **extra
                )
            return buffered_bytes, hasher.hexdigest()

        extra = {"ContentType": content_type} if content_type else {}
        # Declare the part checksum up front, as s3transfer does: a server that sees
        # CRC32 parts on an upload created without an algorithm may refuse them.
        checksum: dict[str, str] = {}
        if self.client.meta.config.request_checksum_calculation == "when_supported":
            checksum = {"ChecksumAlgorithm": "CRC32"}
        with _s3_errors("create_multipart_upload", key):
            created = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=full, **extra, **checksum
            )
        upload_id = created["UploadId"]
        size_bytes = 0
        try:
            parts: list[dict[str, Any]] = []

            def upload(chunk: bytes) -> None:
                number = len(parts) + 1
                if number > MAX_PARTS:
                    raise InvalidRequestError(
                        f"object exceeds {MAX_PARTS} parts of {self.multipart_chunk_bytes} bytes",
                        key=key,
                    )
                with _s3_errors("upload_part", key):
                    response = self.client.upload_part(
                        Bucket=self.bucket,
                        Key=full,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        **checksum,
                    )
                part = {"PartNumber": number, "ETag": response["ETag"]}
                # Echo the part checksums, as CompleteMultipartUpload expects.
                part.update({k: response[k] for k in _PART_CHECKSUMS if k in response})
                parts.append(part)

            while buffered:
                chunk = buffered.pop(0)
                size_bytes += len(chunk)
                upload(chunk)
            for chunk in chunks:
                hasher.update(chunk)
                size_bytes += len(chunk)
                upload(chunk)
            with _s3_errors("complete_multipart_upload", key):
                self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=full,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
        except BaseException:
            self._abort(full, upload_id)
            raise
        return size_bytes, hasher.hexdigest()

    def _abort(self, full: str, upload_id: str) -> None:
        """Abort a multipart upload; a failure here is logged, the original error wins."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
        except Exception:
            log.warning("could not abort multipart upload %s of %s", upload_id, full, exc_info=True)

    def put_content_addressed(
        self, prefix: str, stream: BinaryIO, *, content_type: str | None = None
    ) -> tuple[StoredBlob, bool]:
        validate_key(f"{prefix}/0")  # refuse a bad prefix before reading anything
        tmp_full = self._full(f"{prefix}/{INCOMING_DIR}/{uuid.uuid4().hex}")
        size_bytes, sha256 = self._upload(tmp_full, stream, content_type, prefix)
        key = f"{prefix}/{sha256}"
        full = self._full(key)
        try:
            if self._head(full, key) is not None:
                created = False
            else:
                # Managed copy: server-side, multipart above the threshold (> 5 GB works).
                with _s3_errors("copy", key):
                    self.client.copy(
                        CopySource={"Bucket": self.bucket, "Key": tmp_full},
                        Bucket=self.bucket,
                        Key=full,
                        Config=self._transfer_config,
                    )
                created = True
        finally:
            try:
                self.client.delete_object(Bucket=self.bucket, Key=tmp_full)
            except Exception:
                # Garbage, not corruption: the final key is complete or absent either way.
                log.warning("could not delete temporary object %s", tmp_full, exc_info=True)
        return StoredBlob(key=key, size_bytes=size_bytes, sha256=sha256), created

    # -- reading ----------------------------------------------------------

    def _head(self, full: str, key: str) -> dict[str, Any] | None:
        """head_object, or None when the object does not exist."""
        try:
            with _s3_errors("head_object", key):
                return self.client.head_object(Bucket=self.bucket, Key=full)
        except BlobNotFoundError:
            return None

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        full = self._full_key(key)
        with _s3_errors("get_object", key):
            body = self.client.get_object(Bucket=self.bucket, Key=full)["Body"]
        reader = io.BufferedReader(_BodyReader(body, key), buffer_size=READ_BUFFER_BYTES)
        try:
            yield cast(BinaryIO, reader)
        finally:
            reader.close()

    @contextlib.contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        """Download to a private temporary directory, removed (with the file) on exit."""
        full = self._full_key(key)
        if self.tmp_dir is not None:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
        directory = Path(tempfile.mkdtemp(prefix=scratch_prefix(), dir=self.tmp_dir))
        try:
            # Keep the key's file name: some decoders sniff the extension.
            path = directory / PurePosixPath(key).name
            with _s3_errors("download_file", key):
                self.client.download_file(
                    self.bucket, full, str(path), Config=self._transfer_config
                )
            yield path
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def exists(self, key: str) -> bool:
        return self._head(self._full_key(key), key) is not None

    def size(self, key: str) -> int:
        full = self._full_key(key)
        with _s3_errors("head_object", key):
            return int(self.client.head_object(Bucket=self.bucket, Key=full)["ContentLength"])

    def delete(self, key: str) -> None:
        full = self._full_key(key)
        with _s3_errors("delete_object", key):
            self.client.delete_object(Bucket=self.bucket, Key=full)

    def remove_orphans(self, older_than_s: float, content_prefixes: Iterable[str] = ()) -> int:
        """`<prefix>/.incoming/` objects older than `older_than_s`: a live
        `put_content_addressed` copies and deletes its temporary object moments after
        the upload completes, so these belong to a killed writer. (Unfinished multipart
        uploads are S3's to expire: a bucket lifecycle rule's AbortIncompleteMultipartUpload.)"""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
        removed = 0
        for prefix in content_prefixes:
            incoming = self._full(f"{validate_key(prefix)}/{INCOMING_DIR}/")
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=incoming
            )
            with _s3_errors("list_objects_v2", prefix):
                old = [
                    o["Key"]
                    for page in pages
                    for o in page.get("Contents", [])
                    if o["LastModified"] < cutoff
                ]
            for full in old:
                with _s3_errors("delete_object", full):
                    self.client.delete_object(Bucket=self.bucket, Key=full)
                removed += 1
        return removed

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under `prefix` in S3's (sorted) order, `list_page_size` keys per request."""
        validate_prefix(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket,
            Prefix=self._full(prefix) if prefix else (f"{self.prefix}/" if self.prefix else ""),
            PaginationConfig={"PageSize": self.list_page_size},
        )
        with _s3_errors("list_objects_v2", prefix):
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"][strip:]
                    # Temporary `.incoming/` objects and foreign keys are not blobs.
                    if any(s.startswith(".") or not s for s in key.split("/")):
                        continue
                    yield key

    # -- moving and URLs --------------------------------------------------

    def move(self, src: str, dst: str) -> None:
        """Server-side copy then delete; readers may briefly see both keys, never neither."""
        src_full, dst_full = self._full_key(src), self._full_key(dst)
        if src_full == dst_full:
            if self._head(src_full, src) is None:
                raise BlobNotFoundError(f"no blob under {src!r}", key=src)
            return
        with _s3_errors("copy", src):
            self.client.copy(
                CopySource={"Bucket": self.bucket, "Key": src_full},
                Bucket=self.bucket,
                Key=dst_full,
                Config=self._transfer_config,
            )
        with _s3_errors("delete_object", src):
            self.client.delete_object(Bucket=self.bucket, Key=src_full)

    def snapshot(self, src: str, dst: str) -> int:
        """Server-side copy of the object version under `src` now: its ETag is read
        first and the copy is conditional on it, so the copy is exactly that version
        even if `src` is overwritten meanwhile (ConflictError then: try again).
        Objects up to 5 GiB are one CopyObject; larger ones a multipart copy."""
        src_full, dst_full = self._full_key(src), self._full_key(dst)
        head = self._head(src_full, src)
        if head is None:
            raise BlobNotFoundError(f"no blob under {src!r}", key=src)
        size_bytes, etag = int(head["ContentLength"]), str(head["ETag"])
        source = {"Bucket": self.bucket, "Key": src_full}
        try:
            if size_bytes <= MAX_COPY_OBJECT_BYTES:
                self.client.copy_object(
                    CopySource=source, CopySourceIfMatch=etag, Bucket=self.bucket, Key=dst_full
                )
            else:
                self.client.copy(
                    CopySource=source,
                    Bucket=self.bucket,
                    Key=dst_full,
                    ExtraArgs={"CopySourceIfMatch": etag},
                    Config=self._transfer_config,
                )
        except botocore.exceptions.ClientError as exc:
            if _error_code(exc) in {"PreconditionFailed", "412"}:
                raise ConflictError(
                    f"the object under {src!r} changed while it was copied; try again", key=src
                ) from exc
            raise _translate(exc, "copy", src) from exc
        except _BOTO_ERRORS as exc:
            raise _translate(exc, "copy", src) from exc
        return size_bytes

    def url(self, key: str, expires_in_s: int = 3600) -> str:
        """A presigned GET URL, valid for `expires_in_s` seconds."""
        full = self._full_key(key)
        validate_expiry(expires_in_s)
        with _s3_errors("generate_presigned_url", key):
            return str(
                self.client.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": self.bucket, "Key": full},
                    ExpiresIn=expires_in_s,
                )
            )

    def upload_url(
        self, key: str, expires_in_s: int = 3600, content_type: str | None = None
    ) -> str:
        """A presigned PUT URL for `key`, valid for `expires_in_s` seconds, so a client
        uploads straight to the bucket (no bytes through the API).

        With `content_type` the signature covers it: the PUT must send exactly that
        `Content-Type` header. A presigned PUT cannot cap the body's size; whoever
        accepts the object checks its size afterwards (`size()`).
        """
        full = self._full_key(key)
        validate_expiry(expires_in_s)
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": full}
        if content_type:
            params["ContentType"] = content_type
        with _s3_errors("generate_presigned_url", key):
            return str(
                self.client.generate_presigned_url(
                    "put_object", Params=params, ExpiresIn=expires_in_s, HttpMethod="PUT"
                )
            )

    def head_bucket_object(self, bucket_key: str) -> BucketObject | None:
        """The object someone else wrote under a raw bucket key (prefix included, any
        name `validate_bucket_key` accepts) as S3 reports it, or None when there is
        none: what a bucket notification is checked against."""
        validate_bucket_key(bucket_key)
        head = self._head(bucket_key, bucket_key)
        if head is None:
            return None
        etag = head.get("ETag")
        modified = head.get("LastModified")
        return BucketObject(
            key=bucket_key,
            size_bytes=int(head["ContentLength"]),
            etag=str(etag).strip('"') if etag else None,
            version_id=head.get("VersionId"),
            last_modified=modified.isoformat() if modified is not None else None,
        )

    def import_object(self, bucket_key: str, dst: str, *, version_id: str | None = None) -> int:
        """Server-side copy of an object that someone else wrote into this bucket, named
        by its raw bucket key (prefix included, any name `validate_bucket_key` accepts,
        spaces and all), to the store key `dst`; returns its size in bytes. With
        `version_id`, that version is copied, whatever was written since.

        This is how such an object becomes readable through the store API, whose keys
        are deliberately narrower. BlobNotFoundError when the object is gone.
        """
        validate_bucket_key(bucket_key)
        dst_full = self._full_key(dst)
        source: dict[str, str] = {"Bucket": self.bucket, "Key": bucket_key}
        if version_id and version_id != "null":
            source["VersionId"] = version_id
        with _s3_errors("copy", bucket_key):
            self.client.copy(
                CopySource=source,
                Bucket=self.bucket,
                Key=dst_full,
                Config=self._transfer_config,
            )
        return self.size(dst)
