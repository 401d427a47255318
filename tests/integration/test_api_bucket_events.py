"""Bucket notifications (`POST /v0/events/storage`, `mediamill listen-bucket`) on the S3
store, against moto's S3 server over HTTP.

The objects are really written to the bucket and the jobs really run, so an accepted
notification is checked by the asset it made. moto has no ListenBucketNotification
API (MinIO only), so `listen-bucket` is driven by a fake event stream injected in
place of minio-py's; the record handling it shares with the route is the real one,
and `minio_notifications` is checked against a fake `Minio` client for its wiring.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from api_support import running_api
from sqlalchemy import func, select

from mediamill.config.settings import Settings
from mediamill.storage.models import BucketEventRow, JobRow

pytestmark = pytest.mark.integration

TOKEN = "bucket-events-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
JOB_TIMEOUT_S = 240.0


def s3_settings(moto_server, tmp_path: Path, bucket: str, prefix: str = "", **extra) -> Settings:
    from integration.conftest import s3_settings as settings_on

    return settings_on(moto_server, tmp_path, bucket, prefix, bucket_events_token=TOKEN, **extra)


@pytest.fixture
def bucket(moto_server) -> str:
    from integration.conftest import make_s3_store

    name = f"ev-{uuid.uuid4().hex[:12]}"
    make_s3_store(moto_server, name)
    return name


@pytest.fixture
def s3_api(embedded_env, moto_server, tmp_path: Path, bucket: str):
    """The API on the S3 store, SQLite, an in-process worker and a webhook token."""
    with running_api(s3_settings(moto_server, tmp_path, bucket), run_worker=True) as api:
        yield api


@pytest.fixture
def paused_s3_api(embedded_env, moto_server, tmp_path: Path, bucket: str):
    """As `s3_api`, with no worker: jobs stay queued."""
    with running_api(s3_settings(moto_server, tmp_path, bucket), run_worker=False) as api:
        yield api


def put_object(api, key: str, data: bytes) -> dict[str, Any]:
    """Write an object into the bucket as an upstream system would; its head."""
    client = api.rt.store.client
    client.put_object(Bucket=api.rt.store.bucket, Key=key, Body=data)
    return client.head_object(Bucket=api.rt.store.bucket, Key=key)


def record(bucket: str, key: str, event: str = "ObjectCreated:Put", **obj: Any) -> dict:
    """One S3 event record; `key` goes in URL-encoded as S3 sends it."""
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-01-01T00:00:00.000Z",
        "eventName": event,
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "mediamill",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": key, "sequencer": "0A1B2C3D4E5F678901", **obj},
        },
    }


def created(api, key: str, data: bytes, encoded_key: str | None = None) -> dict:
    """Store `data` under `key` and return the S3 notification of its creation."""
    head = put_object(api, key, data)
    bucket = api.rt.store.bucket
    encoded = encoded_key if encoded_key is not None else quote(key, safe="/")
    return {"Records": [record(bucket, encoded, size=len(data), eTag=head["ETag"].strip('"'))]}


def post(api, body: dict, headers: dict[str, str] = BEARER):
    return api.client.post("/v0/events/storage", json=body, headers=headers)


def wait_for_job(api, job_id: str) -> JobRow:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        with api.rt.db.session() as s:
            job = s.get(JobRow, job_id)
            if job.status in {"succeeded", "failed", "cancelled"}:
                return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished after {JOB_TIMEOUT_S}s")


def ingest_job_count(api) -> int:
    with api.rt.db.session() as s:
        return s.scalar(select(func.count()).select_from(JobRow).where(JobRow.type == "ingest"))


def analysed_asset(api, job: JobRow, data: bytes) -> dict[str, Any]:
    from mediamill.storage import repo

    assert job.status == "succeeded", (job.error_name, job.error_message)
    assert job.asset_id == hashlib.sha256(data).hexdigest()
    with api.rt.db.session() as s:
        asset = repo.asset_from_row(s, repo.get_asset_row(s, job.asset_id)).to_json_dict()
    assert asset["status"] == "analysed" and asset["lufs"] is not None
    return asset


def test_the_same_notification_twice_makes_one_job(s3_api, samples) -> None:
    api = s3_api
    data = samples["music.flac"].read_bytes()
    body = created(api, "inbox/music.flac", data)

    first = post(api, body)
    assert first.status_code == 202, first.text
    answer = first.json()
    assert (answer["received"], answer["accepted"], answer["duplicates"]) == (1, 1, 0)
    job_id = answer["records"][0]["jobId"]
    assert answer["records"][0]["key"] == "inbox/music.flac"

    again = post(api, body)
    assert again.status_code == 200, again.text
    assert again.json()["duplicates"] == 1 and again.json()["accepted"] == 0
    assert again.json()["records"][0] == {**answer["records"][0], "outcome": "duplicate"}
    assert ingest_job_count(api) == 1

    job = wait_for_job(api, job_id)
    assert job.params["source"] == {"kind": "store", "key": "inbox/music.flac"}
    analysed_asset(api, job, data)
    assert api.rt.store.exists("inbox/music.flac")  # the upstream's object is left alone
    assert post(api, body).json()["duplicates"] == 1 and ingest_job_count(api) == 1


def test_concurrent_deliveries_make_one_job(s3_api, samples) -> None:
    """Eight deliveries of one notification at the same moment: the unique row decides."""
    api = s3_api
    body = created(api, "inbox/race.ogg", samples["music.ogg"].read_bytes())
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def deliver() -> None:
        barrier.wait()
        r = post(api, body)
        outcomes.append(r.json()["records"][0]["outcome"])

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(outcomes) == ["accepted"] + ["duplicate"] * 7
    assert ingest_job_count(api) == 1
    with api.rt.db.session() as s:
        rows = s.scalars(select(BucketEventRow)).all()
        assert len(rows) == 1 and rows[0].job_id is not None


DELIVER_SCRIPT = """
import json, sys, time
from mediamill.config.settings import get_settings
from mediamill.workers.bucket import handle_notification, parse_notification
from mediamill.workers.boot import build_runtime

rt = build_runtime(get_settings())
body, start_at = json.loads(sys.argv[1]), float(sys.argv[2])
time.sleep(max(0.0, start_at - time.time()))
results = handle_notification(rt, parse_notification(body, 100))
print(json.dumps([r.to_json_dict() for r in results]))
"""


def test_deliveries_in_separate_processes_make_one_job(
    embedded_env, moto_server, tmp_path, bucket, samples
) -> None:
    """Four processes on one PostgreSQL database handle the same notification at the
    same instant: exactly one makes the job."""
    from integration.conftest import S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY, make_s3_store
    from support import fresh_postgres_database

    from mediamill.storage.db import database_for

    store = make_s3_store(moto_server, bucket)
    data = samples["music.ogg"].read_bytes()
    store.client.put_object(Bucket=bucket, Key="inbox/many.ogg", Body=data)
    body = {"Records": [record(bucket, "inbox/many.ogg", size=len(data), eTag="e-many")]}
    with fresh_postgres_database() as db_url:
        database_for(db_url).upgrade()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
        env.update(
            MEDIAMILL_DATA_DIR=str(tmp_path / "procs"),
            MEDIAMILL_DATABASE_URL=db_url,
            MEDIAMILL_STORAGE_URL=f"s3://{bucket}",
            MEDIAMILL_S3_ENDPOINT_URL=moto_server.endpoint_url,
            MEDIAMILL_S3_ACCESS_KEY_ID=S3_ACCESS_KEY_ID,
            MEDIAMILL_S3_SECRET_ACCESS_KEY=S3_SECRET_ACCESS_KEY,
            MEDIAMILL_SIGNING_SECRET="test-signing-secret-0123456789",
        )
        start_at = str(time.time() + 8.0)  # after every interpreter has started
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", DELIVER_SCRIPT, json.dumps(body), start_at],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        outputs = [p.communicate(timeout=120) for p in procs]
        for p, (_out, err) in zip(procs, outputs, strict=True):
            assert p.returncode == 0, err
        outcomes = sorted(json.loads(out)[0]["outcome"] for out, _err in outputs)
        assert outcomes == ["accepted", "duplicate", "duplicate", "duplicate"]
        db = database_for(db_url)
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(JobRow)) == 1
            assert s.scalar(select(func.count()).select_from(BucketEventRow)) == 1
        db.dispose()


def test_minio_webhook_body_works(s3_api, samples) -> None:
    api = s3_api
    data = samples["music.ogg"].read_bytes()
    bucket = api.rt.store.bucket
    head = put_object(api, "inbox/minio.ogg", data)
    inner = record(bucket, "inbox/minio.ogg", "s3:ObjectCreated:Put", size=len(data))
    inner["eventSource"] = "minio:s3"
    inner["s3"]["object"]["eTag"] = head["ETag"].strip('"')
    inner["s3"]["object"]["contentType"] = "audio/ogg"
    body = {
        "EventName": "s3:ObjectCreated:Put",
        "Key": f"{bucket}/inbox/minio.ogg",
        "Records": [inner],
    }
    r = post(api, body)
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 1
    analysed_asset(api, wait_for_job(api, r.json()["records"][0]["jobId"]), data)


def test_encoded_keys_are_decoded_and_copied_in(s3_api, samples) -> None:
    """`+` and `%20` are spaces. A name the store's keys do not allow (a space) is
    copied to a generated key under incoming/ and ingested from there."""
    api = s3_api
    flac, ogg = samples["music.flac"].read_bytes(), samples["music.ogg"].read_bytes()
    plus = post(api, created(api, "inbox/my song (1).flac", flac, "inbox/my+song+%281%29.flac"))
    pct = post(api, created(api, "inbox/other song.ogg", ogg, "inbox/other%20song.ogg"))
    assert plus.status_code == pct.status_code == 202, (plus.text, pct.text)
    assert plus.json()["records"][0]["key"] == "inbox/my song (1).flac"
    assert pct.json()["records"][0]["key"] == "inbox/other song.ogg"
    for response, data in ((plus, flac), (pct, ogg)):
        job = wait_for_job(api, response.json()["records"][0]["jobId"])
        staged = job.params["source"]["key"]
        assert staged.startswith("incoming/bucket-") and job.params["staged"] is True
        assert job.params["filename"] in {"my song (1).flac", "other song.ogg"}
        analysed_asset(api, job, data)
        assert not api.rt.store.exists(staged)  # ingest removed its staged copy
    with api.rt.db.session() as s:
        keys = {row.object_key for row in s.scalars(select(BucketEventRow))}
    assert keys == {"inbox/my song (1).flac", "inbox/other song.ogg"}


def test_bearer_token_is_required(s3_api) -> None:
    api = s3_api
    body = {"Records": [record(api.rt.store.bucket, "inbox/x.flac", eTag="abc")]}
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        api.admin,  # an API key is not the webhook's token
    ):
        r = post(api, body, headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["name"] == "AuthenticationError"
    assert ingest_job_count(api) == 0


def test_disabled_without_a_token(api) -> None:
    r = api.client.post("/v0/events/storage", json={"Records": []}, headers=BEARER)
    assert r.status_code == 401 and "MEDIAMILL_BUCKET_EVENTS_TOKEN" in r.json()["message"]


def test_other_events_and_other_keys_are_acknowledged_and_ignored(s3_api) -> None:
    api = s3_api
    bucket = api.rt.store.bucket
    body = {
        "Records": [
            record(bucket, "inbox/gone.flac", "ObjectRemoved:Delete"),
            record(bucket, "inbox/read.flac", "s3:ObjectAccessed:Get"),
            record(bucket, "inbox/", eTag="d41d8cd98f00b204e9800998ecf8427e"),
            record(bucket, "inbox/.DS_Store", eTag="e1"),
            record(bucket, "elsewhere/x.flac", eTag="e2"),
            record(bucket, "renditions/abc/mp3-128000-2ch.mp3", eTag="e3"),
            record(bucket, "incoming/some-upload", eTag="e4"),
        ]
    }
    r = post(api, body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["received"], answer["ignored"], answer["accepted"]) == (7, 7, 0)
    reasons = [rec["reason"] for rec in answer["records"]]
    assert "ObjectRemoved:Delete is not an object creation" in reasons[0]
    assert "folder marker" in reasons[2] and "hidden" in reasons[3]
    assert reasons[4:] == ["not under 'inbox/'"] * 3
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": bucket}
    assert post(api, test_event).json() == {
        "received": 0,
        "accepted": 0,
        "duplicates": 0,
        "ignored": 0,
        "records": [],
    }
    assert ingest_job_count(api) == 0


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("inbox/../originals/x", "'..' segment"),
        ("inbox%2F..%2Foriginals%2Fx", "'..' segment"),
        ("../inbox/x.flac", "'..' segment"),
        ("inbox/./x.flac", "'..' segment"),
        ("inbox//x.flac", "empty segments"),
        ("inbox/a%5Cb.flac", "backslashes"),
        ("inbox/a%00b.flac", "control characters"),
        ("/inbox/x.flac", "must not start with '/'"),
        ("inbox/%FF.flac", "not URL-encoded UTF-8"),
    ],
)
def test_unsafe_keys_are_refused(s3_api, key: str, message: str) -> None:
    api = s3_api
    r = post(api, {"Records": [record(api.rt.store.bucket, key, eTag="abc")]})
    assert r.status_code == 400, r.text
    assert r.json()["name"] == "InvalidRequestError" and message in r.json()["message"]
    assert ingest_job_count(api) == 0


def test_other_buckets_are_refused_and_nothing_is_half_done(s3_api, samples) -> None:
    api = s3_api
    good = created(api, "inbox/ok.ogg", samples["music.ogg"].read_bytes())["Records"][0]
    foreign = record("someone-elses-bucket", "inbox/x.flac", eTag="abc")
    r = post(api, {"Records": [good, foreign]})
    assert r.status_code == 400, r.text
    assert "'someone-elses-bucket' is not this deployment's bucket" in r.json()["message"]
    assert ingest_job_count(api) == 0
    with api.rt.db.session() as s:
        assert s.scalars(select(BucketEventRow)).all() == []
    malformed = post(api, {"Records": [{"eventName": "ObjectCreated:Put", "s3": {}}]})
    assert malformed.status_code == 400 and "not a bucket notification" in malformed.text


def test_the_local_store_refuses_bucket_notifications(embedded_env) -> None:
    with running_api(Settings(bucket_events_token=TOKEN), run_worker=False) as api:
        r = post(api, {"Records": [record("any", "inbox/x.flac", eTag="abc")]})
        assert r.status_code == 400 and "need an S3 store" in r.json()["message"]


def test_store_prefix_and_version_ids(embedded_env, moto_server, tmp_path, bucket) -> None:
    """With `s3://bucket/tenant-a` only `tenant-a/inbox/...` is ours; in a versioned
    bucket the versionId S3 reports tells two uploads of one key apart (same key, new
    version: a second job), whatever the records claim."""
    settings = s3_settings(moto_server, tmp_path, bucket, "tenant-a")
    with running_api(settings, run_worker=False) as api:
        client = api.rt.store.client
        client.put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}
        )
        v1 = client.put_object(Bucket=bucket, Key="tenant-a/inbox/v.flac", Body=b"one")
        rec = record(bucket, "tenant-a/inbox/v.flac", versionId="made-up", eTag="e1")
        first = post(api, {"Records": [rec]})
        assert first.status_code == 202, first.text
        with api.rt.db.session() as s:
            job = s.get(JobRow, first.json()["records"][0]["jobId"])
            assert job.params["source"] == {"kind": "store", "key": "inbox/v.flac"}
            assert job.params["bucketEvent"]["version"] == f"v:{v1['VersionId']}"
        assert post(api, {"Records": [rec]}).json()["duplicates"] == 1
        client.put_object(Bucket=bucket, Key="tenant-a/inbox/v.flac", Body=b"two")
        assert post(api, {"Records": [rec]}).json()["accepted"] == 1
        assert post(api, {"Records": [rec]}).json()["duplicates"] == 1
        outside = post(api, {"Records": [record(bucket, "inbox/v.flac", eTag="e1")]})
        assert outside.json()["records"][0]["reason"] == "outside the store's prefix 'tenant-a'"
        assert ingest_job_count(api) == 2


# ---- mediamill listen-bucket --------------------------------------------------------------


@pytest.fixture
def listen_env(embedded_env, moto_server, tmp_path, bucket, monkeypatch) -> Settings:
    """The environment of a `mediamill listen-bucket` process on the S3 store."""
    from mediamill.config.settings import get_settings

    settings = s3_settings(moto_server, tmp_path, bucket)
    for name in ("storage_url", "s3_endpoint_url", "s3_access_key_id", "data_dir"):
        monkeypatch.setenv(f"MEDIAMILL_{name.upper()}", str(getattr(settings, name)))
    monkeypatch.setenv("MEDIAMILL_S3_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("MEDIAMILL_SIGNING_SECRET", "test-signing-secret-0123456789")
    get_settings.cache_clear()
    return settings


def test_listen_bucket_ingests_a_stream_of_notifications(
    listen_env, moto_server, bucket, samples, monkeypatch, capsys
) -> None:
    from integration.conftest import make_s3_store

    from mediamill import cli
    from mediamill.storage.db import database_for
    from mediamill.workers import bucket as bucket_events

    data = samples["music.ogg"].read_bytes()
    store = make_s3_store(moto_server, bucket)
    store.client.put_object(Bucket=bucket, Key="inbox/a b.ogg", Body=data)
    new = {"Records": [record(bucket, "inbox/a+b.ogg", "s3:ObjectCreated:Put", eTag="e1")]}
    removed = {"Records": [record(bucket, "inbox/a+b.ogg", "s3:ObjectRemoved:Delete")]}
    unsafe = {"Records": [record(bucket, "inbox/../x", eTag="e2")]}
    calls: list[tuple[str, str]] = []

    def fake_stream(settings, name: str, prefix: str) -> Iterator[dict]:
        calls.append((name, prefix))
        yield from (new, new, unsafe, removed)

    monkeypatch.setattr(bucket_events, "minio_notifications", fake_stream)
    assert cli.main(["listen-bucket", bucket, "--json"]) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert calls == [(bucket, "inbox/")]
    assert [line["outcome"] for line in lines] == ["accepted", "duplicate", "ignored"]
    assert lines[0]["key"] == "inbox/a b.ogg" and lines[1]["jobId"] == lines[0]["jobId"]
    assert "error: InvalidRequestError: object key 'inbox/../x' has a '.' or '..' segment" in err
    db = database_for(listen_env.resolved_database_url)
    with db.session() as s:
        job = s.get(JobRow, lines[0]["jobId"])
        assert job.status == "queued" and job.params["source"]["key"].startswith("incoming/")
    assert store.size(job.params["source"]["key"]) == len(data)  # the copy, for ingest

    assert cli.main(["listen-bucket", "not-the-store-bucket"]) == 1
    assert "is not the store's bucket" in capsys.readouterr().err


def test_minio_notifications_wires_the_s3_settings_into_minio(monkeypatch) -> None:
    import minio

    from mediamill.workers.bucket import minio_notifications

    seen: dict[str, Any] = {}

    class FakeMinio:
        def __init__(self, endpoint: str, **kwargs: Any) -> None:
            seen["endpoint"], seen["kwargs"] = endpoint, kwargs

        def listen_bucket_notification(self, bucket: str, **kwargs: Any):
            seen["listen"] = (bucket, kwargs)
            return _Events([{"Records": [1]}, {"Records": [2]}])

    monkeypatch.setattr(minio, "Minio", FakeMinio)
    settings = Settings(
        s3_endpoint_url="http://minio.internal:9000",
        s3_access_key_id="AK",
        s3_secret_access_key="SK",
        s3_region="eu-west-1",
    )
    events = list(minio_notifications(settings, "media", "inbox/"))
    assert events == [{"Records": [1]}, {"Records": [2]}]
    assert seen["endpoint"] == "minio.internal:9000"
    assert seen["kwargs"] == {
        "access_key": "AK",
        "secret_key": "SK",
        "secure": False,
        "region": "eu-west-1",
    }
    assert seen["listen"] == ("media", {"prefix": "inbox/", "events": ("s3:ObjectCreated:*",)})
    tls = Settings(s3_endpoint_url="https://minio.example.com", s3_access_key_id="AK")
    list(minio_notifications(tls, "media", "inbox/"))
    assert seen["endpoint"] == "minio.example.com" and seen["kwargs"]["secure"] is True


class _Events(list):
    """A list that is also a context manager, like minio's EventIterable."""

    closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True


def test_cancelling_a_job_deletes_its_staged_copy_only(paused_s3_api, samples) -> None:
    """A job cancelled before it ran leaves no `incoming/bucket-*` copy behind; the
    bucket's own objects, and keys ingested in place, are never deleted."""
    api = paused_s3_api
    data = samples["music.ogg"].read_bytes()
    copied = post(api, created(api, "inbox/my song.ogg", data))
    in_place = post(api, created(api, "inbox/in-place.ogg", data))
    assert copied.status_code == in_place.status_code == 202, (copied.text, in_place.text)
    jobs = [r.json()["records"][0]["jobId"] for r in (copied, in_place)]
    with api.rt.db.session() as s:
        staged = s.get(JobRow, jobs[0]).params["source"]["key"]
        assert "staged" not in s.get(JobRow, jobs[1]).params
    assert staged.startswith("incoming/bucket-") and api.rt.store.exists(staged)
    for job_id in jobs:
        r = api.client.post(f"/v0/jobs/{job_id}/cancel", headers=api.admin)
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert not api.rt.store.exists(staged)
    assert list(api.rt.store.list("incoming/")) == []
    assert api.rt.store.exists("inbox/in-place.ogg")
    head = api.rt.store.client.head_object(Bucket=api.rt.store.bucket, Key="inbox/my song.ogg")
    assert head["ContentLength"] == len(data)
