"""Signed delivery URLs, compatible with nginx's `secure_link` module.

A file:    {cdn_base}/{key}?md5={token}&expires={epoch}
           token = base64url(MD5("{expires}/{key} {secret}")), no padding
A package: {cdn_base}/p/{token}/{expires}/packages/{assetId}/{packageId}/master.m3u8
           token = base64url(MD5("{expires}/packages/{assetId}/{packageId} {secret}"))

The package token sits in the path, not the query string, so every relative URI
inside the HLS and DASH manifests (media playlists, init and media segments)
inherits it: a CDN can check each of the hundreds of requests that follow a
manifest, which query-string tokens usually fail to cover.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass

from mediamill.schemas.errors import InvalidRequestError

_KEY = re.compile(r"^[A-Za-z0-9._\-=]+(/[A-Za-z0-9._\-=]+)*$")
_ID = re.compile(r"^[A-Za-z0-9._\-]+$")


def _token(text: str) -> str:
    digest = hashlib.md5(text.encode(), usedforsecurity=False).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _checked_key(key: str) -> str:
    if not _KEY.match(key) or any(part in {".", ".."} for part in key.split("/")):
        raise InvalidRequestError(f"not a signable key: {key!r}")
    return key


@dataclass(frozen=True)
class SignedUrl:
    url: str
    expires_at_epoch_s: int


class NginxSigner:
    """Signs file and package URLs for an nginx edge (`mediamill edge nginx-conf`)."""

    def __init__(self, cdn_base: str, secret: str) -> None:
        self.cdn_base = cdn_base.rstrip("/")
        self.secret = secret

    def file_token(self, key: str, expires: int) -> str:
        return _token(f"{expires}/{_checked_key(key)} {self.secret}")

    def package_token(self, asset_id: str, package_id: str, expires: int) -> str:
        return _token(f"{expires}/{self._package_prefix(asset_id, package_id)} {self.secret}")

    def sign_file(self, key: str, expires_in_s: int, now_s: float | None = None) -> SignedUrl:
        expires = int((now_s if now_s is not None else time.time()) + expires_in_s)
        token = self.file_token(key, expires)
        return SignedUrl(f"{self.cdn_base}/{key}?md5={token}&expires={expires}", expires)

    def sign_package(
        self,
        asset_id: str,
        package_id: str,
        expires_in_s: int,
        manifest: str = "master.m3u8",
        now_s: float | None = None,
    ) -> SignedUrl:
        if manifest not in {"master.m3u8", "manifest.mpd"}:
            raise InvalidRequestError(f"unknown manifest {manifest!r}")
        expires = int((now_s if now_s is not None else time.time()) + expires_in_s)
        token = self.package_token(asset_id, package_id, expires)
        prefix = self._package_prefix(asset_id, package_id)
        return SignedUrl(f"{self.cdn_base}/p/{token}/{expires}/{prefix}/{manifest}", expires)

    def verify_file(self, key: str, token: str, expires: int, now_s: float | None = None) -> bool:
        """What the edge checks: the token matches and has not expired."""
        now = now_s if now_s is not None else time.time()
        return expires >= now and hmac.compare_digest(token, self.file_token(key, expires))

    @staticmethod
    def _package_prefix(asset_id: str, package_id: str) -> str:
        if not (_ID.match(asset_id) and _ID.match(package_id)):
            raise InvalidRequestError("asset and package ids must be plain identifiers")
        return f"packages/{asset_id}/{package_id}"
