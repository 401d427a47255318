"""Signed delivery URLs: nginx `secure_link`, CloudFront, or S3 presigned GETs.

`signer_from_settings` picks one by `MEDIAMILL_SIGNING_MODE`; all three answer the
`UrlSigner` protocol (`sign_file`, `sign_package`).

nginx (`NginxSigner`, compatible with nginx's `secure_link` module):

A file:    {cdn_base}/{key}?md5={token}&expires={epoch}
           token = base64url(MD5("mediamill-file:{expires}/{key} {secret}")), no padding
A package: {cdn_base}/p/{token}/{expires}/{prefix}/master.m3u8
           token = base64url(MD5("mediamill-package:{expires}/{prefix} {secret}"))
           prefix = keys.package_prefix(assetId, packageId)
A package for one playback session:
           {cdn_base}/s/{token}/{expires}/{sessionId}/{prefix}/master.m3u8
           token = base64url(MD5("mediamill-session:{expires}/{sessionId}/{prefix} {secret}"))
           (the session id is signed, and named by every segment request the edge logs)

Each form signs its own domain label (`config/url_tokens.py`), so no token of one
form opens a URL of another.

The package token sits in the path, not the query string, so every relative URI
inside the HLS and DASH manifests (media playlists, init and media segments)
inherits it: a CDN can check each of the hundreds of requests that follow a
manifest, which query-string tokens usually fail to cover.

CloudFront (`CloudFrontUrlSigner`): a file gets a canned policy
(`?Expires=&Signature=&Key-Pair-Id=`); a package gets a custom policy over the
wildcard `{cdn_base}/{prefix}/*` (`?Policy=&Signature=&Key-Pair-Id=`),
and the same policy as the three `CloudFront-*` cookies, which players send with
every segment request (they do not copy a manifest's query string). A session's
package is the wildcard `{cdn_base}/s/{sessionId}/{prefix}/*`: the distribution's
viewer-request function drops `/s/{sessionId}` before the origin (docs/playback.md).

S3 (`S3UrlSigner`): presigned GETs straight from the bucket of `MEDIAMILL_STORAGE_URL`,
files only: a presigned URL covers exactly one object.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlparse

from mediamill.config.s3 import s3_client as make_s3_client
from mediamill.config.settings import ConfigError, Settings
from mediamill.config.url_tokens import TokenDomain, token_input
from mediamill.schemas import keys
from mediamill.schemas.errors import InvalidRequestError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

_KEY = re.compile(r"^[A-Za-z0-9._\-=]+(/[A-Za-z0-9._\-=]+)*$")
_ID = re.compile(r"^[A-Za-z0-9._\-]+$")
_SESSION_ID = re.compile(r"^[A-Za-z0-9\-]{1,64}$")
MANIFESTS = ("master.m3u8", "manifest.mpd")
# SigV4 presigned URLs live at most 7 days (S3 refuses a longer X-Amz-Expires).
S3_MAX_EXPIRES_S = 7 * 24 * 3600
# A signer made without settings caps expiries as Settings.max_url_expires_s does.
DEFAULT_MAX_EXPIRES_S = 7 * 24 * 3600
# CloudFront's URL-safe base64: these three characters cannot appear in a query string.
_CLOUDFRONT_B64 = str.maketrans({"+": "-", "=": "_", "/": "~"})


def _token(text: str) -> str:
    digest = hashlib.md5(text.encode(), usedforsecurity=False).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _checked_key(key: str) -> str:
    if not _KEY.match(key) or any(part in {".", ".."} for part in key.split("/")):
        raise InvalidRequestError(f"not a signable key: {key!r}")
    return key


def _package_prefix(asset_id: str, package_id: str) -> str:
    """`keys.package_prefix`, once both ids are plain identifiers."""
    if not (_ID.match(asset_id) and _ID.match(package_id)):
        raise InvalidRequestError("asset and package ids must be plain identifiers")
    return keys.package_prefix(asset_id, package_id)


def _checked_session(session_id: str) -> str:
    if not _SESSION_ID.match(session_id):
        raise InvalidRequestError("a session id is 1 to 64 letters, digits and dashes")
    return session_id


def _checked_manifest(manifest: str) -> str:
    if manifest not in MANIFESTS:
        raise InvalidRequestError(f"unknown manifest {manifest!r}")
    return manifest


def _expires_at(expires_in_s: int, now_s: float | None, max_expires_s: float) -> int:
    """The epoch second a URL made at `now_s` (default: now) stops working.
    InvalidRequestError outside 1 s to `max_expires_s` (MEDIAMILL_MAX_URL_EXPIRES_S):
    an expiry of years is a leaked URL for years, and one past the edge's 64-bit
    clock no URL at all."""
    if expires_in_s < 1:
        raise InvalidRequestError(f"expiry must be at least 1 s, not {_short(expires_in_s)}")
    if expires_in_s > max_expires_s:
        raise InvalidRequestError(
            f"expiry of {_short(expires_in_s)} s is over the cap of {max_expires_s} s "
            "(MEDIAMILL_MAX_URL_EXPIRES_S)"
        )
    return int((now_s if now_s is not None else time.time()) + expires_in_s)


def _short(number: int) -> str:
    """A number as echoed in an error: at most 24 digits of it."""
    text = str(number)
    return text if len(text) <= 24 else f"{text[:24]}..."


class TokenVerdict(StrEnum):
    """What an edge makes of a signed URL's token: nginx's `$secure_link` is "" when
    WRONG (403), "0" when EXPIRED (410), "1" when VALID."""

    VALID = "valid"
    WRONG = "wrong"
    EXPIRED = "expired"


@dataclass(frozen=True)
class SignedUrl:
    url: str
    expires_at_epoch_s: int


@runtime_checkable
class UrlSigner(Protocol):
    """What the API and CLI need from any signing mode."""

    def sign_file(self, key: str, expires_in_s: int, now_s: float | None = None) -> SignedUrl:
        """A URL for one stored object (a rendition, an original: `schemas/keys.py`)."""
        ...

    def sign_package(
        self,
        asset_id: str,
        package_id: str,
        expires_in_s: int,
        manifest: str = "master.m3u8",
        now_s: float | None = None,
        *,
        session_id: str | None = None,
    ) -> SignedUrl:
        """A URL for a package's HLS (`master.m3u8`) or DASH (`manifest.mpd`) manifest
        that also opens every playlist and segment the manifest refers to; with
        `session_id`, one whose signature covers the playback session too."""
        ...


class NginxSigner:
    """Signs file and package URLs for an nginx edge (`mediamill edge nginx-conf`)."""

    def __init__(
        self, cdn_base: str, secret: str, *, max_expires_s: int = DEFAULT_MAX_EXPIRES_S
    ) -> None:
        self.cdn_base = cdn_base.rstrip("/")
        self.secret = secret
        self.max_expires_s = max_expires_s

    def file_token(self, key: str, expires: int) -> str:
        return _token(token_input(TokenDomain.FILE, expires, _checked_key(key), self.secret))

    def package_token(
        self, asset_id: str, package_id: str, expires: int, session_id: str | None = None
    ) -> str:
        prefix = _package_prefix(asset_id, package_id)
        if session_id is None:
            return _token(token_input(TokenDomain.PACKAGE, expires, prefix, self.secret))
        path = f"{_checked_session(session_id)}/{prefix}"
        return _token(token_input(TokenDomain.SESSION, expires, path, self.secret))

    def sign_file(self, key: str, expires_in_s: int, now_s: float | None = None) -> SignedUrl:
        expires = _expires_at(expires_in_s, now_s, self.max_expires_s)
        token = self.file_token(key, expires)
        return SignedUrl(f"{self.cdn_base}/{key}?md5={token}&expires={expires}", expires)

    def sign_package(
        self,
        asset_id: str,
        package_id: str,
        expires_in_s: int,
        manifest: str = "master.m3u8",
        now_s: float | None = None,
        *,
        session_id: str | None = None,
    ) -> SignedUrl:
        _checked_manifest(manifest)
        expires = _expires_at(expires_in_s, now_s, self.max_expires_s)
        token = self.package_token(asset_id, package_id, expires, session_id)
        prefix = _package_prefix(asset_id, package_id)
        if session_id is None:
            return SignedUrl(f"{self.cdn_base}/p/{token}/{expires}/{prefix}/{manifest}", expires)
        url = f"{self.cdn_base}/s/{token}/{expires}/{session_id}/{prefix}/{manifest}"
        return SignedUrl(url, expires)

    def verify_file(self, key: str, token: str, expires: int, now_s: float | None = None) -> bool:
        """What the edge checks: the token matches and has not expired."""
        return self.check_file(key, token, str(expires), now_s) is TokenVerdict.VALID

    def check_file(
        self, key: str, token: str | None, expires: str | None, now_s: float | None = None
    ) -> TokenVerdict:
        """nginx `secure_link`'s verdict on a file URL's `md5` and `expires` arguments."""
        return self._verdict(lambda e: self.file_token(key, e), token, expires, now_s)

    def check_package(
        self,
        asset_id: str,
        package_id: str,
        token: str | None,
        expires: str | None,
        now_s: float | None = None,
        session_id: str | None = None,
    ) -> TokenVerdict:
        """The verdict on a package URL's path token, for any file under its prefix
        (with `session_id`: on a session's package URL)."""
        return self._verdict(
            lambda e: self.package_token(asset_id, package_id, e, session_id),
            token,
            expires,
            now_s,
        )

    @staticmethod
    def _verdict(
        expected: Callable[[int], str],
        token: str | None,
        expires: str | None,
        now_s: float | None,
    ) -> TokenVerdict:
        """WRONG unless the token is the one for these digits (a later expiry under the
        same token is wrong, not expired); then EXPIRED once the epoch second is past."""
        if not token or not expires or not expires.isascii() or not expires.isdigit():
            return TokenVerdict.WRONG
        if len(expires) > 20:  # past any 64-bit clock, as nginx's parser refuses it
            return TokenVerdict.WRONG
        try:
            wanted = expected(int(expires))
        except InvalidRequestError:  # a key or id no signer would have signed
            return TokenVerdict.WRONG
        if not hmac.compare_digest(token.encode(), wanted.encode()):
            return TokenVerdict.WRONG
        now = now_s if now_s is not None else time.time()
        return TokenVerdict.VALID if int(expires) >= now else TokenVerdict.EXPIRED

    _package_prefix = staticmethod(_package_prefix)


# ---- CloudFront ---------------------------------------------------------------------------


def cloudfront_b64(data: bytes) -> str:
    """Base64 with CloudFront's substitutions (`+`→`-`, `=`→`_`, `/`→`~`)."""
    return base64.b64encode(data).decode().translate(_CLOUDFRONT_B64)


@dataclass(frozen=True)
class SignedCookies:
    """The three cookies CloudFront checks on every request under `path`."""

    cookies: dict[str, str]
    path: str
    expires_at_epoch_s: int


class CloudFrontUrlSigner:
    """CloudFront signed URLs and cookies (RSA, SHA-1 PKCS#1 v1.5, as CloudFront requires)."""

    def __init__(
        self,
        cdn_base: str,
        key_pair_id: str,
        private_key_pem: bytes | str,
        *,
        max_expires_s: int = DEFAULT_MAX_EXPIRES_S,
    ) -> None:
        from botocore.signers import CloudFrontSigner
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        parsed = urlparse(cdn_base)
        if parsed.scheme not in {"http", "https"} or not parsed.netloc:
            raise ConfigError(f"the CloudFront base must be an http(s):// URL, not {cdn_base!r}")
        if not _ID.match(key_pair_id):
            raise ConfigError(f"not a CloudFront key pair id: {key_pair_id!r}")
        pem = private_key_pem.encode() if isinstance(private_key_pem, str) else private_key_pem
        try:
            key = load_pem_private_key(pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ConfigError(
                f"the CloudFront private key is not an unencrypted PEM key: {exc}"
            ) from exc
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError("the CloudFront private key must be an RSA key")
        if key.key_size < 2048:
            raise ConfigError(f"the CloudFront RSA key has {key.key_size} bits; 2048 needed")
        self.cdn_base = cdn_base.rstrip("/")
        self.key_pair_id = key_pair_id
        self.max_expires_s = max_expires_s
        self._key: RSAPrivateKey = key
        self._signer = CloudFrontSigner(key_pair_id, self._rsa_sha1)

    def _rsa_sha1(self, message: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        return self._key.sign(message, padding.PKCS1v15(), hashes.SHA1())

    def sign_file(self, key: str, expires_in_s: int, now_s: float | None = None) -> SignedUrl:
        """A canned-policy URL: `{cdn_base}/{key}?Expires=&Signature=&Key-Pair-Id=`."""
        expires = _expires_at(expires_in_s, now_s, self.max_expires_s)
        url = f"{self.cdn_base}/{_checked_key(key)}"
        return SignedUrl(
            self._signer.generate_presigned_url(url, date_less_than=_utc(expires)), expires
        )

    def _package_path(self, asset_id: str, package_id: str, session_id: str | None) -> str:
        prefix = _package_prefix(asset_id, package_id)
        return prefix if session_id is None else f"s/{_checked_session(session_id)}/{prefix}"

    def package_policy(
        self, asset_id: str, package_id: str, expires: int, session_id: str | None = None
    ) -> str:
        """The custom policy JSON over every object of the package (as delivered to one
        session, with `session_id`), until `expires`."""
        resource = f"{self.cdn_base}/{self._package_path(asset_id, package_id, session_id)}/*"
        return self._signer.build_policy(resource, _utc(expires))

    def sign_package(
        self,
        asset_id: str,
        package_id: str,
        expires_in_s: int,
        manifest: str = "master.m3u8",
        now_s: float | None = None,
        *,
        session_id: str | None = None,
    ) -> SignedUrl:
        """The manifest URL under the package's wildcard policy
        (`?Policy=&Signature=&Key-Pair-Id=`)."""
        _checked_manifest(manifest)
        expires = _expires_at(expires_in_s, now_s, self.max_expires_s)
        policy = self.package_policy(asset_id, package_id, expires, session_id)
        path = self._package_path(asset_id, package_id, session_id)
        url = f"{self.cdn_base}/{path}/{manifest}"
        return SignedUrl(self._signer.generate_presigned_url(url, policy=policy), expires)

    def signed_cookies(
        self,
        asset_id: str,
        package_id: str,
        expires_in_s: int,
        now_s: float | None = None,
        *,
        session_id: str | None = None,
    ) -> SignedCookies:
        """`CloudFront-Policy`, `-Signature` and `-Key-Pair-Id` for the package's wildcard
        policy: DASH (and native HLS) players send cookies with each segment request."""
        expires = _expires_at(expires_in_s, now_s, self.max_expires_s)
        policy = self.package_policy(asset_id, package_id, expires, session_id).encode()
        cookies = {
            "CloudFront-Policy": cloudfront_b64(policy),
            "CloudFront-Signature": cloudfront_b64(self._rsa_sha1(policy)),
            "CloudFront-Key-Pair-Id": self.key_pair_id,
        }
        base_path = urlparse(self.cdn_base).path
        path = f"{base_path}/{self._package_path(asset_id, package_id, session_id)}/"
        return SignedCookies(cookies, path, expires)


def _utc(epoch_s: int) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


# ---- S3 -----------------------------------------------------------------------------------


class S3UrlSigner:
    """Presigned GETs from the bucket the blob store writes to (files only).

    An object key maps exactly as in `S3BlobStore`: `{prefix}/{key}`, or `{key}`
    without a prefix. botocore signs at the real clock, so `now_s` only moves the
    expiry: the URL is signed for the seconds left until `now_s + expires_in_s`.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any,
        max_expires_s: int = DEFAULT_MAX_EXPIRES_S,
    ) -> None:
        if not bucket:
            raise ConfigError("the S3 signer needs a bucket")
        self.max_expires_s = max_expires_s
        prefix = prefix.strip("/")
        self.bucket = bucket
        self.prefix = _checked_key(prefix) if prefix else ""
        self.client = client

    def object_key(self, key: str) -> str:
        """The S3 key under which the blob store keeps `key`."""
        key = _checked_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def sign_file(self, key: str, expires_in_s: int, now_s: float | None = None) -> SignedUrl:
        object_key = self.object_key(key)
        signed_at = int(time.time())
        # S3's own bound first (it also holds where the deployment's cap is higher).
        expires = _expires_at(expires_in_s, now_s, math.inf)
        remaining_s = expires - signed_at
        if not 1 <= remaining_s <= S3_MAX_EXPIRES_S:
            raise InvalidRequestError(
                f"an S3 presigned URL must live 1 s to {S3_MAX_EXPIRES_S} s (7 days) from now, "
                f"not {_short(remaining_s)} s"
            )
        _expires_at(expires_in_s, now_s, self.max_expires_s)
        url = self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": object_key},
            ExpiresIn=remaining_s,
        )
        return SignedUrl(url, expires)

    def sign_package(
        self,
        asset_id: str,
        package_id: str,
        expires_in_s: int,
        manifest: str = "master.m3u8",
        now_s: float | None = None,
        *,
        session_id: str | None = None,
    ) -> SignedUrl:
        raise InvalidRequestError(
            "s3 signing covers files only: a presigned URL opens one object, not the "
            "playlists and segments a manifest refers to (use signing mode nginx or cloudfront)"
        )


# ---- choosing a signer --------------------------------------------------------------------


def signer_from_settings(settings: Settings, *, client: Any | None = None) -> UrlSigner:
    """The signer `MEDIAMILL_SIGNING_MODE` asks for, or ConfigError naming what is missing.
    `client`: the blob store's S3 client, which mode s3 presigns with (else its own)."""
    cap_s = settings.max_url_expires_s
    if settings.file_url_expires_s > cap_s:
        raise ConfigError(
            f"MEDIAMILL_FILE_URL_EXPIRES_S ({settings.file_url_expires_s}) is over "
            f"MEDIAMILL_MAX_URL_EXPIRES_S ({cap_s})"
        )
    mode = settings.signing_mode
    if mode == "nginx":
        return NginxSigner(
            settings.resolved_cdn_base_url, settings.resolved_signing_secret(), max_expires_s=cap_s
        )
    if mode == "cloudfront":
        key_pair_id = settings.cloudfront_key_pair_id
        key_file = settings.cloudfront_private_key_file
        if not key_pair_id or key_file is None:
            missing = [
                name
                for name, value in (
                    ("MEDIAMILL_CLOUDFRONT_KEY_PAIR_ID", key_pair_id),
                    ("MEDIAMILL_CLOUDFRONT_PRIVATE_KEY_FILE", key_file),
                )
                if not value
            ]
            raise ConfigError(f"signing mode cloudfront needs {' and '.join(missing)}")
        path = key_file.expanduser()
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read MEDIAMILL_CLOUDFRONT_PRIVATE_KEY_FILE {str(path)!r}: {exc.strerror}"
            ) from exc
        if settings.cdn_base_url is None:
            raise ConfigError("signing mode cloudfront needs MEDIAMILL_CDN_BASE_URL")
        return CloudFrontUrlSigner(settings.cdn_base_url, key_pair_id, pem, max_expires_s=cap_s)
    if mode == "s3":
        parsed = urlparse(settings.storage_url or "")
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ConfigError(
                "signing mode s3 needs MEDIAMILL_STORAGE_URL=s3://bucket[/prefix] "
                f"(the store is {settings.resolved_storage_url!r})"
            )
        if client is None:
            # A runtime passes its store's client; a lone signer (`mediamill sign`) makes
            # one the same way, so a URL names the object as the store wrote it.
            secret = settings.s3_secret_access_key
            client = make_s3_client(
                endpoint_url=settings.s3_endpoint_url,
                access_key_id=settings.s3_access_key_id,
                secret_access_key=secret.get_secret_value() if secret is not None else None,
                region=settings.s3_region,
            )
        return S3UrlSigner(parsed.netloc, unquote(parsed.path), client=client, max_expires_s=cap_s)
    raise ConfigError(f"unknown signing mode {mode!r}")


def package_expires_in_s(settings: Settings, duration_ms: int | None) -> int:
    """How long a package URL lives: long enough to play it through, plus a margin,
    and never shorter than a file URL, nor longer than the cap. An unknown duration
    counts as zero."""
    duration_s = -(-(duration_ms or 0) // 1000)  # whole seconds, rounded up
    wanted_s = max(settings.file_url_expires_s, duration_s + settings.package_url_margin_s)
    return min(wanted_s, settings.max_url_expires_s)
