"""Jobs: submit ingest (from a store key or an http(s) URL), read, list, cancel, retry.

Handlers are sync (FastAPI runs them in its thread pool): each is one or two short
units of work on the DB plus at most one enqueue, and the row is always committed
before its message is sent.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Annotated
from urllib.parse import unquote, urlsplit

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from mediamill.api.deps import AdminActor, AdminKey, ReadKey, RuntimeDep, SessionDep
from mediamill.api.idempotency import Record, idempotent_in
from mediamill.schemas import keys
from mediamill.schemas.audit import AuditAction
from mediamill.schemas.base import CamelModel
from mediamill.schemas.errors import (
    BlobNotFoundError,
    InvalidRequestError,
    ModelNotFoundError,
)
from mediamill.schemas.job_params import StoreSource, UrlSource
from mediamill.schemas.job_requests import CreateJobRequest
from mediamill.schemas.jobs import Job, JobStatus, JobType
from mediamill.storage import audit, jobs_admin, repo
from mediamill.storage.blobs import validate_key
from mediamill.storage.models import JobRow
from mediamill.workers.queue import send_committed
from mediamill.workers.renditions import check_requestable
from mediamill.workers.runtime import Runtime
from mediamill.workers.submit import submit_ingest
from mediamill.workers.url_source import check_source_url, parse_allow_hosts

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v0/jobs", tags=["jobs"])

ROUTE_CREATE = "POST /v0/jobs"
_SHA256 = r"^[0-9a-f]{64}$"
_FILENAME_UNSAFE = re.compile(r"[\x00-\x1f/\\]")


class JobPage(CamelModel):
    """A page of jobs (for OpenAPI; the body itself is built directly)."""

    data: list[Job]
    next_cursor: str | None = None


def _job_response(job: Job, status_code: int = 200) -> JSONResponse:
    return JSONResponse(job.to_json_dict(), status_code=status_code)


@router.post("", status_code=201, response_model=Job)
def create_job(
    rt: RuntimeDep,
    request: Request,
    body: CreateJobRequest,
    principal: AdminKey,
) -> JSONResponse:
    """Ingest an original from the store (`source.key`) or an http(s) URL (`source.url`),
    then make the renditions asked for (default: the standard ones) and the package.
    201 with the Job; `Idempotency-Key` replays the first answer."""
    if body.source.key is not None:
        _check_source_key(body.source.key)
    for requested in body.renditions or []:
        check_requestable(requested.spec())

    def produce(record: Record) -> tuple[int, dict]:
        answer: dict = {}

        def in_transaction(s: Session, job: JobRow) -> None:
            # The new row is the whole answer (a new job has no children): no re-read;
            # it commits with the job, so a crash cannot leave a job with no answer.
            answer.update(repo.job_from_row(job).to_json_dict())
            record(s, 201, answer)

        _submit(rt, body, in_transaction)
        return 201, answer

    response = idempotent_in(
        request, principal, ROUTE_CREATE, body.model_dump(mode="json"), produce
    )
    if response.status_code == 201:
        response.headers["Location"] = f"{router.prefix}/{json.loads(response.body)['id']}"
    return response


def _check_source_key(key: str) -> str:
    """A caller's store key: valid, and not one of MediaMill's own
    (`keys.INTERNAL_PREFIXES`), whose objects are not the caller's to ingest (a
    staged object is another upload's bytes)."""
    validate_key(key)
    if keys.is_internal(key):
        raise InvalidRequestError(
            f"source key {key!r} is under MediaMill's own {', '.join(keys.INTERNAL_PREFIXES)}: "
            "ingest from a key of your own (upload sessions stage their bytes themselves)",
            key=key,
        )
    return key


def _submit(
    rt: Runtime, body: CreateJobRequest, in_transaction: Callable[[Session, JobRow], None]
) -> JobRow:
    """Check the source and write + enqueue the ingest job (`in_transaction` runs in
    the transaction that writes it)."""
    settings = rt.settings
    if body.source.key is not None:
        key = _check_source_key(body.source.key)
        try:
            size_bytes = rt.store.size(key)
        except BlobNotFoundError as exc:
            raise ModelNotFoundError(f"no object is stored under {key!r}", key=key) from exc
        filename = body.filename or key.rsplit("/", 1)[-1]
        return submit_ingest(
            rt,
            StoreSource(key=key),
            filename,
            size_bytes,
            plan=body.plan(),
            tracks=body.tracks,
            in_transaction=in_transaction,
        )
    url = check_source_url(
        body.source.url or "",
        allow_private=settings.allow_private_url_ingest,
        allow_hosts=parse_allow_hosts(settings.url_ingest_allow_hosts),
    )
    filename = body.filename or _filename_from_url(url.url)
    return submit_ingest(
        rt,
        UrlSource(url=url.url),
        filename,
        0,
        plan=body.plan(),
        tracks=body.tracks,
        store_s=settings.url_ingest_timeout_s,
        in_transaction=in_transaction,
    )


def _filename_from_url(url: str) -> str | None:
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    name = _FILENAME_UNSAFE.sub("_", name)[:255]
    return name or None


@router.get("", response_model=JobPage)
def list_jobs(
    s: SessionDep,
    _principal: ReadKey,
    status: JobStatus | None = None,
    job_type: Annotated[JobType | None, Query(alias="type")] = None,
    asset_id: Annotated[str | None, Query(alias="assetId", pattern=_SHA256)] = None,
    limit: Annotated[int, Query(ge=1, le=jobs_admin.MAX_PAGE_SIZE)] = 50,
    cursor: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> JSONResponse:
    """Top-level jobs, newest first (children are listed inside their parent), filtered
    by status, type and asset; `nextCursor` fetches the next page, null on the last."""
    jobs, next_cursor = jobs_admin.list_jobs_page(
        s, status=status, job_type=job_type, asset_id=asset_id, limit=limit, cursor=cursor
    )
    return JSONResponse({"data": [j.to_json_dict() for j in jobs], "nextCursor": next_cursor})


@router.get("/{job_id}", response_model=Job)
def get_job(
    rt: RuntimeDep,
    job_id: str,
    _principal: ReadKey,
) -> JSONResponse:
    """One job with its children (one per rendition of a transcode); 404 if unknown."""
    with jobs_admin.read_session(rt.db) as s:
        return _job_response(jobs_admin.load_job(s, job_id))


@router.post("/{job_id}/cancel", response_model=Job)
def cancel_job(
    rt: RuntimeDep,
    job_id: str,
    actor: AdminActor,
) -> JSONResponse:
    """Cancel a queued or running job (and its children); 409 once it has finished.
    No worker runs it afterwards, and a worker already running it stops writing. A
    copy the server staged for it (an upload's bytes, a bucket object) is deleted."""
    with rt.db.session() as s:
        staged = jobs_admin.staged_source(jobs_admin.cancel_job(s, job_id))
        audit.record(s, actor, AuditAction.JOB_CANCELLED, "job", job_id)
    rt.store.discard(staged)
    with rt.db.session() as s:
        return _job_response(jobs_admin.load_job(s, job_id))


@router.post("/{job_id}/retry", response_model=Job)
def retry_job(
    rt: RuntimeDep,
    job_id: str,
    actor: AdminActor,
) -> JSONResponse:
    """Re-run a failed job from the stage it failed in, redoing only what failed (the
    failed renditions of a transcode; ready ones are kept). 409 unless it failed."""
    with rt.db.session() as s:
        row = jobs_admin.retry_job(s, job_id)
        audit.record(s, actor, AuditAction.JOB_RETRIED, "job", job_id, {"stage": row.stage})
    send_committed(rt, row)  # the row is queued: if the broker refuses, the sweeper sends it
    with rt.db.session() as s:
        return _job_response(jobs_admin.load_job(s, job_id))
