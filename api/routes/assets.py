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
import math
import re
import time
from datetime import UTC, datetime
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from mediamill.api.deps import AdminKey, ReadKey, RuntimeDep
from mediamill.schemas import keys
from mediamill.schemas.api import (
    AssetMetadata,
    RenditionQuery,
    SignedRedirect,
    StreamUrls,
    asset_id_or_none,
    checked_token,
)
from mediamill.schemas.errors import (
    InvalidRequestError,
    ModelInvalidError,
    ModelNotFoundError,
    ModelNotReadyError,
    error_from_name,
)
from mediamill.schemas.jobs import JobStage, JobType
from mediamill.schemas.media import Asset, AssetStatus
from mediamill.schemas.packages import Package, PackageStatus
from mediamill.schemas.renditions import RenditionStatus
from mediamill.storage import outbox, repo
from mediamill.storage.asset_jobs import active_jobs, lock_asset
from mediamill.storage.legacy import link_track_token
from mediamill.storage.models import AssetRow, JobRow
from mediamill.workers.delivery import SignedUrl, sign_file_url, sign_package_urls
from mediamill.workers.packages import enqueue_package, package_ladder
from mediamill.workers.queue import send_committed, time_limit_ms
from mediamill.workers.renditions import request_rendition
from mediamill.workers.runtime import Runtime

log = logging.getLogger(__name__)
router = APIRouter(tags=["content"])

# `POST /v0/assets?wait=` holds the request at most this long, polling this often.
MAX_WAIT_S = 60.0
WAIT_POLL_S = 0.2
# Retry-After for work in progress: the benchmarks (docs/performance.md) transcode and package
# at 20x real time or better on two cores; never below or above these bounds.
REALTIME_FACTOR = 20.0
MIN_RETRY_AFTER_S = 2
MAX_RETRY_AFTER_S = 60
MAX_FILENAME_CHARS = 512
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


def retry_after_s(duration_ms: int | None) -> int:
    """Seconds a client should wait before asking again for work on media this long."""
    estimate = math.ceil((duration_ms or 0) / 1000 / REALTIME_FACTOR)
    return max(MIN_RETRY_AFTER_S, min(MAX_RETRY_AFTER_S, estimate))


def load_asset_row(session: Session, asset_id: str) -> AssetRow:
    """The asset, or ModelNotFoundError (also for ids that cannot be a SHA-256, and for
    deleted assets)."""
    folded = asset_id_or_none(asset_id)
    if folded is None:
        raise ModelNotFoundError(f"Original asset not found ({asset_id})", asset_id=asset_id)
    row = repo.get_asset_row(session, folded)
    if row.deleted:
        raise ModelNotFoundError(f"Original asset not found ({asset_id})", asset_id=asset_id)
    return row


def sign_key(rt: Runtime, key: str, subject: str) -> SignedUrl:
    """A signed CDN URL for one stored object; ModelInvalidError when none can be made."""
    return sign_file_url(rt, key, subject)


def _epoch_to_datetime(epoch_s: int) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


def redirect_to(signed: SignedUrl) -> JSONResponse:
    """302 to a signed URL. Never cached: the URL expires, the redirect must not outlive it."""
    body = SignedRedirect(url=signed.url, expires_at=_epoch_to_datetime(signed.expires_at_epoch_s))
    return JSONResponse(
        body.to_json_dict(),
        status_code=302,
        headers={"Location": signed.url, "Cache-Control": "no-store"},
    )


def deliver(rt: Runtime, asset_id: str, query: RenditionQuery) -> SignedUrl:
    """A signed URL for the original (no rendition asked for) or for the rendition asked
    for once it is ready. A missing rendition is requested exactly once (however many
    callers) and reported not ready."""
    with rt.db.session() as s:
        row = load_asset_row(s, asset_id)
        asset_id, status, duration_ms = row.id, row.status, row.duration_ms
        key, error = row.storage_key, (row.error_name, row.error_message)
    spec = query.spec()
    if spec is None:
        return sign_key(rt, key, asset_id)
    if status == AssetStatus.FAILED.value:
        raise ModelInvalidError(
            f"asset {asset_id} cannot be transcoded: its analysis failed ({error[0]}: {error[1]})"
        )
    wait_s = retry_after_s(duration_ms)
    try:
        rendition = request_rendition(rt, asset_id, spec, exact=query.exact)
    except ModelNotReadyError as exc:  # the original is not analysed yet: see it is coming
        ensure_analysis(rt, asset_id)
        raise ModelNotReadyError(exc.message, retry_after_s=wait_s) from exc
    if rendition.status is RenditionStatus.READY and rendition.storage_key:
        return sign_key(rt, rendition.storage_key, asset_id)
    if rendition.status is RenditionStatus.FAILED:
        reason = rendition.error or {}
        raise ModelInvalidError(
            f"asset {asset_id} in requested format could not be made "
            f"({reason.get('name')}: {reason.get('message')})"
        )
    raise ModelNotReadyError(
        f"asset {asset_id} in requested format is not ready", retry_after_s=wait_s
    )


# ---- upload ---------------------------------------------------------------------------------


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


def _length_mismatch(declared: int, received: int) -> InvalidRequestError:
    return InvalidRequestError(
        f"assetLength says {declared} bytes but {received} bytes were received",
        declared=declared,
        received=received,
    )


def store_and_record(
    rt: Runtime,
    stream: BinaryIO,
    filename: str | None,
    declared_type: str | None,
    declared_length: int | None,
    token: str | None,
) -> tuple[Asset, str | None]:
    """Store the bytes under their SHA-256 (hashed while written), record the asset,
    link the token, and start its analysis unless it is done or under way. Returns
    the asset and the id of the job analysing it (None once analysed or failed)."""
    blob, _stored_now = rt.store.put_content_addressed(keys.ORIGINALS, stream)
    if declared_length is not None and blob.size_bytes != declared_length:
        # The bytes stay: content-addressed, they may be a concurrent ingest's of the same
        # bytes whose asset row is not written yet. Unrecorded, they are only reused.
        raise _length_mismatch(declared_length, blob.size_bytes)
    with rt.db.session() as s:
        name = filename[:MAX_FILENAME_CHARS] if filename else None
        created = repo.insert_asset_if_absent(s, blob.sha256, blob.key, blob.size_bytes, name)
        lock_asset(s, blob.sha256)
        row = repo.get_asset_row(s, blob.sha256)
        if created and declared_type:
            row.asset_type = declared_type  # analysis replaces it with the measured type
        if token is not None:
            link_track_token(s, token, row.id)
        if created:
            outbox.add_event(
                s, "asset.created", {"asset": repo.asset_from_row(s, row).to_json_dict()}
            )
        job_id, send = _start_analysis(rt, s, row, filename)
        asset = repo.asset_from_row(s, row)
    if send is not None:
        _send(rt, send)
    return asset, job_id


def _start_analysis(
    rt: Runtime, s: Session, row: AssetRow, filename: str | None
) -> tuple[str | None, JobRow | None]:
    """With the asset's lock held (lock_asset): the job analysing it, created unless one
    is under way. Returns (its id, the new job to send after commit, else None); (None,
    None) once it is analysed or failed. An ingest of the stored bytes: no second copy."""
    if row.status in (AssetStatus.ANALYSED.value, AssetStatus.FAILED.value):
        return None, None
    running = active_jobs(s, row.id, (JobType.INGEST, JobType.ANALYSE))
    if running:
        return running[0].id, None
    job = repo.create_job(
        s,
        JobType.INGEST,
        JobStage.STORE,
        {
            "source": {"kind": "stored", "key": row.storage_key, "sha256": row.id},
            "filename": filename,
            "sizeBytes": row.size_bytes,
            "timeLimitMs": time_limit_ms(rt.settings, None),
        },
        asset_id=row.id,
    )
    return job.id, job


def _send(rt: Runtime, job: JobRow) -> None:
    send_committed(rt, job)  # the row is committed: if the broker refuses, the sweeper sends it


def ensure_analysis(rt: Runtime, asset_id: str) -> str | None:
    """See an asset not analysed yet is on its way: start its analysis unless a job is
    under way. An asset can stay `stored` with none (its ingest was cancelled after the
    bytes were stored); a 409 ModelNotReadyError must then still lead somewhere. Once
    per asset however many ask (the asset's lock decides). The analysing job's id."""
    with rt.db.session() as s:
        lock_asset(s, asset_id)
        row = repo.get_asset_row(s, asset_id)
        job_id, send = _start_analysis(rt, s, row, row.original_filename)
    if send is not None:
        _send(rt, send)
    return job_id


def read_asset(rt: Runtime, asset_id: str) -> Asset:
    with rt.db.session() as s:
        return repo.asset_from_row(s, repo.get_asset_row(s, asset_id))


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
            raise _length_mismatch(declared_length, received)
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
    rt: RuntimeDep,
    request: Request,
    asset_id: Annotated[str, Path(alias="assetId")],
    _: ReadKey,
) -> Response:
    """The Asset with its renditions and packages. The ETag is the SHA-256 of the body,
    so `If-None-Match` answers 304 until anything about the asset changes."""
    with rt.db.session() as s:
        row = load_asset_row(s, asset_id)
        asset = repo.asset_from_row(s, row)
        metadata = AssetMetadata(
            **asset.model_dump(),
            renditions=repo.list_renditions(s, row.id),
            packages=repo.list_packages(s, row.id),
        )
    body = json.dumps(metadata.to_json_dict(), separators=(",", ":")).encode()
    etag = f'"{hashlib.sha256(body).hexdigest()}"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and _etag_matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def _newest(packages: list[Package], status: PackageStatus) -> Package | None:
    chosen = [p for p in packages if p.status is status]
    return max(chosen, key=lambda p: (p.modified or p.created, p.id)) if chosen else None


def _start_packaging(rt: Runtime, asset: Asset, packages: list[Package]) -> None:
    """Start, at most once, what will give the asset a package; raise what stands in the
    way for good. An asset not analysed yet gets its analysis started unless under way
    (the ingest packages at its end). Nothing starts while the upload's own job (which
    packages at its end) or a package job is under way. Otherwise the package's
    renditions are requested (each exactly once, see request_rendition) and, once none
    is still being made, one package job is started."""
    asset_id = asset.original_asset_id
    if asset.status is AssetStatus.FAILED:
        raise ModelInvalidError(f"asset {asset_id} cannot be packaged: its analysis failed")
    if asset.status is not AssetStatus.ANALYSED:
        ensure_analysis(rt, asset_id)  # its ingest packages at its end
        raise ModelNotReadyError(
            f"asset {asset_id} is not analysed yet; it is packaged after",
            retry_after_s=retry_after_s(asset.duration_ms),
        )
    ladder = package_ladder(rt.settings, asset)
    if not ladder:
        raise ModelInvalidError(f"asset {asset_id} has no renditions that can be packaged")
    with rt.db.session() as s:
        if active_jobs(s, asset_id, (JobType.INGEST, JobType.PACKAGE)):
            return
    failed = _newest(packages, PackageStatus.FAILED)
    if failed is not None:  # a permanent failure: packaging again would fail the same way
        reason = failed.error or {}
        raise ModelInvalidError(
            f"asset {asset_id} could not be packaged "
            f"({reason.get('name')}: {reason.get('message')})"
        )
    rungs = [request_rendition(rt, asset_id, spec, exact=False) for spec in ladder]
    if any(r.status in (RenditionStatus.QUEUED, RenditionStatus.RUNNING) for r in rungs):
        return
    if not any(r.status is RenditionStatus.READY for r in rungs):
        raise ModelInvalidError(f"asset {asset_id} has no renditions that can be packaged")
    enqueue_package(rt, asset_id, unless_active=True)


@router.get("/v0/assets/{assetId}/streams", response_model=StreamUrls)
def get_streams(
    rt: RuntimeDep,
    asset_id: Annotated[str, Path(alias="assetId")],
    _: ReadKey,
) -> JSONResponse:
    """Signed HLS and DASH URLs of the asset's newest ready package, valid for its
    duration plus a margin. Without one: 409 ModelNotReadyError with Retry-After, and
    a package job started unless one (or the upload's own job) is under way."""
    with rt.db.session() as s:
        row = load_asset_row(s, asset_id)
        asset = repo.asset_from_row(s, row)
        packages = repo.list_packages(s, row.id)
    asset_id = asset.original_asset_id
    ready = _newest(packages, PackageStatus.READY)
    if ready is None:
        _start_packaging(rt, asset, packages)
        raise ModelNotReadyError(
            f"asset {asset_id} has no stream ready yet",
            retry_after_s=retry_after_s(asset.duration_ms),
        )
    urls = sign_package_urls(rt, ready)  # s3 signing cannot: ModelInvalidError
    body = StreamUrls(
        hls_url=urls.hls.url,
        dash_url=urls.dash.url,
        expires_at=_epoch_to_datetime(urls.hls.expires_at_epoch_s),
        package_id=ready.package_id,
    )
    return JSONResponse(body.to_json_dict(), headers={"Cache-Control": "no-store"})
