"""Upload session use cases (the EncoraStream ingest lifecycle): open a session,
complete it (check and freeze the bytes, then enqueue their ingest) and cancel it.

The bytes never pass through a job message: they land under `keys.upload_key(id)`
in the store. `complete` checks their size and freezes them: a server-side snapshot
to `keys.frozen_upload_key`, a key no upload URL writes to (a presigned PUT stays
valid until it expires, and cannot be revoked), and enqueues an ingest of that
frozen key. Whatever is PUT after `complete` is never ingested.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from datetime import timedelta

from sqlalchemy.orm import Session

from mediamill.config.settings import Settings
from mediamill.schemas import keys
from mediamill.schemas.audit import AuditAction, AuditActor
from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import BlobNotFoundError, ConflictError, InvalidRequestError
from mediamill.schemas.job_params import IngestParams, StoreSource
from mediamill.schemas.uploads import CreateUpload, UploadStatus
from mediamill.storage import audit, jobs_admin, upload_state
from mediamill.storage import uploads as upload_db
from mediamill.storage.models import JobRow, UploadRow
from mediamill.workers.queue import send_committed
from mediamill.workers.runtime import Runtime
from mediamill.workers.submit import ingest_job_in


def check_upload_size(settings: Settings, body: CreateUpload) -> None:
    """InvalidRequestError when the declared size is over the limit of one upload
    (checked before anything is written, an idempotency key included)."""
    limit = settings.upload_max_bytes
    if body.size_bytes > limit:
        raise InvalidRequestError(
            f"sizeBytes {body.size_bytes} is over the {limit}-byte limit of one upload "
            "(MEDIAMILL_UPLOAD_MAX_BYTES)"
        )


def open_upload(rt: Runtime, session: Session, body: CreateUpload) -> UploadRow:
    """A new session awaiting its bytes, in the caller's transaction (so that an
    idempotent answer commits with it); InvalidRequestError over the size limit."""
    check_upload_size(rt.settings, body)
    upload_id = str(uuid.uuid4())
    return upload_db.create_upload(
        session,
        upload_id=upload_id,
        filename=body.filename,
        content_type=body.content_type,
        size_bytes=body.size_bytes,
        asset_type=body.asset_type or body.content_type,
        legacy_track_token=body.legacy_track_token,
        storage_key=keys.upload_key(upload_id),
        upload_url_expires_at=utcnow() + timedelta(seconds=rt.settings.upload_url_expires_s),
    )


def local_upload_signature(rt: Runtime, upload_id: str, expires_epoch_s: int) -> str:
    """The signature of a local store's upload URL: like an S3 presigned PUT, the URL
    alone (with `uploadHeaders`) is the right to write this session's bytes until it
    expires, so a browser or a curl command needs no API key. HMAC-SHA256 over the
    session and its expiry, under the signing secret."""
    message = f"mediamill-upload:{upload_id}:{expires_epoch_s}".encode()
    secret = rt.settings.resolved_signing_secret().encode()
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def local_upload_signed(
    rt: Runtime, upload_id: str, expires: str | None, signature: str | None
) -> bool:
    """Whether a local upload URL's `expires` and `signature` are this session's own
    and not expired."""
    if not expires or not signature or not expires.isdigit() or len(expires) > 20:
        return False
    wanted = local_upload_signature(rt, upload_id, int(expires))
    return hmac.compare_digest(signature.encode(), wanted.encode()) and int(expires) >= time.time()


def load_upload(rt: Runtime, upload_id: str) -> tuple[UploadRow, JobRow | None]:
    """The session and its job, with the job's end recorded on the session
    (ModelNotFoundError for an unknown id)."""
    with rt.db.session() as s:
        row = upload_db.get_upload(s, upload_id)
        job = upload_db.job_of(s, row)
        return upload_state.settle_upload(s, row, job), job


def complete_upload(rt: Runtime, upload_id: str) -> tuple[UploadRow, JobRow | None]:
    """Check the uploaded bytes (present, exactly the declared size), freeze them and
    enqueue their ingest; the session and its job. Completing again answers the same
    session, no second job. ConflictError when cancelled or nothing (or the wrong
    size) was uploaded."""
    row, job = load_upload(rt, upload_id)
    if row.status == UploadStatus.CANCELLED.value:
        raise ConflictError(f"upload {upload_id} was cancelled; open a new upload")
    if row.status != UploadStatus.AWAITING_UPLOAD.value:
        return row, job
    frozen = _freeze(rt, row)
    new_job: JobRow | None = None
    if frozen is not None:
        try:
            with rt.db.session() as s:
                if upload_db.start_processing(s, upload_id):  # first write: decides the race
                    new_job = ingest_job_in(s, rt.settings, _ingest_params(row, frozen))
                    upload_db.attach_job(s, upload_id, new_job.id)
        except BaseException:
            rt.store.discard(frozen)
            raise
    if new_job is not None:
        send_committed(rt, new_job)
        rt.store.discard(row.storage_key)  # frozen: what lands here from now on is ignored
    else:
        rt.store.discard(frozen)  # another complete won the race: its copy is the one
    row, job = load_upload(rt, upload_id)
    if row.status == UploadStatus.CANCELLED.value:
        raise ConflictError(f"upload {upload_id} was cancelled; open a new upload")
    if row.status == UploadStatus.AWAITING_UPLOAD.value:
        raise ConflictError(
            f"nothing was uploaded for {upload_id}: PUT the file to its uploadUrl first"
        )
    return row, job


def cancel_upload(
    rt: Runtime, upload_id: str, actor: AuditActor | None = None
) -> tuple[UploadRow, JobRow | None]:
    """Cancel a session awaiting its bytes or processing (a queued ingest is cancelled
    too) and delete its staged and frozen objects; cancelling twice answers the
    cancelled session. ConflictError for a completed or failed one."""
    row, job = load_upload(rt, upload_id)
    if row.status == UploadStatus.COMPLETED.value:
        raise ConflictError(
            f"upload {upload_id} is completed (asset {row.asset_id}); "
            "a completed upload cannot be cancelled"
        )
    if row.status == UploadStatus.FAILED.value:
        raise ConflictError(f"upload {upload_id} already failed: {row.error_message}")
    if row.status == UploadStatus.CANCELLED.value:
        return row, job
    try:
        with rt.db.session() as s:
            cancelled = upload_db.cancel_upload(s, upload_id)
            if cancelled and actor is not None:
                audit.record(s, actor, AuditAction.UPLOAD_CANCELLED, "upload", upload_id)
    except ConflictError:  # its job finished between the read and the cancel
        cancelled = False
    row, job = load_upload(rt, upload_id)
    if not cancelled:
        raise ConflictError(f"upload {upload_id} is {row.status}; it cannot be cancelled")
    rt.store.discard(row.storage_key)
    rt.store.discard(jobs_admin.staged_source(job))
    return row, job


def _ingest_params(row: UploadRow, frozen: str) -> IngestParams:
    return IngestParams(
        source=StoreSource(key=frozen),
        filename=row.filename,
        size_bytes=row.size_bytes,
        upload_id=row.id,
        asset_type=row.asset_type,
        legacy_track_token=row.legacy_track_token,
        staged=True,
    )


def _freeze(rt: Runtime, row: UploadRow) -> str | None:
    """Snapshot the staged object, once it has exactly the declared size, to a fresh
    key (server side: a hard link locally, CopyObject on S3), whose size is checked
    again, since a PUT may have landed in between. The frozen key, or None when the
    staged object is gone (another `complete` won and removed it). ConflictError
    (409) for a missing or wrong-sized object: PUT it again, then complete."""
    try:
        stored_bytes = rt.store.size(row.storage_key)
    except BlobNotFoundError:
        return None
    _check_declared(row, stored_bytes)
    frozen = keys.frozen_upload_key(row.id)
    try:
        frozen_bytes = rt.store.snapshot(row.storage_key, frozen)
    except BlobNotFoundError:
        return None
    if frozen_bytes != row.size_bytes:
        rt.store.discard(frozen)
        _check_declared(row, frozen_bytes)
    return frozen


def _check_declared(row: UploadRow, stored_bytes: int) -> None:
    if stored_bytes != row.size_bytes:
        raise ConflictError(
            f"upload {row.id} holds {stored_bytes} bytes but {row.size_bytes} were "
            "declared: PUT the whole file again, then complete"
        )
