"""Bucket notifications -> ingest jobs (workers/bucket.py), without S3.

The contract: a record is judged before anything is acted on (`plan_record`); a new
object version makes exactly one ingest job, its (bucket, key, version) row written
in the job's transaction and its message sent after commit (`act`); a name the store
API cannot take is copied in under a staged key, and that copy is discarded whenever
no job of it is committed. The S3 store is replaced by a local store that has a
bucket name, a `head_bucket_object` answering from its own objects, and an
`import_object` copying from an in-memory bucket.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import select

from mediamill.config.settings import ConfigError, Settings
from mediamill.schemas import keys
from mediamill.schemas.errors import (
    BlobNotFoundError,
    InvalidRequestError,
    MediaMillError,
    PayloadTooLargeError,
)
from mediamill.schemas.job_params import IngestParams, StoreSource
from mediamill.schemas.notifications import S3EventRecord
from mediamill.storage import repo
from mediamill.storage import uploads as upload_db
from mediamill.storage.blobs import BucketObject, LocalBlobStore
from mediamill.storage.db import Database
from mediamill.storage.models import BucketEventRow, JobRow
from mediamill.workers import bucket
from mediamill.workers.bucket import PlannedIngest, RecordResult
from mediamill.workers.queue import QUEUE_NAME
from mediamill.workers.runtime import Runtime

BUCKET = "media"
DATA = b"not-really-audio" * 64


class BucketStore(LocalBlobStore):
    """A local store posing as the S3 store of `bucket`/`prefix`: `objects` are what
    others wrote into the bucket under names the store API refuses (raw keys), other
    objects are the store's own files; `versions` makes a key's bucket versioned;
    `heads` counts the lookups; `import_object` copies one in."""

    def __init__(self, root: Path, bucket_name: str = BUCKET, prefix: str = "") -> None:
        super().__init__(root)
        self.bucket = bucket_name
        self.prefix = prefix
        self.objects: dict[str, bytes] = {}
        self.versions: dict[str, str] = {}
        self.heads: list[str] = []
        self.on_import: Callable[[], None] | None = None

    def head_bucket_object(self, bucket_key: str) -> BucketObject | None:
        self.heads.append(bucket_key)
        data = self.objects.get(bucket_key)
        if data is None:
            store_key = bucket_key.removeprefix(f"{self.prefix}/") if self.prefix else bucket_key
            try:
                with self.open(store_key) as f:
                    data = f.read()
            except (BlobNotFoundError, InvalidRequestError):
                return None
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        return BucketObject(bucket_key, len(data), etag, self.versions.get(bucket_key))

    def import_object(self, bucket_key: str, dst: str, *, version_id: str | None = None) -> int:
        if bucket_key not in self.objects:
            raise BlobNotFoundError(f"no object {bucket_key}")
        self.put(dst, io.BytesIO(self.objects[bucket_key]))
        if self.on_import is not None:
            self.on_import()
        return len(self.objects[bucket_key])


def make_rt(db: Database, tmp_path: Path, prefix: str = "", **settings: Any) -> Runtime:
    broker = StubBroker()
    broker.declare_queue(QUEUE_NAME)
    store = BucketStore(tmp_path / "store", prefix=prefix)
    return Runtime(Settings(_env_file=None, **settings), db, store, broker)


@pytest.fixture
def rt(db: Database, tmp_path: Path) -> Iterator[Runtime]:
    runtime = make_rt(db, tmp_path)
    yield runtime
    runtime.broker.close()


def record(
    key: str, event: str = "ObjectCreated:Put", bucket_name: str = BUCKET, **obj: Any
) -> dict[str, Any]:
    """One S3 event record (`key` as S3 sends it, URL-encoded)."""
    return {
        "eventName": event,
        "s3": {"bucket": {"name": bucket_name}, "object": {"key": key, **obj}},
    }


def plan(rt: Runtime, key: str, **obj: Any) -> PlannedIngest | RecordResult:
    return bucket.plan_record(rt, S3EventRecord.model_validate(record(key, **obj)))


def act(rt: Runtime, planned: PlannedIngest | RecordResult) -> RecordResult:
    """Look the planned record's object up and act on it, as handle_notification does."""
    assert isinstance(planned, PlannedIngest)
    return bucket.act(rt, planned, bucket.head(rt, planned))


def put(rt: Runtime, key: str, data: bytes = DATA) -> str:
    """Store `data` under `key`, as an upstream writing into the bucket would; its version."""
    rt.store.put(key, io.BytesIO(data))
    return f"e:{hashlib.md5(data, usedforsecurity=False).hexdigest()}:{len(data)}"


def sent_job_ids(rt: Runtime) -> list[str]:
    return [Message.decode(m).args[0] for m in rt.broker.queues[QUEUE_NAME].queue]


def table(rt: Runtime, model: type) -> list[Any]:
    with rt.db.session() as s:
        return list(s.scalars(select(model)))


def staged_keys(rt: Runtime) -> list[str]:
    return list(rt.store.list(keys.STAGED_PREFIX))


# ---- judging ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("", "must be a folder"),
        ("inbox", "must be a folder"),
        ("incoming/", "MediaMill's own"),
        ("originals/drop/", "MediaMill's own"),
        ("in/../x/", "MEDIAMILL_BUCKET_EVENTS_PREFIX: invalid list prefix"),
        ("/", "MEDIAMILL_BUCKET_EVENTS_PREFIX"),
    ],
)
def test_events_prefix_must_be_a_folder_outside_mediamills_own(prefix: str, message: str) -> None:
    """A prefix that is not a folder, or overlaps MediaMill's own keys, is a ConfigError."""
    assert bucket.events_prefix(Settings(_env_file=None, bucket_events_prefix="drop/in/")) == (
        "drop/in/"
    )
    with pytest.raises(ConfigError, match=message):
        bucket.events_prefix(Settings(_env_file=None, bucket_events_prefix=prefix))


def test_only_an_s3_like_store_takes_notifications(
    rt: Runtime, db: Database, tmp_path: Path
) -> None:
    """store_bucket names the bucket and prefix; a store without one refuses records."""
    assert bucket.store_bucket(rt) == (BUCKET, "")
    local = Runtime(rt.settings, db, LocalBlobStore(tmp_path / "plain"), rt.broker)
    with pytest.raises(InvalidRequestError, match="need an S3 store"):
        bucket.store_bucket(local)
    with pytest.raises(InvalidRequestError, match="need an S3 store"):
        plan(local, "inbox/a.wav", eTag="e1")
    # A record that is no creation is ignored before the store is even asked.
    gone = S3EventRecord.model_validate(record("inbox/a.wav", "ObjectRemoved:Delete"))
    assert bucket.plan_record(local, gone).outcome == "ignored"


@pytest.mark.parametrize(
    ("raw_key", "obj", "key", "in_place"),
    [
        ("inbox/a.wav", {"eTag": '"e1"', "size": 7}, "inbox/a.wav", True),
        ("inbox/a.wav", {}, "inbox/a.wav", True),  # no version: HEAD tells
        ("inbox/My+Song+%28final%29.flac", {"eTag": "e2"}, "inbox/My Song (final).flac", False),
        ("inbox%2Fsub%2F%C3%A9t%C3%A9.ogg", {"eTag": "e3"}, "inbox/sub/été.ogg", False),
    ],
)
def test_plan_record_decodes_the_key(
    rt: Runtime, raw_key: str, obj: dict[str, Any], key: str, in_place: bool
) -> None:
    """A creation under the prefix is planned by its decoded key; what the record says
    of the object (size, eTag, versionId) is not used."""
    planned = plan(rt, raw_key, **obj)
    assert planned == PlannedIngest(bucket=BUCKET, key=key, store_key=key, in_place=in_place)


def test_plan_record_strips_the_store_prefix_and_refuses_unversioned_records(
    db: Database, tmp_path: Path
) -> None:
    """Under `s3://media/tenant` only `tenant/<events prefix>` is ingested, by store key."""
    rt = make_rt(db, tmp_path, prefix="tenant")
    planned = plan(rt, "tenant/inbox/a.wav", eTag="e1")
    assert isinstance(planned, PlannedIngest)
    assert (planned.key, planned.store_key, planned.in_place) == (
        "tenant/inbox/a.wav",
        "inbox/a.wav",
        True,
    )
    assert plan(rt, "inbox/a.wav", eTag="e1") == RecordResult(
        BUCKET, "inbox/a.wav", "ignored", reason="outside the store's prefix 'tenant'"
    )
    assert plan(rt, "tenant/incoming/x", eTag="e1").reason == "not under 'inbox/'"
    no_object = S3EventRecord.model_validate({"eventName": "s3:ObjectCreated:Put"})
    with pytest.raises(InvalidRequestError, match="record without an s3 object"):
        bucket.plan_record(rt, no_object)


# ---- acting -------------------------------------------------------------------------------


def test_a_new_object_makes_one_job_and_a_resent_one_none(rt: Runtime) -> None:
    """In place: one job row, one event row naming it, one message; again: a duplicate."""
    version = put(rt, "inbox/take1.wav")
    planned = plan(rt, "inbox/take1.wav", eTag="e1", size=1)
    first = act(rt, planned)
    assert first.outcome == "accepted" and first.job_id is not None
    [job] = table(rt, JobRow)
    params = repo.params_of(job)
    assert isinstance(params, IngestParams) and job.id == first.job_id
    assert params.source == StoreSource(key="inbox/take1.wav")
    assert (params.filename, params.size_bytes, params.staged) == ("take1.wav", len(DATA), None)
    assert params.staged_key() is None  # the caller's object is never ingest's to delete
    assert params.bucket_event is not None and params.bucket_event.version == version
    [event] = table(rt, BucketEventRow)
    assert (event.bucket, event.object_key, event.version, event.job_id) == (
        BUCKET,
        "inbox/take1.wav",
        version,
        job.id,
    )
    assert sent_job_ids(rt) == [job.id]

    again = act(rt, planned)
    assert again == RecordResult(BUCKET, "inbox/take1.wav", "duplicate", job_id=job.id)
    assert len(table(rt, JobRow)) == 1 and sent_job_ids(rt) == [job.id]


def test_an_unsafe_name_is_ingested_from_a_staged_copy(rt: Runtime) -> None:
    """A key the store API refuses is copied in; the job ingests (and owns) the copy."""
    rt.store.objects["inbox/My Song (final).flac"] = DATA  # type: ignore[attr-defined]
    planned = plan(rt, "inbox/My+Song+%28final%29.flac", eTag="e1", size=1)
    assert isinstance(planned, PlannedIngest) and not planned.in_place
    result = act(rt, planned)
    [job] = table(rt, JobRow)
    params = repo.params_of(job)
    assert isinstance(params, IngestParams) and result.job_id == job.id
    [staged] = staged_keys(rt)
    assert params.staged_key() == staged and params.staged is True
    assert staged.startswith(f"{keys.STAGED_PREFIX}bucket-")
    with rt.store.open(staged) as f:
        assert f.read() == DATA
    assert params.size_bytes == len(DATA)  # the copy's size, not the record's
    assert params.filename == "My Song (final).flac"
    assert params.bucket_event is not None
    assert params.bucket_event.key == "inbox/My Song (final).flac"


def test_losing_the_race_to_another_delivery_discards_the_copy(rt: Runtime) -> None:
    """Another delivery records the object version while this one copies: no second job."""
    rt.store.objects["inbox/a b.wav"] = DATA  # type: ignore[attr-defined]
    planned = plan(rt, "inbox/a+b.wav", eTag="e1")
    found = bucket.head(rt, planned)  # type: ignore[arg-type]
    assert found is not None

    def other_delivery_wins() -> None:
        with rt.db.session() as s:
            event_id = upload_db.record_bucket_event(s, BUCKET, "inbox/a b.wav", found.identity)
            assert event_id is not None
            upload_db.set_bucket_event_job(s, event_id, "the-winners-job")

    rt.store.on_import = other_delivery_wins  # type: ignore[attr-defined]
    result = act(rt, planned)
    assert result == RecordResult(BUCKET, "inbox/a b.wav", "duplicate", job_id="the-winners-job")
    assert table(rt, JobRow) == [] and sent_job_ids(rt) == []
    assert staged_keys(rt) == []


def test_a_failed_transaction_leaves_no_row_and_no_copy(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the job cannot be written nothing is recorded, so a redelivery still makes it."""
    rt.store.objects["inbox/a b.wav"] = DATA  # type: ignore[attr-defined]
    planned = plan(rt, "inbox/a+b.wav", eTag="e1")

    def broken(*args: object, **kwargs: object) -> JobRow:
        raise RuntimeError("database went away")

    with monkeypatch.context() as m:
        m.setattr(bucket, "ingest_job_in", broken)
        with pytest.raises(RuntimeError, match="database went away"):
            act(rt, planned)
    assert table(rt, BucketEventRow) == [] and table(rt, JobRow) == []
    assert staged_keys(rt) == []
    assert act(rt, planned).outcome == "accepted"
    assert len(staged_keys(rt)) == 1 and len(table(rt, JobRow)) == 1


def test_a_thousand_made_up_etags_for_one_key_make_one_job(db: Database, tmp_path: Path) -> None:
    """The attack: 1,000 records of one key, each with its own eTag. The object is
    looked up once, its identity is the bucket's, so one job and 999 duplicates."""
    rt = make_rt(db, tmp_path, bucket_event_max_records=1000)
    put(rt, "inbox/one.wav")
    body = {"Records": [record("inbox/one.wav", eTag=f"fake{i}") for i in range(1000)]}
    results = bucket.handle_notification(rt, bucket.parse_notification(body, 1000))
    outcomes = [r.outcome for r in results]
    assert outcomes.count("accepted") == 1 and outcomes.count("duplicate") == 999
    assert len(table(rt, JobRow)) == 1 and len(table(rt, BucketEventRow)) == 1
    assert rt.store.heads == ["inbox/one.wav"]  # type: ignore[attr-defined]


def test_a_record_of_a_missing_object_is_ignored_with_a_log_line(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"Records": [record("inbox/never-written.wav", eTag="e1", size=10)]}
    with caplog.at_level(logging.INFO, logger="mediamill.workers.bucket"):
        [result] = bucket.handle_notification(rt, bucket.parse_notification(body, 100))
    assert result == RecordResult(
        BUCKET,
        "inbox/never-written.wav",
        "ignored",
        reason="no such object (deleted, or never written)",
    )
    assert "bucket record for 'inbox/never-written.wav' ignored: no such object" in caplog.text
    assert table(rt, JobRow) == [] and table(rt, BucketEventRow) == []


def test_the_size_is_the_objects_and_a_new_version_is_a_new_job(rt: Runtime) -> None:
    """The record's size is not used; in a versioned bucket each versionId is one job,
    and new bytes under an unversioned key (a new ETag) are another."""
    put(rt, "inbox/v.wav")
    rt.store.versions["inbox/v.wav"] = "v1"  # type: ignore[attr-defined]
    first = act(rt, plan(rt, "inbox/v.wav", size=999_999_999))
    [job] = table(rt, JobRow)
    assert repo.params_of(job).size_bytes == len(DATA)  # type: ignore[union-attr]
    assert act(rt, plan(rt, "inbox/v.wav")).outcome == "duplicate"
    rt.store.versions["inbox/v.wav"] = "v2"  # type: ignore[attr-defined]
    second = act(rt, plan(rt, "inbox/v.wav"))
    assert first.outcome == second.outcome == "accepted" and first.job_id != second.job_id
    del rt.store.versions["inbox/v.wav"]  # type: ignore[attr-defined]
    put(rt, "inbox/v.wav", b"other bytes")
    assert act(rt, plan(rt, "inbox/v.wav")).outcome == "accepted"
    assert sorted(e.version for e in table(rt, BucketEventRow)) == sorted(
        ["v:v1", "v:v2", put(rt, "inbox/v.wav", b"other bytes")]
    )


def test_an_event_recorded_by_etag_before_head_checks_stays_a_duplicate(rt: Runtime) -> None:
    """Rows written when the body's eTag was the version ("e:<eTag>") still match."""
    put(rt, "inbox/old.wav")
    etag = hashlib.md5(DATA, usedforsecurity=False).hexdigest()
    with rt.db.session() as s:
        event_id = upload_db.record_bucket_event(s, BUCKET, "inbox/old.wav", f"e:{etag}")
        assert event_id is not None
        upload_db.set_bucket_event_job(s, event_id, "the-old-job")
    result = act(rt, plan(rt, "inbox/old.wav", eTag=etag))
    assert result == RecordResult(BUCKET, "inbox/old.wav", "duplicate", job_id="the-old-job")


def test_more_records_than_the_limit_are_refused_before_any_is_read(rt: Runtime) -> None:
    body = {"Records": [record(f"inbox/{i}.wav") for i in range(101)] + ["not even a record"]}
    with pytest.raises(PayloadTooLargeError, match="at most 100 records, not 102"):
        bucket.parse_notification(body, 100)
    assert len(bucket.parse_notification({"Records": body["Records"][:100]}, 100).records) == 100


def test_a_refused_record_stops_the_whole_notification_first(rt: Runtime) -> None:
    """Every record is judged before any is acted on: one bad record, no job at all."""
    rt.store.objects["inbox/a b.wav"] = DATA  # type: ignore[attr-defined]
    body = {
        "Records": [
            record("inbox/ok.wav", eTag="e1"),
            record("inbox/a+b.wav", eTag="e2"),  # would be copied in
            record("inbox/../x.wav", eTag="e3"),  # refused
        ]
    }
    put(rt, "inbox/ok.wav")
    with pytest.raises(InvalidRequestError, match=r"'\.\.' segment"):
        bucket.handle_notification(rt, bucket.parse_notification(body, 100))
    assert table(rt, JobRow) == [] and table(rt, BucketEventRow) == []
    assert staged_keys(rt) == [] and sent_job_ids(rt) == []


def test_listen_reports_a_bad_notification_and_goes_on(rt: Runtime) -> None:
    """The listen stream yields each refused notification as its error, then carries on."""
    put(rt, "inbox/x.wav")
    minio_body = {
        "EventName": "s3:ObjectCreated:Put",
        "Key": f"{BUCKET}/inbox/x.wav",
        "Records": [record("inbox/x.wav", "s3:ObjectCreated:Put", eTag="e1")],
    }
    events = [
        {"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}]},  # malformed
        {"Records": [record("inbox/y.wav", bucket_name="elsewhere", eTag="e1")]},
        minio_body,
        minio_body,
        {"Records": [record("inbox/x.wav", "s3:ObjectRemoved:Delete")]},
    ]
    results = list(bucket.listen(rt, events))
    malformed, foreign = results[:2]
    assert isinstance(malformed, InvalidRequestError)
    assert malformed.message.startswith("not a bucket notification")
    assert isinstance(foreign, MediaMillError) and "'elsewhere' is not" in foreign.message
    outcomes = [r.outcome for r in results[2:] if isinstance(r, RecordResult)]
    assert outcomes == ["accepted", "duplicate", "ignored"]
    [job] = table(rt, JobRow)
    assert results[2].job_id == results[3].job_id == job.id  # type: ignore[union-attr]
    assert results[2].to_json_dict() == {  # type: ignore[union-attr]
        "bucket": BUCKET,
        "key": "inbox/x.wav",
        "outcome": "accepted",
        "jobId": job.id,
        "reason": None,
    }
