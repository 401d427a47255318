"""Content Automation API (v0) assets: upload, retrieval through signed CDN URLs,
metadata and stream URLs.

The routes validate, record and enqueue; the worker hashes nothing twice and the
API never decodes media. Retrieval answers 302 to a signed URL when the bytes
asked for exist, or 409 `ModelNotReadyError` with `Retry-After` after starting
(exactly once) what will make them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from mediamill.api.deps import AdminActor, AdminKey, ReadKey, RuntimeDep, SessionDep
from mediamill.api.responses import epoch_to_datetime, redirect_to
from mediamill.schemas.api import AssetMetadata, RenditionQuery, StreamUrls, checked_token
from mediamill.schemas.errors import InvalidRequestError, error_from_name
from mediamill.schemas.media import Asset, AssetStatus
from mediamill.storage.asset_admin import MAX_PAGE_SIZE, AssetKind, AssetSort, list_assets_page
from mediamill.workers.asset_admin import delete_asset
from mediamill.workers.assets import (
    asset_metadata,
    deliver,
    length_mismatch,
    read_asset,
    ready_package,
    store_and_record,
)
from mediamill.workers.delivery import sign_package_urls

log = logging.getLogger(__name__)
router = APIRouter(tags=["content"])

# `POST /v0/assets?wait=` holds the request at most this long, polling this often.
MAX_WAIT_S = 60.0
WAIT_POLL_S = 0.2
MAX_LENGTH_DIGITS = 18  # an `assetLength` below 10**18 bytes fits every integer column
_MIME = re.compile(r"^[\w.+-]{1,63}/[\w.+-]{1,63}$", re.ASCII)

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["assetfile"],
                    "properties": {"assetfile": {"type": "string", "format": "binary"}},
                }
            }
        },
    },
    "parameters": [
        {"name": name, "in": "header", "required": False, "schema": schema}
        for name, schema in (
            ("assetType", {"type": "string", "example": "audio/x-flac"}),
            ("assetLength", {"type": "integer", "minimum": 1}),
            ("legacyTrackToken", {"type": "string", "maxLength": 128}),
        )
    ],
}


def _declared_length(request: Request) -> int | None:
    text = request.headers.get("assetLength", "").strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()):
        raise InvalidRequestError(f"assetLength must be a whole number of bytes, not {text[:40]!r}")
    if len(text.lstrip("0")) > MAX_LENGTH_DIGITS:  # before int(): huge ones are costly
        raise InvalidRequestError(f"assetLength is out of range: {text[:40]!r}")
    return int(text)


def _declared_type(request: Request) -> str | None:
    text = request.headers.get("assetType", "").strip()
    if not text:
        return None
    if not _MIME.match(text):
        raise InvalidRequestError(f"assetType must be a MIME type such as audio/x-flac: {text!r}")
    return text.lower()


def _declared_token(request: Request) -> str | None:
    text = request.headers.get("legacyTrackToken", "")
    return checked_token(text) if text.strip() else None


@router.post("/v0/assets", status_code=201, openapi_extra=_UPLOAD_BODY)
async def upload_asset(
    rt: RuntimeDep,
    request: Request,
    _: AdminKey,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S)] = 0.0,
) -> JSONResponse:
    """Upload an original (multipart field `assetfile`); 201 with the Asset. `?wait=S`
    holds the answer up to S seconds for the analysis (lufs, duration, ...).

    Async on purpose: the key is checked before the body is read (FastAPI would parse a
    declared form first, spooling a stranger's upload to disk), and a waiting request
    holds no thread. Storing runs in the thread pool, streamed from starlette's spooled
    part in the store's chunks: never the whole file in memory.
    """
    declared_type = _declared_type(request)
    declared_length = _declared_length(request)
    token = _declared_token(request)
    form = await request.form(max_files=1, max_fields=16)
    try:
        upload = form.get("assetfile")
        if not isinstance(upload, UploadFile):
            raise InvalidRequestError("a file in the multipart field assetfile is required")
        received = upload.size  # counted by starlette as it spooled the part
        if declared_length is not None and received is not None and received != declared_length:
            raise length_mismatch(declared_length, received)
        if upload.size == 0:
            raise InvalidRequestError("assetfile is empty")
        asset, job_id = await run_in_threadpool(
            store_and_record,
            rt,
            upload.file,
            upload.filename,
            declared_type,
            declared_length,
            token,
        )
    finally:
        await form.close()
    deadline = time.monotonic() + wait
    while asset.status in (AssetStatus.STORED, AssetStatus.ANALYSING):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        await asyncio.sleep(min(WAIT_POLL_S, remaining))
        asset = await run_in_threadpool(read_asset, rt, asset.original_asset_id)
    if asset.status is AssetStatus.FAILED and asset.error:
        raise error_from_name(
            asset.error["name"], f"asset {asset.original_asset_id}: {asset.error['message']}"
        )
    headers = {"Location": f"/v0/assets/{asset.original_asset_id}/metadata"}
    if job_id is not None:
        headers["X-Job-Id"] = job_id
    return JSONResponse(asset.to_json_dict(), status_code=201, headers=headers)


# ---- listing and deleting -------------------------------------------------------------------


@router.get("/v0/assets")
def list_assets(
    s: SessionDep,
    _: ReadKey,
    status: AssetStatus | None = None,
    kind: Annotated[AssetKind | None, Query(alias="type")] = None,
    created_after: Annotated[datetime | None, Query(alias="createdAfter")] = None,
    created_before: Annotated[datetime | None, Query(alias="createdBefore")] = None,
    legacy_token: Annotated[
        str | None, Query(alias="legacyTrackToken", min_length=1, max_length=128)
    ] = None,
    sort: AssetSort = AssetSort.NEWEST,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    cursor: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> JSONResponse:
    """Live assets, newest first (`sort=created`: oldest first), filtered by status,
    type (`audio`, `video`), creation time (`createdAfter` inclusive, `createdBefore`
    exclusive) and legacy track token; `nextCursor` fetches the next page, null on the
    last."""
    assets, next_cursor = list_assets_page(
        s, status=status, kind=kind, created_after=created_after,
        created_before=created_before, legacy_token=legacy_token, sort=sort, limit=limit,
        cursor=cursor,
    )  # fmt: skip
    return JSONResponse({"data": [a.to_json_dict() for a in assets], "nextCursor": next_cursor})


@router.delete("/v0/assets/{assetId}", response_model=Asset)
def remove_asset(
    rt: RuntimeDep,
    asset_id: Annotated[str, Path(alias="assetId")],
    actor: AdminActor,
) -> JSONResponse:
    """Delete the asset: its original, renditions and packages leave the store (their
    signed URLs stop working), the row is marked `deleted` and `asset.deleted` is
    emitted. 409 ConflictError while one of its jobs is under way; deleting it again
    answers the same. The same bytes uploaded again make it live again."""
    return JSONResponse(delete_asset(rt, asset_id, actor).to_json_dict())


# ---- retrieval ------------------------------------------------------------------------------


@router.get("/v0/assets/{assetId}", status_code=302)
def get_asset(
    rt: RuntimeDep,
    asset_id: Annotated[str, Path(alias="assetId")],
    query: Annotated[RenditionQuery, Query()],
    _: ReadKey,
) -> JSONResponse:
    """302 to a signed URL of the original, or of the rendition `bitrate`+`channels`+
    `format` (+`exact`) once ready; 409 ModelNotReadyError with Retry-After until then."""
    return redirect_to(deliver(rt, asset_id, query))


def _etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison against an If-None-Match list (or `*`)."""
    wanted = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == wanted:
            return True
    return False


@router.get("/v0/assets/{assetId}/metadata", response_model=AssetMetadata)
def get_metadata(
    s: SessionDep,
    request: Request,
    asset_id: Annotated[str, Path(alias="assetId")],
    _: ReadKey,
) -> Response:
    """The Asset with its renditions and packages. The ETag is the SHA-256 of the body,
    so `If-None-Match` answers 304 until anything about the asset changes."""
    metadata = asset_metadata(s, asset_id)
    body = json.dumps(metadata.to_json_dict(), separators=(",", ":")).encode()
    etag = f'"{hashlib.sha256(body).hexdigest()}"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


@router.get("/v0/assets/{assetId}/streams", response_model=StreamUrls)
def get_streams(
    rt: RuntimeDep,
    asset_id: Annotated[str, Path(alias="assetId")],
    _: ReadKey,
) -> JSONResponse:
    """Signed HLS and DASH URLs of the asset's newest ready package, valid for its
    duration plus a margin. Without one: 409 ModelNotReadyError with Retry-After, and
    a package job started unless one (or the upload's own job) is under way."""
    _asset, ready = ready_package(rt, asset_id)
    urls = sign_package_urls(rt, ready)  # s3 signing cannot: ModelInvalidError
    body = StreamUrls(
        hls_url=urls.hls.url,
        dash_url=urls.dash.url,
        expires_at=epoch_to_datetime(urls.hls.expires_at_epoch_s),
        package_id=ready.package_id,
    )
    return JSONResponse(body.to_json_dict(), headers={"Cache-Control": "no-store"})
