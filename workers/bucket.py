"""Bucket notifications -> ingest jobs, exactly once per new object.

Shared by `POST /v0/events/storage` (MinIO's webhook, S3-style bodies) and `mediamill
listen-bucket` (MinIO's ListenBucketNotification stream). A record is first judged
(`plan_record`): non-creation events, folder markers, hidden files and keys outside
`MEDIAMILL_BUCKET_EVENTS_PREFIX` are acknowledged and ignored; another bucket, a
`..` segment or an unsafe name is refused with InvalidRequestError before anything in
the notification is acted on, and so is a body of more than
`MEDIAMILL_BUCKET_EVENT_MAX_RECORDS` records (PayloadTooLargeError, 413).

Nothing a record says about the object is trusted: its object is looked up (HEAD,
once per key and notification). A missing object is acknowledged and ignored with a
log line; otherwise the object's identity as the bucket reports it (its versionId, else
its ETag and size) is the version. Then (`act`) a unique (bucket, key, version) row
decides, in the same transaction as the ingest job row, whether this is the first
delivery: a re-sent notification, or a thousand records with made-up eTags, in any
process, makes no second job. The job's message is sent after commit (the sweeper
re-sends it if that fails).

Keys that `validate_key` accepts are ingested where they are. Other safe names (a
space, parentheses, any Unicode) are first copied server-side to a generated key
under a staged key (params `staged`), which ingest deletes once the original is stored
(or a cancel of its job does): a raw bucket key never reaches the store API, let alone
a path.

"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal
from urllib.parse import unquote_plus, urlparse

from pydantic import ValidationError

from mediamill.config.settings import ConfigError, Settings
from mediamill.schemas import keys
from mediamill.schemas.errors import (
    InvalidRequestError,
    MediaMillError,
    PayloadTooLargeError,
    describe_validation,
)
from mediamill.schemas.job_params import BucketEventOrigin, IngestParams, StoreSource
from mediamill.schemas.notifications import BucketNotification, S3EventRecord
from mediamill.storage import uploads as upload_db
from mediamill.storage.blobs import BucketObject, validate_bucket_key, validate_key
from mediamill.storage.blobs.base import validate_prefix
from mediamill.storage.models import JobRow
from mediamill.workers.queue import send_committed
from mediamill.workers.runtime import Runtime
from mediamill.workers.submit import ingest_job_in

log = logging.getLogger(__name__)

LISTEN_EVENTS = ("s3:ObjectCreated:*",)

Outcome = Literal["accepted", "duplicate", "ignored"]


# ---- judging records ----------------------------------------------------------------------


@dataclass(frozen=True)
class RecordResult:
    """What became of one record."""

    bucket: str | None
    key: str | None
    outcome: Outcome
    job_id: str | None = None
    reason: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "outcome": self.outcome,
            "jobId": self.job_id,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class PlannedIngest:
    """A record that names a new object to ingest."""

    bucket: str
    key: str  # the object's key in the bucket, decoded, store prefix included
    store_key: str  # the same without the store prefix
    in_place: bool  # store_key passes validate_key: no copy needed


def events_prefix(settings: Settings) -> str:
    """`MEDIAMILL_BUCKET_EVENTS_PREFIX`, checked: a key prefix ending in `/`, outside
    MediaMill's own prefixes."""
    prefix = settings.bucket_events_prefix
    try:
        validate_prefix(prefix)
    except InvalidRequestError as exc:
        raise ConfigError(f"MEDIAMILL_BUCKET_EVENTS_PREFIX: {exc.message}") from exc
    if not prefix.endswith("/") or any(
        prefix.startswith(p) or p.startswith(prefix) for p in keys.INTERNAL_PREFIXES
    ):
        raise ConfigError(
            "MEDIAMILL_BUCKET_EVENTS_PREFIX must be a folder such as 'inbox/' that does not "
            f"contain, or sit inside, MediaMill's own {', '.join(keys.INTERNAL_PREFIXES)}"
        )
    return prefix


def store_bucket(rt: Runtime) -> tuple[str, str]:
    """(bucket, key prefix) of the S3 store; InvalidRequestError on any other store."""
    bucket = getattr(rt.store, "bucket", None)
    if not isinstance(bucket, str) or not hasattr(rt.store, "head_bucket_object"):
        # The store's repr would name a server path: say only what kind it is.
        raise InvalidRequestError(
            "bucket notifications need an S3 store (MEDIAMILL_STORAGE_URL=s3://bucket); "
            "this deployment stores blobs in a local directory"
        )
    return bucket, str(getattr(rt.store, "prefix", "") or "")


def plan_record(rt: Runtime, record: S3EventRecord) -> PlannedIngest | RecordResult:
    """Judge one record: an ingest to make, or an ignored record (with the reason).
    Raises InvalidRequestError for a record that must not be acted on."""
    bucket = record.s3.bucket.name if record.s3 else None
    raw_key = record.s3.object.key if record.s3 else None
    if not record.object_created:
        return RecordResult(
            bucket, raw_key, "ignored", reason=f"{record.event_name} is not an object creation"
        )
    if record.s3 is None:
        raise InvalidRequestError(f"{record.event_name} record without an s3 object")
    own_bucket, store_prefix = store_bucket(rt)
    if bucket != own_bucket:
        raise InvalidRequestError(
            f"bucket {bucket!r} is not this deployment's bucket {own_bucket!r}", bucket=bucket
        )
    try:
        key = unquote_plus(record.s3.object.key, errors="strict")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(f"object key {raw_key!r} is not URL-encoded UTF-8") from exc
    if key.endswith("/"):
        return RecordResult(bucket, key, "ignored", reason="a folder marker, not a file")
    segments = key.split("/")
    if any(s in {".", ".."} for s in segments):
        raise InvalidRequestError(f"object key {key!r} has a '.' or '..' segment", key=key)
    if any(s.startswith(".") for s in segments):
        return RecordResult(bucket, key, "ignored", reason="a hidden (dot) file")
    validate_bucket_key(key)
    store_key = key
    if store_prefix:
        if not key.startswith(f"{store_prefix}/"):
            return RecordResult(
                bucket, key, "ignored", reason=f"outside the store's prefix {store_prefix!r}"
            )
        store_key = key[len(store_prefix) + 1 :]
    prefix = events_prefix(rt.settings)
    if not store_key.startswith(prefix) or store_key.startswith(keys.INTERNAL_PREFIXES):
        return RecordResult(bucket, key, "ignored", reason=f"not under {prefix!r}")
    try:
        validate_key(store_key)
        in_place = True
    except InvalidRequestError:
        in_place = False
    return PlannedIngest(bucket=bucket, key=key, store_key=store_key, in_place=in_place)


# ---- acting on them -----------------------------------------------------------------------


def head(rt: Runtime, plan: PlannedIngest) -> BucketObject | None:
    """The planned record's object as the bucket reports it, None if there is none."""
    return rt.store.head_bucket_object(plan.key)  # type: ignore[attr-defined]


def act(rt: Runtime, plan: PlannedIngest, found: BucketObject | None) -> RecordResult:
    """Make the ingest job of a planned record whose object is `found` (`head`), unless
    that object version was seen; a missing object is ignored."""
    if found is None:
        log.info("bucket record for %r ignored: no such object in %r", plan.key, plan.bucket)
        return RecordResult(
            plan.bucket, plan.key, "ignored", reason="no such object (deleted, or never written)"
        )
    version = found.identity
    with rt.db.session() as s:
        seen = upload_db.find_bucket_event(s, plan.bucket, plan.key, *found.identities)
    if seen is not None:
        return RecordResult(plan.bucket, plan.key, "duplicate", job_id=seen.job_id)
    staged: str | None = None
    size_bytes = found.size_bytes
    if not plan.in_place:
        staged = keys.staged_copy_key("bucket-")
        size_bytes = rt.store.import_object(  # type: ignore[attr-defined]
            plan.key, staged, version_id=found.version_id
        )
    params = IngestParams(
        source=StoreSource(key=staged or plan.store_key),
        filename=PurePosixPath(plan.key).name,
        size_bytes=size_bytes,
        bucket_event=BucketEventOrigin(bucket=plan.bucket, key=plan.key, version=version),
        # Only a copy made here is ingest's to delete; an object ingested in place is not.
        staged=True if staged else None,
    )
    job: JobRow | None = None
    try:
        with rt.db.session() as s:
            event_id = upload_db.record_bucket_event(s, plan.bucket, plan.key, version)
            if event_id is not None:
                job = ingest_job_in(s, rt.settings, params)
                upload_db.set_bucket_event_job(s, event_id, job.id)
            else:
                seen = upload_db.find_bucket_event(s, plan.bucket, plan.key, version)
    except BaseException:
        rt.store.discard(staged)
        raise
    if job is None:  # another delivery won the race after our pre-check
        rt.store.discard(staged)
        return RecordResult(
            plan.bucket, plan.key, "duplicate", job_id=seen.job_id if seen else None
        )
    send_committed(rt, job)
    return RecordResult(plan.bucket, plan.key, "accepted", job_id=job.id)


def handle_notification(rt: Runtime, notification: BucketNotification) -> list[RecordResult]:
    """Every record of one notification. All are judged before any is acted on, so a
    refused notification (InvalidRequestError) leaves nothing half done; each key's
    object is looked up once."""
    plans = [plan_record(rt, record) for record in notification.records]
    found: dict[str, BucketObject | None] = {}
    results: list[RecordResult] = []
    for p in plans:
        if isinstance(p, PlannedIngest):
            if p.key not in found:
                found[p.key] = head(rt, p)
            results.append(act(rt, p, found[p.key]))
        else:
            results.append(p)
    return results


def parse_notification(body: Any, max_records: int) -> BucketNotification:
    """A notification body (a dict from JSON) as the model; PayloadTooLargeError over
    `max_records` records (counted before anything else is read), InvalidRequestError
    if it is not a notification."""
    records = body.get("Records") if isinstance(body, dict) else None
    if isinstance(records, list) and len(records) > max_records:
        raise PayloadTooLargeError(
            f"a notification may carry at most {max_records} records, not {len(records)} "
            "(MEDIAMILL_BUCKET_EVENT_MAX_RECORDS)"
        )
    try:
        return BucketNotification.model_validate(body)
    except ValidationError as exc:
        problems = describe_validation(exc.errors())
        raise InvalidRequestError(f"not a bucket notification: {problems}") from exc


# ---- MinIO's listen API -------------------------------------------------------------------


def minio_notifications(settings: Settings, bucket: str, prefix: str) -> Iterator[dict]:
    """MinIO's ListenBucketNotification stream of `s3:ObjectCreated:*` under `prefix`
    (endpoint and credentials from the `MEDIAMILL_S3_*` settings). MinIO only: AWS S3
    has no such API (use its notifications to the webhook route instead)."""
    from minio import Minio

    endpoint = urlparse(settings.s3_endpoint_url or "https://s3.amazonaws.com")
    secret = settings.s3_secret_access_key
    client = Minio(
        endpoint.netloc,
        access_key=settings.s3_access_key_id,
        secret_key=secret.get_secret_value() if secret is not None else None,
        secure=endpoint.scheme == "https",
        region=settings.s3_region,
    )
    with client.listen_bucket_notification(bucket, prefix=prefix, events=LISTEN_EVENTS) as events:
        yield from events


def listen(rt: Runtime, events: Iterable[dict]) -> Iterator[RecordResult | MediaMillError]:
    """Handle each notification of a stream as the route does; a refused or failed
    notification is yielded as its error and the stream goes on (the listen API has
    no redelivery: the webhook, with MinIO's queue_dir, is the at-least-once path)."""
    for event in events:
        try:
            notification = parse_notification(event, rt.settings.bucket_event_max_records)
            yield from handle_notification(rt, notification)
        except MediaMillError as exc:
            log.warning("bucket notification not handled: %s: %s", exc.name, exc.message)
            yield exc
