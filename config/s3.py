"""The one way a MediaMill process makes an S3 client.

The blob store (`storage/`) writes through it and the S3 signer (`pipeline/`) presigns
with it; a runtime makes one and hands the store's to the signer. It lives here
because both rooms may import `config` and neither may import the other, and a
presigned URL must name an object exactly as the store wrote it (same endpoint,
addressing style and signature version).
"""

from __future__ import annotations

from typing import Any


def s3_client(
    *,
    endpoint_url: str | None,
    access_key_id: str | None,
    secret_access_key: str | None,
    region: str,
) -> Any:
    import boto3  # boto3 takes ~0.3 s to import: only processes that use S3 pay it
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        region_name=region,
        config=Config(
            signature_version="s3v4",
            # MinIO and most S3-compatible servers want path-style URLs.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=10,
            read_timeout=120,
        ),
    )
