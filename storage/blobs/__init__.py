"""Blob stores behind one interface: a local directory (embedded default) or S3/MinIO.

`open_store(settings)` picks the store from `settings.resolved_storage_url`.
boto3 is imported only when an S3 store is built, so local-only commands stay light.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from mediamill.config.settings import ConfigError, Settings
from mediamill.storage.blobs.base import (
    BlobStore,
    BucketObject,
    StoredBlob,
    validate_bucket_key,
    validate_key,
)
from mediamill.storage.blobs.local import BlobWriter, LocalBlobStore

if TYPE_CHECKING:
    from mediamill.storage.blobs.s3 import S3BlobStore


def open_store(settings: Settings) -> BlobStore:
    """The blob store the settings describe: `file:///abs/path` or `s3://bucket[/prefix]`."""
    url = settings.resolved_storage_url
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in {"", "localhost"}:
            raise ConfigError(f"storage URL {url!r}: use file:///absolute/path (three slashes)")
        root = Path(url2pathname(parsed.path))
        if not root.is_absolute():
            raise ConfigError(f"storage URL {url!r}: the path must be absolute")
        return LocalBlobStore(root)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigError(f"storage URL {url!r}: use s3://bucket[/prefix]")
        from mediamill.storage.blobs.s3 import S3BlobStore

        secret = settings.s3_secret_access_key
        return S3BlobStore(
            parsed.netloc,
            unquote(parsed.path).strip("/"),
            endpoint_url=settings.s3_endpoint_url,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret.get_secret_value() if secret is not None else None,
            region=settings.s3_region,
            multipart_threshold_bytes=settings.s3_multipart_threshold_bytes,
            multipart_chunk_bytes=settings.s3_multipart_chunk_bytes,
            # Downloads for decoding go with the stages' scratch space, where a
            # worker's start clears what a killed worker left.
            tmp_dir=settings.resolved_work_dir,
        )
    raise ConfigError(f"storage URL {url!r}: expected file:///path or s3://bucket[/prefix]")


def __getattr__(name: str) -> Any:
    """`S3BlobStore` on first use, so importing this package does not import boto3."""
    if name == "S3BlobStore":
        from mediamill.storage.blobs.s3 import S3BlobStore

        return S3BlobStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BlobStore",
    "BlobWriter",
    "BucketObject",
    "LocalBlobStore",
    "S3BlobStore",
    "StoredBlob",
    "open_store",
    "validate_bucket_key",
    "validate_key",
]
