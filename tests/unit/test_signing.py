"""Signed URLs: nginx secure_link tokens and CloudFront signatures, each checked against an
independent computation (openssl; the public key over the policy AWS documents); S3 URL shape
and the choice of signer from settings."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from mediamill.config.s3 import s3_client
from mediamill.config.settings import ConfigError, Settings
from mediamill.pipeline.signing import (
    CloudFrontUrlSigner,
    NginxSigner,
    S3UrlSigner,
    TokenVerdict,
    UrlSigner,
    package_expires_in_s,
    signer_from_settings,
)
from mediamill.schemas.errors import InvalidRequestError

SECRET = "s3cr3t-for-tests"


def reference_token(text: str) -> str:
    """What `openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d =` gives (nginx docs)."""
    raw = subprocess.run(
        ["openssl", "md5", "-binary"], input=text.encode(), capture_output=True, check=True
    ).stdout
    return base64.b64encode(raw).decode().replace("+", "-").replace("/", "_").rstrip("=")


def test_file_url_matches_the_secure_link_recipe() -> None:
    signer = NginxSigner("https://cdn.example.com/", SECRET)
    signed = signer.sign_file("renditions/abc/mp3-128000-2ch.mp3", 3600, now_s=1_700_000_000)
    expires = 1_700_003_600
    token = reference_token(f"mediamill-file:{expires}/renditions/abc/mp3-128000-2ch.mp3 {SECRET}")
    assert signed.url == (
        f"https://cdn.example.com/renditions/abc/mp3-128000-2ch.mp3?md5={token}&expires={expires}"
    )
    assert signed.expires_at_epoch_s == expires
    assert signer.verify_file("renditions/abc/mp3-128000-2ch.mp3", token, expires, now_s=expires)
    assert not signer.verify_file(
        "renditions/abc/mp3-128000-2ch.mp3", token, expires, now_s=expires + 1
    )
    assert not signer.verify_file("renditions/abc/other.mp3", token, expires, now_s=expires)


def test_package_token_is_in_the_path() -> None:
    signer = NginxSigner("https://cdn.example.com", SECRET)
    signed = signer.sign_package("a" * 64, "pkg1", 7200, manifest="manifest.mpd", now_s=100)
    token = reference_token(f"mediamill-package:7300/packages/{'a' * 64}/pkg1 {SECRET}")
    assert (
        signed.url
        == f"https://cdn.example.com/p/{token}/7300/packages/{'a' * 64}/pkg1/manifest.mpd"
    )
    assert "=" not in token and "+" not in token and "/" not in token
    assert hashlib.md5(b"x", usedforsecurity=False)  # md5 is available on this build


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../b", "a b", "a?b", ""])
def test_unsignable_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidRequestError):
        NginxSigner("https://cdn", SECRET).sign_file(key, 60)


def test_package_ids_must_be_plain() -> None:
    with pytest.raises(InvalidRequestError):
        NginxSigner("https://cdn", SECRET).sign_package("a/b", "p", 60)
    with pytest.raises(InvalidRequestError):
        NginxSigner("https://cdn", SECRET).sign_package("a", "p", 60, manifest="x.m3u8")


# ---- CloudFront -----------------------------------------------------------------------------

CDN = "https://d111111abcdef8.cloudfront.net"
KEY_PAIR_ID = "K2JCJMDEHXQW5F"
ASSET = "a" * 64


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem_of(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture
def cloudfront(rsa_key: rsa.RSAPrivateKey) -> CloudFrontUrlSigner:
    return CloudFrontUrlSigner(CDN + "/", KEY_PAIR_ID, pem_of(rsa_key))


def cf_b64decode(text: str) -> bytes:
    """Undo CloudFront's base64 substitutions (AWS docs: `-`→`+`, `_`→`=`, `~`→`/`)."""
    return base64.b64decode(text.replace("-", "+").replace("_", "=").replace("~", "/"))


def verifies(key: rsa.RSAPrivateKey, signature: bytes, message: bytes) -> bool:
    """RSA-SHA1 PKCS#1 v1.5, checked with the public half only (what CloudFront does)."""
    try:
        key.public_key().verify(signature, message, padding.PKCS1v15(), hashes.SHA1())
    except InvalidSignature:
        return False
    return True


def query_of(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True, strict_parsing=True)


def test_cloudfront_file_url_signs_the_canned_policy(
    cloudfront: CloudFrontUrlSigner, rsa_key: rsa.RSAPrivateKey
) -> None:
    key = "renditions/abc/mp3-128000-2ch.mp3"
    signed = cloudfront.sign_file(key, 600, now_s=1_700_000_000.7)
    assert signed.expires_at_epoch_s == 1_700_000_600
    base, _, _ = signed.url.partition("?")
    assert base == f"{CDN}/{key}"
    params = query_of(signed.url)
    assert [name for name, _ in params] == ["Expires", "Signature", "Key-Pair-Id"]
    values = dict(params)
    assert values["Expires"] == "1700000600"
    assert values["Key-Pair-Id"] == KEY_PAIR_ID
    # The canned policy statement, written out as the CloudFront developer guide gives it.
    canned = (
        '{"Statement":[{"Resource":"' + f"{CDN}/{key}" + '",'
        '"Condition":{"DateLessThan":{"AWS:EpochTime":1700000600}}}]}'
    ).encode()
    signature = cf_b64decode(values["Signature"])
    assert verifies(rsa_key, signature, canned)
    # Any change to the resource or the expiry breaks the signature.
    assert not verifies(rsa_key, signature, canned.replace(b"1700000600", b"1700000601"))
    assert not verifies(rsa_key, signature, canned.replace(b"mp3-128000", b"mp3-320000"))
    assert not verifies(rsa.generate_private_key(65537, 2048), signature, canned)


def test_cloudfront_package_url_carries_a_wildcard_policy(
    cloudfront: CloudFrontUrlSigner, rsa_key: rsa.RSAPrivateKey
) -> None:
    hls = cloudfront.sign_package(ASSET, "pkg1", 7200, now_s=100)
    dash = cloudfront.sign_package(ASSET, "pkg1", 7200, manifest="manifest.mpd", now_s=100)
    assert hls.expires_at_epoch_s == dash.expires_at_epoch_s == 7300
    assert hls.url.partition("?")[0] == f"{CDN}/packages/{ASSET}/pkg1/master.m3u8"
    assert dash.url.partition("?")[0] == f"{CDN}/packages/{ASSET}/pkg1/manifest.mpd"
    for signed in (hls, dash):
        params = query_of(signed.url)
        assert [name for name, _ in params] == ["Policy", "Signature", "Key-Pair-Id"]
        values = dict(params)
        policy = cf_b64decode(values["Policy"])
        assert json.loads(policy) == {
            "Statement": [
                {
                    "Resource": f"{CDN}/packages/{ASSET}/pkg1/*",
                    "Condition": {"DateLessThan": {"AWS:EpochTime": 7300}},
                }
            ]
        }
        assert verifies(rsa_key, cf_b64decode(values["Signature"]), policy)
        assert values["Key-Pair-Id"] == KEY_PAIR_ID
        assert not set("+=/") & set(values["Policy"] + values["Signature"])


def test_cloudfront_cookies_carry_the_package_policy(
    cloudfront: CloudFrontUrlSigner, rsa_key: rsa.RSAPrivateKey
) -> None:
    signed = cloudfront.signed_cookies(ASSET, "pkg1", 7200, now_s=100)
    assert set(signed.cookies) == {
        "CloudFront-Policy",
        "CloudFront-Signature",
        "CloudFront-Key-Pair-Id",
    }
    assert signed.expires_at_epoch_s == 7300
    assert signed.path == f"/packages/{ASSET}/pkg1/"
    assert signed.cookies["CloudFront-Key-Pair-Id"] == KEY_PAIR_ID
    url_policy = dict(query_of(cloudfront.sign_package(ASSET, "pkg1", 7200, now_s=100).url))
    assert signed.cookies["CloudFront-Policy"] == url_policy["Policy"]
    policy = cf_b64decode(signed.cookies["CloudFront-Policy"])
    assert json.loads(policy)["Statement"][0]["Resource"] == f"{CDN}/packages/{ASSET}/pkg1/*"
    signature = cf_b64decode(signed.cookies["CloudFront-Signature"])
    assert verifies(rsa_key, signature, policy)
    for value in signed.cookies.values():
        assert not set("+=/;, ") & set(value), "cookie values must not need quoting"


def test_cloudfront_expiry_follows_the_request(cloudfront: CloudFrontUrlSigner) -> None:
    short = cloudfront.signed_cookies(ASSET, "pkg1", 60, now_s=1_000)
    long = cloudfront.signed_cookies(ASSET, "pkg1", 86_400, now_s=1_000)
    for signed, epoch in ((short, 1_060), (long, 87_400)):
        policy = json.loads(cf_b64decode(signed.cookies["CloudFront-Policy"]))
        assert policy["Statement"][0]["Condition"]["DateLessThan"]["AWS:EpochTime"] == epoch
    before = time.time()
    default_now = cloudfront.sign_file("renditions/x.mp3", 300)
    assert before + 300 - 1 <= default_now.expires_at_epoch_s <= time.time() + 300
    with pytest.raises(InvalidRequestError):
        cloudfront.sign_file("renditions/x.mp3", 0)


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../b", "a b", "a?b", ""])
def test_cloudfront_refuses_unsignable_keys(cloudfront: CloudFrontUrlSigner, key: str) -> None:
    with pytest.raises(InvalidRequestError):
        cloudfront.sign_file(key, 60)


def test_cloudfront_refuses_bad_ids_and_manifests(cloudfront: CloudFrontUrlSigner) -> None:
    with pytest.raises(InvalidRequestError):
        cloudfront.sign_package("a/b", "p", 60)
    with pytest.raises(InvalidRequestError):
        cloudfront.sign_package("a", "p*", 60)
    with pytest.raises(InvalidRequestError):
        cloudfront.signed_cookies("a", "../p", 60)
    with pytest.raises(InvalidRequestError):
        cloudfront.sign_package("a", "p", 60, manifest="index.m3u8")


def test_cloudfront_refuses_bad_key_material(rsa_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ConfigError, match="key pair id"):
        CloudFrontUrlSigner(CDN, "K2J/../x", pem_of(rsa_key))
    with pytest.raises(ConfigError, match="PEM"):
        CloudFrontUrlSigner(CDN, KEY_PAIR_ID, b"-----BEGIN PRIVATE KEY-----\nnope\n")
    with pytest.raises(ConfigError, match="RSA"):
        CloudFrontUrlSigner(CDN, KEY_PAIR_ID, pem_of(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(ConfigError, match="2048"):
        CloudFrontUrlSigner(CDN, KEY_PAIR_ID, pem_of(rsa.generate_private_key(65537, 1024)))
    with pytest.raises(ConfigError, match="http"):
        CloudFrontUrlSigner("d111.cloudfront.net", KEY_PAIR_ID, pem_of(rsa_key))
    encrypted = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(ConfigError, match="unencrypted"):
        CloudFrontUrlSigner(CDN, KEY_PAIR_ID, encrypted)


# ---- S3 (URL shape; fetching through a real endpoint is in tests/integration) -------------


def s3_signer(prefix: str = "") -> S3UrlSigner:
    client = s3_client(
        endpoint_url="http://127.0.0.1:9000",
        access_key_id="AKIDEXAMPLE",
        secret_access_key="secret",
        region="us-east-1",
    )
    return S3UrlSigner("media", prefix, client=client)


def test_s3_keys_map_like_the_blob_store() -> None:
    assert s3_signer().object_key("renditions/a/x.mp3") == "renditions/a/x.mp3"
    assert s3_signer("/tenant-a/").object_key("renditions/a/x.mp3") == "tenant-a/renditions/a/x.mp3"
    signed = s3_signer("tenant-a").sign_file("renditions/a/x.mp3", 900)
    parts = urlsplit(signed.url)
    assert (parts.netloc, parts.path) == ("127.0.0.1:9000", "/media/tenant-a/renditions/a/x.mp3")
    values = dict(query_of(signed.url))
    assert values["X-Amz-Expires"] == "900"
    assert values["X-Amz-Credential"].startswith("AKIDEXAMPLE/")
    with pytest.raises(InvalidRequestError):
        s3_signer().sign_file("a/../b", 60)


def test_s3_refuses_packages_and_impossible_expiries() -> None:
    with pytest.raises(InvalidRequestError, match="files only"):
        s3_signer().sign_package(ASSET, "pkg1", 60)
    with pytest.raises(InvalidRequestError, match="7 days"):
        s3_signer().sign_file("renditions/a/x.mp3", 8 * 24 * 3600)
    with pytest.raises(InvalidRequestError):
        s3_signer().sign_file("renditions/a/x.mp3", 60, now_s=time.time() - 3600)
    shifted = s3_signer().sign_file("renditions/a/x.mp3", 600, now_s=time.time() - 300)
    assert 295 <= int(dict(query_of(shifted.url))["X-Amz-Expires"]) <= 300


# ---- choosing a signer from settings ------------------------------------------------------


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("MEDIAMILL_"):
            monkeypatch.delenv(var)


@pytest.mark.usefixtures("no_env")
def test_nginx_is_the_default_mode(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, cdn_base_url="https://cdn.example.com/")
    signer = signer_from_settings(settings)
    assert isinstance(signer, NginxSigner) and isinstance(signer, UrlSigner)
    assert signer.secret == (tmp_path / "signing-secret").read_text().strip()
    assert signer.sign_file("k/x.mp3", 60).url.startswith("https://cdn.example.com/k/x.mp3?md5=")


@pytest.mark.usefixtures("no_env")
def test_cloudfront_mode_needs_its_key(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    base = {"data_dir": tmp_path, "signing_mode": "cloudfront", "cdn_base_url": CDN}
    with pytest.raises(ConfigError) as missing:
        signer_from_settings(Settings(**base))
    assert "MEDIAMILL_CLOUDFRONT_KEY_PAIR_ID" in str(missing.value)
    assert "MEDIAMILL_CLOUDFRONT_PRIVATE_KEY_FILE" in str(missing.value)
    key_file = tmp_path / "cf.pem"
    full = {**base, "cloudfront_key_pair_id": KEY_PAIR_ID, "cloudfront_private_key_file": key_file}
    with pytest.raises(ConfigError, match="cannot read"):
        signer_from_settings(Settings(**full))
    key_file.write_bytes(pem_of(rsa_key))
    signer = signer_from_settings(Settings(**full))
    assert isinstance(signer, CloudFrontUrlSigner) and isinstance(signer, UrlSigner)
    assert signer.sign_file("k/x.mp3", 60).url.startswith(f"{CDN}/k/x.mp3?Expires=")


@pytest.mark.usefixtures("no_env")
def test_s3_mode_needs_an_s3_store(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="s3://"):
        signer_from_settings(Settings(data_dir=tmp_path, signing_mode="s3"))
    signer = signer_from_settings(
        Settings(
            data_dir=tmp_path,
            signing_mode="s3",
            storage_url="s3://media/tenant-a/",
            s3_endpoint_url="http://127.0.0.1:9000",
            s3_access_key_id="AKIDEXAMPLE",
            s3_secret_access_key="secret",
        )
    )
    assert isinstance(signer, S3UrlSigner) and isinstance(signer, UrlSigner)
    assert (signer.bucket, signer.object_key("k/x.mp3")) == ("media", "tenant-a/k/x.mp3")


@pytest.mark.usefixtures("no_env")
def test_package_urls_outlive_the_media() -> None:
    settings = Settings(file_url_expires_s=3600, package_url_margin_s=600)
    assert package_expires_in_s(settings, 5_400_000) == 5_400 + 600
    assert package_expires_in_s(settings, 5_400_001) == 5_401 + 600, "rounded up"
    assert package_expires_in_s(settings, 60_000) == 3600, "never below a file URL"
    assert package_expires_in_s(settings, None) == 3600


# ---- expiry caps (MEDIAMILL_MAX_URL_EXPIRES_S) ----------------------------------------------

WEEK_S = 7 * 24 * 3600


def every_signer(rsa_key: rsa.RSAPrivateKey, cap_s: int) -> list[UrlSigner]:
    return [
        NginxSigner(CDN, SECRET, max_expires_s=cap_s),
        CloudFrontUrlSigner(CDN, KEY_PAIR_ID, pem_of(rsa_key), max_expires_s=cap_s),
        S3UrlSigner("media", client=s3_signer().client, max_expires_s=cap_s),
    ]


@pytest.mark.security
@pytest.mark.parametrize("asked_s", [WEEK_S + 1, 99_999_999_999, 10**40])
def test_every_signer_refuses_an_expiry_over_the_cap(
    rsa_key: rsa.RSAPrivateKey, asked_s: int
) -> None:
    """An expiry of years (or past the edge's clock) is a named 400 from every signer,
    for files and packages; the error echoes at most 24 digits of it."""
    for signer in every_signer(rsa_key, WEEK_S):
        # S3 refuses past 7 days by itself, before the deployment's cap.
        named = "7 days" if isinstance(signer, S3UrlSigner) else "MEDIAMILL_MAX_URL_EXPIRES_S"
        with pytest.raises(InvalidRequestError, match=named) as e:
            signer.sign_file("renditions/a/x.mp3", asked_s)
        assert len(e.value.message) < 120
        if not isinstance(signer, S3UrlSigner):
            with pytest.raises(InvalidRequestError, match="over the cap of 604800 s"):
                signer.sign_package(ASSET, "p1", asked_s)


def test_the_cap_itself_signs_and_the_edge_accepts_it(rsa_key: rsa.RSAPrivateKey) -> None:
    now_s = time.time()
    for signer in every_signer(rsa_key, WEEK_S):
        signed = signer.sign_file("renditions/a/x.mp3", WEEK_S, now_s=now_s)
        assert signed.expires_at_epoch_s == int(now_s + WEEK_S)
    nginx = NginxSigner(CDN, SECRET, max_expires_s=WEEK_S)
    signed = nginx.sign_file("renditions/a/x.mp3", WEEK_S)
    token = dict(parse_qsl(urlsplit(signed.url).query))["md5"]
    assert nginx.verify_file("renditions/a/x.mp3", token, signed.expires_at_epoch_s)


def test_a_cap_below_s3s_own_bound_holds_for_s3(rsa_key: rsa.RSAPrivateKey) -> None:
    s3 = every_signer(rsa_key, 3600)[2]
    s3.sign_file("renditions/a/x.mp3", 3600)
    with pytest.raises(InvalidRequestError, match="over the cap of 3600 s"):
        s3.sign_file("renditions/a/x.mp3", 3601)


def test_signers_from_settings_take_the_configured_cap() -> None:
    settings = Settings(
        _env_file=None, signing_secret=SECRET, max_url_expires_s=600, file_url_expires_s=600
    )
    signer = signer_from_settings(settings)
    signer.sign_file("renditions/a/x.mp3", 600)
    with pytest.raises(InvalidRequestError, match="over the cap of 600 s"):
        signer.sign_file("renditions/a/x.mp3", 601)
    with pytest.raises(ConfigError, match=r"MEDIAMILL_FILE_URL_EXPIRES_S \(3600\) is over"):
        signer_from_settings(Settings(_env_file=None, signing_secret=SECRET, max_url_expires_s=60))


def test_a_package_of_long_media_is_signed_up_to_the_cap() -> None:
    settings = Settings(_env_file=None, max_url_expires_s=7200, package_url_margin_s=3600)
    assert package_expires_in_s(settings, 1_000) == 1 + 3600
    assert package_expires_in_s(settings, 10 * 3600 * 1000) == 7200
    assert package_expires_in_s(settings, 30 * 60 * 1000) == 30 * 60 + 3600


def test_session_urls_sign_the_session_with_the_package() -> None:
    """nginx: the session id is in the signed text (its own label); CloudFront: in the
    wildcard policy's resource, for URLs and cookies alike."""
    signer = NginxSigner("https://cdn.example.com", "s3cret-s3cret-s3cret")
    sid = "1ffd059c-17ea-40a8-8aef-70fd0307db82"
    signed = signer.sign_package(ASSET, "pkg1", 600, now_s=100, session_id=sid)
    path = urlsplit(signed.url).path.split("/")
    assert path[1] == "s" and path[4] == sid and path[-1] == "master.m3u8"
    token, expires = path[2], path[3]
    expected = base64.urlsafe_b64encode(
        hashlib.md5(
            f"mediamill-session:700/{sid}/packages/{ASSET}/pkg1 s3cret-s3cret-s3cret".encode()
        ).digest()
    ).rstrip(b"=").decode()
    assert (token, expires) == (expected, "700")
    assert signer.check_package(ASSET, "pkg1", token, expires, 100, sid) is TokenVerdict.VALID
    other = sid.replace("1ffd", "2ffd")
    assert signer.check_package(ASSET, "pkg1", token, expires, 100, other) is TokenVerdict.WRONG
    assert signer.check_package(ASSET, "pkg1", token, expires, 100) is TokenVerdict.WRONG
    with pytest.raises(InvalidRequestError):
        signer.sign_package(ASSET, "pkg1", 600, session_id="../x")


def test_cloudfront_session_urls_and_cookies_cover_the_session_prefix(
    cloudfront: CloudFrontUrlSigner, rsa_key: rsa.RSAPrivateKey
) -> None:
    sid = "1ffd059c-17ea-40a8-8aef-70fd0307db82"
    prefix = f"{CDN}/s/{sid}/packages/{ASSET}/pkg1"
    hls = cloudfront.sign_package(ASSET, "pkg1", 7200, now_s=100, session_id=sid)
    assert hls.url.partition("?")[0] == f"{prefix}/master.m3u8"
    values = dict(query_of(hls.url))
    policy = cf_b64decode(values["Policy"])
    assert json.loads(policy)["Statement"][0]["Resource"] == f"{prefix}/*"
    assert verifies(rsa_key, cf_b64decode(values["Signature"]), policy)
    cookies = cloudfront.signed_cookies(ASSET, "pkg1", 7200, now_s=100, session_id=sid)
    assert cookies.path == f"/s/{sid}/packages/{ASSET}/pkg1/"
    assert cookies.cookies["CloudFront-Policy"] == values["Policy"]
