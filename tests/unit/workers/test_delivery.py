"""Signed delivery URLs (workers/delivery.py): a stored file is signed as the signing mode
says, valid `file_url_expires_s`; a package's HLS and DASH manifests are signed at one
instant for its duration plus the margin; whatever stops a URL being made is a
ModelInvalidError naming what was asked for, the configuration detail going to the log."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker

from mediamill.config.settings import ConfigError, Settings
from mediamill.pipeline.signing import NginxSigner
from mediamill.schemas import keys
from mediamill.schemas.errors import InvalidRequestError, ModelInvalidError
from mediamill.schemas.packages import Package, PackageStatus
from mediamill.storage.blobs import LocalBlobStore
from mediamill.storage.db import Database
from mediamill.workers.delivery import sign_file_url, sign_package_urls
from mediamill.workers.runtime import Runtime

SECRET = "a-signing-secret-of-some-length"
CDN = "https://cdn.example.test"
ASSET_ID = "ab" * 32


def _runtime(db: Database, tmp_path: Path, **settings: Any) -> Runtime:
    config = Settings(_env_file=None, data_dir=tmp_path / "data", **settings)
    return Runtime(config, db, LocalBlobStore(tmp_path / "store"), StubBroker())


@pytest.fixture
def rt(db: Database, tmp_path: Path) -> Runtime:
    return _runtime(db, tmp_path, signing_secret=SECRET, cdn_base_url=CDN, file_url_expires_s=600)


def _package(duration_ms: int | None) -> Package:
    return Package(
        id="row-1",
        asset_id=ASSET_ID,
        package_id="pkg-0123456789abcdef",
        status=PackageStatus.READY,
        segment_s=4,
        duration_ms=duration_ms,
    )


def test_a_file_url_verifies_at_the_edge_until_file_url_expires_s(rt: Runtime) -> None:
    """The nginx URL names the key, carries a token the edge accepts, and expires in 600 s."""
    key = keys.original_key(ASSET_ID)
    before = int(time.time())
    signed = sign_file_url(rt, key)
    after = int(time.time())
    assert before + 600 <= signed.expires_at_epoch_s <= after + 600
    base, query = signed.url.split("?")
    assert base == f"{CDN}/{key}"
    params = dict(part.split("=", 1) for part in query.split("&"))
    assert params["expires"] == str(signed.expires_at_epoch_s)
    edge = NginxSigner(CDN, SECRET)
    assert edge.verify_file(key, params["md5"], signed.expires_at_epoch_s)
    assert not NginxSigner(CDN, "another-secret-entirely").verify_file(
        key, params["md5"], signed.expires_at_epoch_s
    )


def test_an_unsignable_key_is_model_invalid_naming_the_subject(rt: Runtime) -> None:
    """A key the signer refuses: ModelInvalidError naming the subject (default: the key)."""
    with pytest.raises(ModelInvalidError) as e:
        sign_file_url(rt, "originals/../secret", "T-370456")
    assert e.value.message == "unable to sign a url for asset T-370456"
    assert isinstance(e.value.__cause__, InvalidRequestError)
    with pytest.raises(ModelInvalidError) as d:
        sign_file_url(rt, "originals/a b")
    assert d.value.message == "unable to sign a url for asset originals/a b"


def test_signing_not_configured_is_model_invalid_and_the_detail_is_logged(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """cloudfront without its key pair: the caller gets ModelInvalidError, the log the why."""
    rt = _runtime(db, tmp_path, signing_mode="cloudfront", cdn_base_url=CDN)
    with caplog.at_level(logging.ERROR, logger="mediamill.workers.delivery"):
        with pytest.raises(ModelInvalidError) as e:
            sign_file_url(rt, keys.original_key(ASSET_ID), ASSET_ID)
        with pytest.raises(ModelInvalidError) as p:
            sign_package_urls(rt, _package(1000))
    for exc in (e.value, p.value):
        assert exc.message == f"unable to sign a url for asset {ASSET_ID}"
        assert isinstance(exc.__cause__, ConfigError)
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 2 and all("MEDIAMILL_CLOUDFRONT_KEY_PAIR_ID" in m for m in logged)


def test_package_manifests_are_signed_together_for_the_duration_plus_margin(
    db: Database, tmp_path: Path
) -> None:
    """HLS and DASH share one expiry: the package's duration (rounded up) plus the margin."""
    rt = _runtime(
        db,
        tmp_path,
        signing_secret=SECRET,
        cdn_base_url=CDN,
        file_url_expires_s=60,
        package_url_margin_s=100,
    )
    package = _package(duration_ms=3_600_001)  # 3601 s once rounded up
    before = int(time.time())
    urls = sign_package_urls(rt, package)
    after = int(time.time())
    expires = urls.hls.expires_at_epoch_s
    assert urls.dash.expires_at_epoch_s == expires
    assert before + 3701 <= expires <= after + 3701
    prefix = keys.package_prefix(ASSET_ID, package.package_id)
    token = NginxSigner(CDN, SECRET).package_token(ASSET_ID, package.package_id, expires)
    assert urls.hls.url == f"{CDN}/p/{token}/{expires}/{prefix}/master.m3u8"
    assert urls.dash.url == f"{CDN}/p/{token}/{expires}/{prefix}/manifest.mpd"
    unknown = sign_package_urls(rt, _package(duration_ms=None))  # counts as zero seconds
    assert unknown.hls.expires_at_epoch_s - int(time.time()) in range(99, 101)


def test_s3_signing_signs_files_but_refuses_packages(db: Database, tmp_path: Path) -> None:
    """Mode s3 presigns one object; a package cannot be, and says why."""
    rt = _runtime(
        db,
        tmp_path,
        signing_mode="s3",
        storage_url="s3://media-bucket/mm",
        s3_access_key_id="AKIDEXAMPLE",
        s3_secret_access_key="not-a-real-secret",
    )
    signed = sign_file_url(rt, keys.original_key(ASSET_ID))
    assert f"/mm/originals/{ASSET_ID}" in signed.url and "X-Amz-Signature=" in signed.url
    with pytest.raises(ModelInvalidError, match="s3 signing covers files only") as e:
        sign_package_urls(rt, _package(1000))
    assert e.value.message.startswith(f"unable to sign a url for asset {ASSET_ID}: ")
