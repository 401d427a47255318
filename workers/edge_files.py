"""The embedded edge's use case: which stored object a signed edge path opens.

`mediamill serve` serves the store behind the same two URL forms and checks as the
nginx edge (`config/edge.py`), so the URLs the embedded default prints open with no
configuration:

  a file     {base}/{key}?md5={token}&expires={epoch}
  a package  {base}/p/{token}/{expires}/{package prefix}/{file}
  a session  {base}/s/{token}/{expires}/{sessionId}/{package prefix}/{file}

and refuses what nginx refuses: a dot segment anywhere (the store's `.tmp/` of
in-flight writes, `..`) is not found; a missing or wrong token is
PermissionDeniedError (403), an expired one UrlExpiredError (410); a link in the
local store is never followed (SymlinkRefusedError, 403). The HTTP side (methods,
ranges, CORS, types) is `api/edge.py`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from mediamill.config.settings import ConfigError
from mediamill.pipeline.signing import NginxSigner, TokenVerdict
from mediamill.schemas import keys
from mediamill.schemas.errors import (
    BlobNotFoundError,
    InvalidRequestError,
    PermissionDeniedError,
    UrlExpiredError,
)
from mediamill.storage.blobs.base import validate_key
from mediamill.workers.runtime import Runtime

log = logging.getLogger(__name__)

_ID = r"[A-Za-z0-9._-]+"
_PACKAGE = re.compile(
    rf"^p/(?P<token>[A-Za-z0-9_-]+)/(?P<expires>[0-9]+)"
    rf"/{keys.PACKAGES}/(?P<asset>{_ID})/(?P<package>{_ID})/(?P<file>[A-Za-z0-9._=/-]+)$"
)
_SESSION_PACKAGE = re.compile(
    rf"^s/(?P<token>[A-Za-z0-9_-]+)/(?P<expires>[0-9]+)/(?P<session>[A-Za-z0-9-]{{1,64}})"
    rf"/{keys.PACKAGES}/(?P<asset>{_ID})/(?P<package>{_ID})/(?P<file>[A-Za-z0-9._=/-]+)$"
)


@dataclass(frozen=True)
class EdgeObject:
    """An object the edge may send: its store key, size and a stream at its start."""

    key: str
    size_bytes: int
    stream: BinaryIO


def signed_key(rt: Runtime, path: str, md5: str | None, expires: str | None) -> str:
    """The store key that `path` (the URL path under the edge base, percent-decoded,
    without its leading slash) opens with this token, or the error nginx answers with."""
    if any(segment.startswith(".") for segment in path.split("/")):
        raise BlobNotFoundError("dot paths are never served")
    try:
        signer = rt.signer()
    except ConfigError as exc:
        log.error("the embedded edge cannot check tokens: %s", exc)
        raise PermissionDeniedError("signing is not configured") from exc
    if not isinstance(signer, NginxSigner):
        raise PermissionDeniedError("the embedded edge serves nginx-signed URLs only")
    if path in {"p", "s"} or path.startswith(("p/", "s/")):
        match = (_PACKAGE if path.startswith("p") else _SESSION_PACKAGE).match(path)
        if match is None:
            raise PermissionDeniedError("not a package URL")
        session_id = match.groupdict().get("session")
        verdict = signer.check_package(
            match["asset"], match["package"], match["token"], match["expires"],
            session_id=session_id,
        )
        key = f"{keys.package_prefix(match['asset'], match['package'])}/{match['file']}"
    else:
        verdict = signer.check_file(path, md5, expires)
        key = path
    if verdict is TokenVerdict.WRONG:
        raise PermissionDeniedError("missing or wrong token")
    if verdict is TokenVerdict.EXPIRED:
        raise UrlExpiredError("this signed URL has expired")
    try:
        return validate_key(key)
    except InvalidRequestError as exc:
        raise BlobNotFoundError("no such file") from exc


@contextlib.contextmanager
def open_signed(
    rt: Runtime, path: str, md5: str | None, expires: str | None
) -> Iterator[EdgeObject]:
    """The object a signed edge path names, open for reading (`signed_key`'s errors;
    BlobNotFoundError when nothing, or a directory, is stored there)."""
    key = signed_key(rt, path, md5, expires)
    with rt.store.open(key) as stream:
        yield EdgeObject(key, _size(rt, key, stream), stream)


def _size(rt: Runtime, key: str, stream: BinaryIO) -> int:
    """The open object's size: of the descriptor when it has one (the local store's,
    whatever replaces the key meanwhile), else as the store reports it."""
    try:
        return os.fstat(stream.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        return rt.store.size(key)
