"""Upload sessions (the EncoraStream ingest lifecycle): create a session, PUT the bytes
to its `uploadUrl`, `complete` it to start ingest, watch it, or cancel it.

The bytes never pass through a job message: they land under `keys.upload_key(uploadId)` in
the store (a presigned PUT straight to S3/MinIO, or this API's streaming
`PUT /v0/uploads/{id}/content` on the local store). `complete` checks their size and
freezes them: a server-side snapshot to `keys.frozen_upload_key`, a key no upload
URL writes to (a presigned PUT stays valid until it expires, and cannot be revoked),
and enqueues an ingest of that frozen key, which ingest stores as an original by
content hash. Whatever is PUT after `complete` is never ingested.

The upload URL is a capability to write into the store: only admin callers see it
(on create, and on GET); a read key sees `uploadUrl: null`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from mediamill.api.auth import authenticate, require_admin
from mediamill.api.deps import AdminActor, AdminKey, ReadKey, RuntimeDep
from mediamill.api.idempotency import Record, idempotent_in
from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import (
    ConflictError,
    InvalidRequestError,
    PermissionDeniedError,
)
from mediamill.schemas.uploads import CreateUpload, Upload, UploadStatus
from mediamill.storage import upload_state
from mediamill.storage.blobs import LocalBlobStore
from mediamill.storage.models import JobRow, UploadRow
from mediamill.workers import uploads
from mediamill.workers.runtime import Runtime

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v0/uploads", tags=["uploads"])

# The local PUT path hands the store pieces of about this size (request bodies arrive
# in small pieces; one thread hop per piece would cost more than the write).
WRITE_PIECE_BYTES = 1024 * 1024


def _upload_target(
    request: Request, rt: Runtime, row: UploadRow
) -> tuple[str | None, dict[str, str]]:
    """(uploadUrl, headers to send with the PUT) while bytes may still be uploaded."""
    remaining_s = math.floor((row.upload_url_expires_at - utcnow()).total_seconds())
    if row.status != UploadStatus.AWAITING_UPLOAD.value or remaining_s < 1:
        return None, {}
    headers = {"Content-Type": row.content_type}
    if isinstance(rt.store, LocalBlobStore):
        expires = math.floor(row.upload_url_expires_at.timestamp())
        signature = uploads.local_upload_signature(rt, row.id, expires)
        url = request.url_for("put_upload_content", upload_id=row.id)
        return str(url.include_query_params(expires=expires, signature=signature)), headers
    url = rt.store.upload_url(row.storage_key, remaining_s, row.content_type)  # type: ignore[attr-defined]
    return url, headers


def _view(
    request: Request, rt: Runtime, row: UploadRow, job: JobRow | None, *, admin: bool = True
) -> Upload:
    """The Upload resource; the upload URL (a right to write) only for admin callers."""
    url, headers = _upload_target(request, rt, row) if admin else (None, {})
    return upload_state.upload_from_row(row, job, upload_url=url, upload_headers=headers)


@router.post("", status_code=201, response_model=Upload)
def create_upload(
    rt: RuntimeDep,
    request: Request,
    body: CreateUpload,
    principal: AdminKey,
) -> JSONResponse:
    """Open an upload session: 201 with the `uploadUrl` to PUT the file to (honours
    `Idempotency-Key`: a retry gets the same session, not a second one)."""
    uploads.check_upload_size(rt.settings, body)

    def produce(record: Record) -> tuple[int, Any]:
        with rt.db.session() as s:
            row = uploads.open_upload(rt, s, body)
            answer = _view(request, rt, row, None).to_json_dict()
            record(s, 201, answer)  # the session and its answer commit together
        return 201, answer

    route = "POST /v0/uploads"
    return idempotent_in(request, principal, route, body.model_dump(mode="json"), produce)


@router.get("/{upload_id}", response_model=Upload)
def get_upload(
    rt: RuntimeDep,
    upload_id: str,
    request: Request,
    principal: ReadKey,
) -> JSONResponse:
    """The session: `status`, the ingest job's `transcodeStatus`, `assetId` once known,
    `errorMessage` when it failed. `uploadUrl` (a right to write into the store) is
    shown to admin keys only: a read key must not be able to ingest."""
    row, job = uploads.load_upload(rt, upload_id)
    admin = principal.scope == "admin"
    return JSONResponse(_view(request, rt, row, job, admin=admin).to_json_dict())


async def _signed_or_admin(rt: RuntimeDep, request: Request, upload_id: str) -> None:
    """The upload URL's own signature (`expires`, `signature`: what `uploadUrl`
    carries), else an admin key."""
    query = request.query_params
    if uploads.local_upload_signed(rt, upload_id, query.get("expires"), query.get("signature")):
        return
    if query.get("signature") is not None:
        raise PermissionDeniedError(f"the upload URL of {upload_id} is not signed, or expired")
    await require_admin(await authenticate(request))


@router.put(
    "/{upload_id}/content",
    name="put_upload_content",
    dependencies=[Depends(_signed_or_admin)],
)
async def put_upload_content(rt: RuntimeDep, upload_id: str, request: Request) -> JSONResponse:
    """The local store's upload URL: the request body, streamed to the store piece by
    piece (never whole in memory). The URL's signature is the right to write (an admin
    key also works). More bytes than declared are refused (413); fewer are stored, and
    `complete` then names the mismatch."""
    store = rt.store
    if not isinstance(store, LocalBlobStore):
        raise InvalidRequestError(
            "this deployment's uploads go straight to the bucket: PUT to the session's "
            "presigned uploadUrl"
        )
    row, _job = await run_in_threadpool(uploads.load_upload, rt, upload_id)
    if row.status != UploadStatus.AWAITING_UPLOAD.value:
        raise ConflictError(f"upload {upload_id} is {row.status}; it takes no more bytes")
    if row.upload_url_expires_at <= utcnow():
        raise PermissionDeniedError(
            f"the upload URL of {upload_id} expired at "
            f"{row.upload_url_expires_at.isoformat()}; open a new upload"
        )
    declared = row.size_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > declared:
        raise HTTPException(413, f"{length} bytes sent, {declared} declared for {upload_id}")

    writing = store.open_write(row.storage_key)
    writer = await run_in_threadpool(writing.__enter__)
    try:
        piece = bytearray()
        async for chunk in request.stream():
            if writer.size_bytes + len(piece) + len(chunk) > declared:
                raise HTTPException(413, f"more than the {declared} bytes declared for {upload_id}")
            piece += chunk
            if len(piece) >= WRITE_PIECE_BYTES:
                await run_in_threadpool(writer.write, bytes(piece))
                piece.clear()
        if piece:
            await run_in_threadpool(writer.write, bytes(piece))
    except BaseException as exc:
        await run_in_threadpool(writing.__exit__, type(exc), exc, exc.__traceback__)
        raise
    await run_in_threadpool(writing.__exit__, None, None, None)
    blob = writer.blob
    assert blob is not None  # set on a clean exit
    row, _job = await run_in_threadpool(uploads.load_upload, rt, upload_id)
    if row.status != UploadStatus.AWAITING_UPLOAD.value:  # completed or cancelled meanwhile
        await run_in_threadpool(rt.store.discard, row.storage_key)
        raise ConflictError(
            f"upload {upload_id} became {row.status} while these bytes arrived: it keeps "
            "the bytes it had then, and takes no more"
        )
    return JSONResponse({"id": upload_id, "receivedBytes": blob.size_bytes, "sha256": blob.sha256})


@router.post(
    "/{upload_id}/complete",
    status_code=202,
    response_model=Upload,
    dependencies=[Depends(require_admin)],
)
def complete_upload(rt: RuntimeDep, upload_id: str, request: Request) -> JSONResponse:
    """The bytes are uploaded: check them (present, exactly the declared size), freeze
    them under a key no upload URL writes to, and enqueue the ingest of that key; 202.
    Completing again answers the same session, no second job."""
    row, job = uploads.complete_upload(rt, upload_id)
    return JSONResponse(_view(request, rt, row, job).to_json_dict(), status_code=202)


@router.delete("/{upload_id}", response_model=Upload)
def cancel_upload(
    rt: RuntimeDep, upload_id: str, request: Request, actor: AdminActor
) -> JSONResponse:
    """Cancel a session that is awaiting its bytes or processing (a queued ingest is
    cancelled too) and delete its staged and frozen objects. A completed or failed one
    is a 409; cancelling twice answers the cancelled session."""
    row, job = uploads.cancel_upload(rt, upload_id, actor)
    return JSONResponse(_view(request, rt, row, job).to_json_dict())
