"""Signed delivery URLs for the API: one stored file, or a package's HLS and DASH
manifests, signed as `MEDIAMILL_SIGNING_MODE` says.

The API may not import `pipeline/` (DESIGN.md's rooms), so it signs through here.
Whatever stops a URL being made (signing not configured, a mode that cannot sign
packages) is a ModelInvalidError: the Content Automation API's answer when it is
"unable to sign a url"; the configuration detail goes to the log, not the caller.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from mediamill.config.settings import ConfigError
from mediamill.pipeline.signing import (
    CloudFrontUrlSigner,
    SignedCookies,
    SignedUrl,
    UrlSigner,
    package_expires_in_s,
)
from mediamill.schemas.errors import InvalidRequestError, ModelInvalidError
from mediamill.schemas.packages import DASH_MANIFEST, MASTER_PLAYLIST, Package
from mediamill.workers.runtime import Runtime

__all__ = [
    "PackageUrls",
    "SignedUrl",
    "sign_file_url",
    "sign_package_urls",
    "sign_session_urls",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackageUrls:
    """A package's manifest URLs, signed at one instant so they expire together; with
    CloudFront, for a session, the cookies its segments need."""

    hls: SignedUrl
    dash: SignedUrl
    cookies: SignedCookies | None = None


def _signer(rt: Runtime, subject: str) -> UrlSigner:
    try:
        return rt.signer()
    except ConfigError as exc:
        log.error("cannot sign URLs: %s", exc)
        raise ModelInvalidError(f"unable to sign a url for asset {subject}") from exc


def sign_file_url(rt: Runtime, key: str, subject: str | None = None) -> SignedUrl:
    """A signed CDN URL for the stored object `key`, valid `file_url_expires_s`.
    `subject` names what the caller asked for in the error (default: the key)."""
    subject = subject or key
    try:
        return _signer(rt, subject).sign_file(key, rt.settings.file_url_expires_s)
    except InvalidRequestError as exc:
        raise ModelInvalidError(f"unable to sign a url for asset {subject}") from exc


def sign_package_urls(rt: Runtime, package: Package) -> PackageUrls:
    """Signed HLS and DASH manifest URLs of `package`, valid for its duration plus
    `package_url_margin_s`. ModelInvalidError when the mode cannot sign packages
    (s3: a presigned URL opens one object, not the segments a manifest names)."""
    asset_id = package.asset_id
    signer = _signer(rt, asset_id)
    now_s = time.time()
    expires_in_s = package_expires_in_s(rt.settings, package.duration_ms)
    try:
        hls = signer.sign_package(
            asset_id, package.package_id, expires_in_s, MASTER_PLAYLIST, now_s
        )
        dash = signer.sign_package(asset_id, package.package_id, expires_in_s, DASH_MANIFEST, now_s)
    except InvalidRequestError as exc:
        raise ModelInvalidError(
            f"unable to sign a url for asset {asset_id}: {exc.message}"
        ) from exc
    return PackageUrls(hls=hls, dash=dash)


def sign_session_urls(
    rt: Runtime, asset_id: str, package_id: str, session_id: str, now_s: float | None = None
) -> PackageUrls:
    """A package's HLS and DASH manifest URLs for one playback session (the session id
    is inside what the signature covers), valid `playback_url_expires_s` (at most the
    cap). ModelInvalidError as `sign_package_urls`."""
    signer = _signer(rt, asset_id)
    now_s = time.time() if now_s is None else now_s
    expires_in_s = min(rt.settings.playback_url_expires_s, rt.settings.max_url_expires_s)
    try:
        hls, dash = (
            signer.sign_package(
                asset_id, package_id, expires_in_s, manifest, now_s, session_id=session_id
            )
            for manifest in (MASTER_PLAYLIST, DASH_MANIFEST)
        )
        cookies = None
        if isinstance(signer, CloudFrontUrlSigner):
            cookies = signer.signed_cookies(
                asset_id, package_id, expires_in_s, now_s, session_id=session_id
            )
    except InvalidRequestError as exc:
        raise ModelInvalidError(
            f"unable to sign a url for asset {asset_id}: {exc.message}"
        ) from exc
    return PackageUrls(hls=hls, dash=dash, cookies=cookies)
