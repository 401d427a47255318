"""`mediamill sign` as a user runs it: real processes, the embedded database, real keys."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mediamill.pipeline.signing import NginxSigner
from mediamill.storage import repo
from mediamill.storage.db import Database

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "mediamill"]
CDN = "https://cdn.test"
ASSET = "b" * 64
PACKAGE = "pkg-720p"
KEY = "renditions/abc/mp3-128000-2ch.mp3"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
    clean["MEDIAMILL_DATA_DIR"] = str(tmp_path / "data")
    clean["MEDIAMILL_CDN_BASE_URL"] = CDN
    return clean


def mm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)


def add_package(data_dir: Path, duration_ms: int) -> None:
    """A package row (and its asset) in the embedded database, as packaging leaves it."""
    db = Database(f"sqlite:///{data_dir / 'mediamill.db'}")
    try:
        db.ensure_schema()
        with db.session() as s:
            repo.insert_asset_if_absent(s, ASSET, f"originals/{ASSET}", 1234, "in.mp4")
            row = repo.upsert_package(s, ASSET, PACKAGE, ["mp4-720-3000000"], 4, None)
            row.duration_ms = duration_ms
    finally:
        db.dispose()


def nginx_signer(env: dict[str, str]) -> NginxSigner:
    """The signer of the edge: the secret the embedded CLI generated into its data dir."""
    secret = (Path(env["MEDIAMILL_DATA_DIR"]) / "signing-secret").read_text().strip()
    return NginxSigner(CDN, secret)


def test_sign_file_prints_a_url_the_edge_accepts(env: dict[str, str]) -> None:
    before = time.time()
    proc = mm(env, "sign", KEY)
    assert proc.returncode == 0, proc.stderr
    (url,) = proc.stdout.splitlines()
    base, _, query = url.partition("?")
    assert base == f"{CDN}/{KEY}"
    values = dict(parse_qsl(query))
    expires = int(values["expires"])
    assert before + 3600 - 1 <= expires <= time.time() + 3600, "file_url_expires_s by default"
    signer = nginx_signer(env)
    assert signer.verify_file(KEY, values["md5"], expires)
    assert not signer.verify_file("renditions/abc/other.mp3", values["md5"], expires)

    proc = mm(env, "sign", KEY, "--expires-in", "120", "--json")
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    assert set(body) == {"url", "expiresAt"}
    assert f"expires={body['expiresAt']}" in body["url"]
    assert body["expiresAt"] <= time.time() + 120
    token = dict(parse_qsl(urlsplit(body["url"]).query))["md5"]
    assert signer.verify_file(KEY, token, body["expiresAt"])


def test_sign_refuses_bad_requests(env: dict[str, str]) -> None:
    for args in ([], [KEY, "--package", f"{ASSET}/{PACKAGE}"], ["--package", ASSET]):
        proc = mm(env, "sign", *args)
        assert proc.returncode == 1
        assert proc.stderr.startswith("error: InvalidRequestError: "), proc.stderr
    proc = mm(env, "sign", "../secret")
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr.startswith("error: InvalidRequestError: not a signable key")


@pytest.mark.security
def test_sign_refuses_an_expiry_over_the_cap(env: dict[str, str]) -> None:
    """`--expires-in 99999999999` made a URL valid until the year 5195; a larger value
    overflowed into one the edge refuses. Both are a named error now, for packages too."""
    for seconds in ("99999999999", "9" * 40, str(7 * 24 * 3600 + 1)):
        proc = mm(env, "sign", KEY, "--expires-in", seconds)
        assert (proc.returncode, proc.stdout) == (1, "")
        assert proc.stderr.startswith("error: InvalidRequestError: expiry of "), proc.stderr
        assert "MEDIAMILL_MAX_URL_EXPIRES_S" in proc.stderr
    proc = mm(
        {**env, "MEDIAMILL_MAX_URL_EXPIRES_S": "60", "MEDIAMILL_FILE_URL_EXPIRES_S": "60"},
        "sign",
        KEY,
        "--expires-in",
        "61",
    )
    assert proc.returncode == 1 and "over the cap of 60 s" in proc.stderr
    proc = mm(env, "sign", KEY, "--expires-in", str(7 * 24 * 3600), "--json")
    assert proc.returncode == 0, proc.stderr


def test_sign_unknown_package_is_not_found(env: dict[str, str]) -> None:
    proc = mm(env, "sign", "--package", f"{ASSET}/{PACKAGE}")
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr.startswith("error: ModelNotFoundError: "), proc.stderr
    assert PACKAGE in proc.stderr


def test_sign_package_covers_its_duration(env: dict[str, str]) -> None:
    env["MEDIAMILL_PACKAGE_URL_MARGIN_S"] = "1800"
    add_package(Path(env["MEDIAMILL_DATA_DIR"]), duration_ms=7_200_000)
    before = time.time()
    proc = mm(env, "sign", "--package", f"{ASSET}/{PACKAGE}")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["hls", "dash"]
    pattern = re.compile(
        rf"^{re.escape(CDN)}/p/([A-Za-z0-9_-]{{22}})/(\d+)/packages/{ASSET}/{PACKAGE}/(\S+)$"
    )
    hls, dash = (pattern.match(line.split(maxsplit=1)[1]) for line in lines)
    assert hls is not None and dash is not None
    assert (hls[3], dash[3]) == ("master.m3u8", "manifest.mpd")
    assert hls[2] == dash[2]
    expires = int(hls[2])
    assert expires >= int(before) + 7200 + 1800, "duration plus the margin (whole seconds)"
    assert expires <= time.time() + 7200 + 1800
    signer = nginx_signer(env)
    assert hls[1] == dash[1] == signer.package_token(ASSET, PACKAGE, expires)

    proc = mm(env, "sign", "--package", f"{ASSET}/{PACKAGE}", "--json", "--expires-in", "60")
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    assert set(body) == {"hls", "dash", "expiresAt"}
    assert body["expiresAt"] <= time.time() + 60
    assert f"/{body['expiresAt']}/packages/{ASSET}/{PACKAGE}/master.m3u8" in body["hls"]
    assert body["dash"].endswith("/manifest.mpd")


def cf_b64decode(text: str) -> bytes:
    return base64.b64decode(text.replace("-", "+").replace("_", "=").replace("~", "/"))


def test_sign_package_on_cloudfront_prints_cookies(env: dict[str, str], tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "cloudfront.pem"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    env["MEDIAMILL_SIGNING_MODE"] = "cloudfront"
    proc = mm(env, "sign", KEY)
    assert proc.returncode == 1
    assert proc.stderr.startswith(
        "error: ConfigError: signing mode cloudfront needs MEDIAMILL_CLOUDFRONT_KEY_PAIR_ID and "
        "MEDIAMILL_CLOUDFRONT_PRIVATE_KEY_FILE"
    ), proc.stderr

    env["MEDIAMILL_CLOUDFRONT_KEY_PAIR_ID"] = "K2JCJMDEHXQW5F"
    env["MEDIAMILL_CLOUDFRONT_PRIVATE_KEY_FILE"] = str(key_file)
    add_package(Path(env["MEDIAMILL_DATA_DIR"]), duration_ms=90_000)
    proc = mm(env, "sign", "--package", f"{ASSET}/{PACKAGE}", "--json")
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    assert body["hls"].startswith(f"{CDN}/packages/{ASSET}/{PACKAGE}/master.m3u8?Policy=")
    assert body["dash"].startswith(f"{CDN}/packages/{ASSET}/{PACKAGE}/manifest.mpd?Policy=")
    cookies = body["cookies"]
    assert cookies["CloudFront-Key-Pair-Id"] == "K2JCJMDEHXQW5F"
    assert body["cookiePath"] == f"/packages/{ASSET}/{PACKAGE}/"
    policy = cf_b64decode(cookies["CloudFront-Policy"])
    statement = json.loads(policy)["Statement"][0]
    assert statement["Resource"] == f"{CDN}/packages/{ASSET}/{PACKAGE}/*"
    assert statement["Condition"]["DateLessThan"]["AWS:EpochTime"] == body["expiresAt"]
    key.public_key().verify(  # raises InvalidSignature on a bad signature
        cf_b64decode(cookies["CloudFront-Signature"]), policy, padding.PKCS1v15(), hashes.SHA1()
    )
    assert dict(parse_qsl(urlsplit(body["dash"]).query))["Policy"] == cookies["CloudFront-Policy"]

    proc = mm(env, "sign", "--package", f"{ASSET}/{PACKAGE}")
    assert proc.returncode == 0, proc.stderr
    labels = [line.split()[0] for line in proc.stdout.splitlines()]
    assert labels == ["hls", "dash", "cookie", "cookie", "cookie"]
    assert "cookie CloudFront-Key-Pair-Id=K2JCJMDEHXQW5F" in proc.stdout


def test_sign_file_on_s3_opens_the_stored_object(
    env: dict[str, str], moto_server: Any, s3_store: Any
) -> None:
    s3_store.put(KEY, io.BytesIO(b"the stored rendition"))
    env.update(
        MEDIAMILL_SIGNING_MODE="s3",
        MEDIAMILL_STORAGE_URL=f"s3://{s3_store.bucket}/{s3_store.prefix}",
        MEDIAMILL_S3_ENDPOINT_URL=moto_server.endpoint_url,
        MEDIAMILL_S3_ACCESS_KEY_ID="testing",
        MEDIAMILL_S3_SECRET_ACCESS_KEY="testing",
    )
    proc = mm(env, "sign", KEY, "--json")
    assert proc.returncode == 0, proc.stderr
    url = json.loads(proc.stdout)["url"]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as response:
        assert response.read() == b"the stored rendition"

    add_package(Path(env["MEDIAMILL_DATA_DIR"]), duration_ms=90_000)
    proc = mm(env, "sign", "--package", f"{ASSET}/{PACKAGE}")
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr.startswith("error: InvalidRequestError: s3 signing covers files only")
