"""Responses more than one route module answers with."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.responses import JSONResponse

from mediamill.schemas.api import SignedRedirect
from mediamill.workers.delivery import SignedUrl


def epoch_to_datetime(epoch_s: int) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


def redirect_to(signed: SignedUrl) -> JSONResponse:
    """302 to a signed URL. Never cached: the URL expires, the redirect must not outlive it."""
    body = SignedRedirect(url=signed.url, expires_at=epoch_to_datetime(signed.expires_at_epoch_s))
    return JSONResponse(
        body.to_json_dict(),
        status_code=302,
        headers={"Location": signed.url, "Cache-Control": "no-store"},
    )
