"""nginx secure_link-compatible signatures, checked against an independent computation."""

from __future__ import annotations

import base64
import hashlib
import subprocess

import pytest

from mediamill.pipeline.signing import NginxSigner
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
    token = reference_token(f"{expires}/renditions/abc/mp3-128000-2ch.mp3 {SECRET}")
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
    token = reference_token(f"7300/packages/{'a' * 64}/pkg1 {SECRET}")
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
