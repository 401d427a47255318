"""S3 presigned GETs against a real S3 endpoint (moto's server, over HTTP).

A URL signed for a key opens exactly the object that `S3BlobStore` wrote under
that key (prefix included), and its SigV4 query signature checks out when
recomputed independently from the AWS documentation.

moto serves presigned URLs without checking their signature or their expiry, so
expiry is checked here on the URL itself (X-Amz-Date + X-Amz-Expires) and the
signature by recomputation; a real S3 or MinIO refuses the URL after that instant.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import random
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest

from mediamill.config.settings import Settings
from mediamill.pipeline.signing import S3UrlSigner, signer_from_settings
from mediamill.schemas.errors import InvalidRequestError

pytestmark = pytest.mark.integration

KEY = "renditions/abc/mp3-128000-2ch.mp3"
SECRET = "testing"  # the moto fixtures' credentials


def s3_settings(
    moto_server: Any, store: Any, tmp_path: Path, prefix: str | None = None
) -> Settings:
    """Settings of a deployment whose store is `store` (its bucket, its prefix unless given)."""
    path = store.prefix if prefix is None else prefix
    return Settings(
        data_dir=tmp_path / "data",
        signing_mode="s3",
        storage_url=f"s3://{store.bucket}/{path}",
        s3_endpoint_url=moto_server.endpoint_url,
        s3_access_key_id="testing",
        s3_secret_access_key=SECRET,
        s3_region="us-east-1",
    )


def fetch(url: str) -> tuple[int, bytes]:
    """GET over plain HTTP, ignoring any proxy settings of the environment."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def recomputed_signature(url: str, secret: str) -> str:
    """The SigV4 signature of a presigned GET, per the AWS SigV4 documentation
    (canonical request → string to sign → HMAC chain), without botocore."""
    parts = urlsplit(url)
    params = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
    values = dict(params)
    assert values["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert values["X-Amz-SignedHeaders"] == "host"
    query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
        for k, v in sorted(params)
        if k != "X-Amz-Signature"
    )
    canonical = "\n".join(
        ["GET", parts.path, query, f"host:{parts.netloc}", "", "host", "UNSIGNED-PAYLOAD"]
    )
    scope = values["X-Amz-Credential"].split("/", 1)[1]  # date/region/s3/aws4_request
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            values["X-Amz-Date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = f"AWS4{secret}".encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_signed_url_fetches_what_the_store_wrote(
    moto_server: Any, s3_store: Any, tmp_path: Path
) -> None:
    data = random.Random(4).randbytes(300_000)
    s3_store.put(KEY, io.BytesIO(data), content_type="audio/mpeg")
    signer = signer_from_settings(s3_settings(moto_server, s3_store, tmp_path))
    assert isinstance(signer, S3UrlSigner)
    signed = signer.sign_file(KEY, 600)
    assert urlsplit(signed.url).path == f"/{s3_store.bucket}/tenant-a/{KEY}"
    status, body = fetch(signed.url)
    assert status == 200
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()


def test_signed_url_names_the_prefixed_object_only(
    moto_server: Any, s3_store: Any, tmp_path: Path
) -> None:
    s3_store.put(KEY, io.BytesIO(b"under the prefix"))
    no_prefix = signer_from_settings(s3_settings(moto_server, s3_store, tmp_path, prefix=""))
    assert fetch(no_prefix.sign_file(KEY, 600).url)[0] == 404
    with_prefix = signer_from_settings(s3_settings(moto_server, s3_store, tmp_path))
    assert fetch(with_prefix.sign_file(KEY, 600).url) == (200, b"under the prefix")
    assert fetch(with_prefix.sign_file("renditions/abc/other.mp3", 600).url)[0] == 404


def test_signed_url_signature_and_expiry_check_out(
    moto_server: Any, s3_store: Any, tmp_path: Path
) -> None:
    signer = signer_from_settings(s3_settings(moto_server, s3_store, tmp_path))
    before = int(time.time())
    signed = signer.sign_file(KEY, 900)
    after = int(time.time())
    values = dict(parse_qsl(urlsplit(signed.url).query))
    signed_at = int(
        datetime.strptime(values["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    )
    assert before <= signed_at <= after
    assert signed_at + int(values["X-Amz-Expires"]) == signed.expires_at_epoch_s
    assert before + 900 <= signed.expires_at_epoch_s <= after + 900
    assert values["X-Amz-Credential"].startswith("testing/")
    assert "/us-east-1/s3/aws4_request" in values["X-Amz-Credential"]

    assert recomputed_signature(signed.url, SECRET) == values["X-Amz-Signature"]
    assert recomputed_signature(signed.url, "another-secret") != values["X-Amz-Signature"]
    other_key = signed.url.replace("mp3-128000", "mp3-320000")
    assert recomputed_signature(other_key, SECRET) != values["X-Amz-Signature"]
    longer = signed.url.replace("X-Amz-Expires=900", "X-Amz-Expires=9000")
    assert recomputed_signature(longer, SECRET) != values["X-Amz-Signature"]

    # A URL whose moment has passed cannot be made at all.
    with pytest.raises(InvalidRequestError):
        signer.sign_file(KEY, 60, now_s=time.time() - 120)
