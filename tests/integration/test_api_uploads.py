"""Upload sessions (`/v0/uploads`): create, PUT the bytes, complete, watch, cancel.

On the embedded default the upload URL is the API's own streaming
`PUT /v0/uploads/{id}/content`; on the S3 store (moto's server over HTTP) it is a
presigned PUT that the file is really sent to with urllib. Each lifecycle runs the
real pipeline through the in-process worker and checks the asset it made.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from api_support import running_api
from sqlalchemy import select
from support import tamper

from mediamill.config.settings import Settings
from mediamill.schemas.uploads import CreateUpload
from mediamill.storage import outbox, repo
from mediamill.storage.blobs.local import BlobWriter
from mediamill.storage.models import IdempotencyKeyRow, JobRow, LegacyTrackTokenRow, UploadRow
from mediamill.workers.queue import QUEUE_NAME
from mediamill.workers.worker import InProcessWorker

pytestmark = pytest.mark.integration

UPLOAD_TIMEOUT_S = 240.0
PIECE_BYTES = 64 * 1024


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pieces(data: bytes, size: int = PIECE_BYTES) -> Iterator[bytes]:
    """A body sent in pieces (chunked transfer, no Content-Length)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def create(api, **fields: Any) -> dict[str, Any]:
    r = api.client.post("/v0/uploads", json=fields, headers=api.admin)
    assert r.status_code == 201, r.text
    return r.json()


def wait_for_end(api, upload_id: str) -> dict[str, Any]:
    """Poll GET until the session leaves `processing`."""
    deadline = time.monotonic() + UPLOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        body = api.client.get(f"/v0/uploads/{upload_id}", headers=api.read).json()
        if body["status"] != "processing":
            return body
        time.sleep(0.2)
    raise AssertionError(f"upload {upload_id} still processing after {UPLOAD_TIMEOUT_S}s")


def ingest_jobs_of(api, upload_id: str) -> list[JobRow]:
    with api.rt.db.session() as s:
        jobs = s.scalars(select(JobRow).where(JobRow.type == "ingest")).all()
        return [j for j in jobs if j.params.get("uploadId") == upload_id]


def asset_of(api, asset_id: str) -> dict[str, Any]:

    with api.rt.db.session() as s:
        return repo.asset_from_row(s, repo.get_asset_row(s, asset_id)).to_json_dict()


def test_full_lifecycle_on_the_local_store(api, samples) -> None:
    path = samples["music.flac"]
    data = path.read_bytes()
    before = datetime.now(UTC)
    upload = create(
        api,
        filename="music.flac",
        contentType="audio/flac",
        sizeBytes=len(data),
        legacyTrackToken="370456",
    )
    upload_id = upload["id"]
    assert upload["status"] == "awaiting_upload" and upload["transcodeStatus"] == "pending"
    assert upload["sizeBytes"] == len(data) and upload["assetType"] == "audio/flac"
    assert upload["assetId"] is None and upload["jobId"] is None
    assert urlsplit(upload["uploadUrl"]).path == f"/v0/uploads/{upload_id}/content"
    assert upload["uploadMethod"] == "PUT"
    assert upload["uploadHeaders"] == {"Content-Type": "audio/flac"}
    expires = datetime.fromisoformat(upload["uploadUrlExpiresAt"])
    assert timedelta(seconds=3590) < expires - before < timedelta(seconds=3610)

    put = api.client.put(upload["uploadUrl"], content=pieces(data), headers=api.admin)
    assert put.status_code == 200, put.text
    assert put.json() == {"id": upload_id, "receivedBytes": len(data), "sha256": sha256_of(path)}
    staged = f"incoming/{upload_id}"
    assert api.rt.store.size(staged) == len(data)
    assert api.client.get(f"/v0/uploads/{upload_id}", headers=api.read).json()["status"] == (
        "awaiting_upload"
    )

    done = api.client.post(f"/v0/uploads/{upload_id}/complete", headers=api.admin)
    assert done.status_code == 202, done.text
    body = done.json()
    assert body["status"] == "processing" and body["jobId"]
    assert body["transcodeStatus"] in {"queued", "running"} and body["uploadUrl"] is None
    again = api.client.post(f"/v0/uploads/{upload_id}/complete", headers=api.admin)
    assert again.status_code == 202 and again.json()["jobId"] == body["jobId"]
    assert [j.id for j in ingest_jobs_of(api, upload_id)] == [body["jobId"]]

    final = wait_for_end(api, upload_id)
    assert final["status"] == "completed", final
    assert final["transcodeStatus"] == "succeeded" and final["errorMessage"] is None
    assert final["assetId"] == sha256_of(path)
    asset = asset_of(api, final["assetId"])
    assert asset["status"] == "analysed" and asset["channels"] == 2
    assert asset["lufs"] is not None and 5500 < asset["duration"] < 6500
    assert not api.rt.store.exists(staged)  # ingest moved it under originals/
    with api.rt.db.session() as s:
        token = s.get(LegacyTrackTokenRow, ("370456", final["assetId"]))
        assert token is not None
        assert s.get(UploadRow, upload_id).status == "completed"  # recorded, not only derived

    cancel = api.client.delete(f"/v0/uploads/{upload_id}", headers=api.admin)
    assert cancel.status_code == 409 and cancel.json()["name"] == "ConflictError"
    assert "completed" in cancel.json()["message"]
    late_put = api.client.put(f"/v0/uploads/{upload_id}/content", content=b"x", headers=api.admin)
    assert late_put.status_code == 409


def test_complete_refuses_a_missing_or_wrong_sized_object(api, samples) -> None:
    data = samples["music.ogg"].read_bytes()
    upload = create(api, filename="a.ogg", contentType="audio/ogg", sizeBytes=len(data) + 10)
    url = f"/v0/uploads/{upload['id']}"

    missing = api.client.post(f"{url}/complete", headers=api.admin)
    assert missing.status_code == 409 and "PUT the file" in missing.json()["message"]

    put = api.client.put(f"{url}/content", content=data, headers=api.admin)
    assert put.status_code == 200 and put.json()["receivedBytes"] == len(data)
    short = api.client.post(f"{url}/complete", headers=api.admin)
    assert short.status_code == 409, short.text
    assert short.json()["name"] == "ConflictError"
    assert f"holds {len(data)} bytes but {len(data) + 10} were declared" in short.json()["message"]
    body = api.client.get(url, headers=api.read).json()
    assert body["status"] == "awaiting_upload" and body["jobId"] is None
    assert ingest_jobs_of(api, upload["id"]) == []


def test_more_bytes_than_declared_are_refused_and_not_stored(api) -> None:
    upload = create(api, filename="b.wav", contentType="audio/wav", sizeBytes=1000)
    url = f"/v0/uploads/{upload['id']}/content"
    declared = api.client.put(url, content=b"\0" * 1001, headers=api.admin)  # Content-Length
    assert declared.status_code == 413, declared.text
    assert declared.json()["name"] == "PayloadTooLargeError"
    streamed = api.client.put(url, content=pieces(b"\0" * 5000, 700), headers=api.admin)
    assert streamed.status_code == 413, streamed.text
    assert not api.rt.store.exists(f"incoming/{upload['id']}")
    assert list(api.rt.store.list("incoming/")) == []
    tmp = api.rt.store.root / ".tmp"
    assert list(tmp.iterdir()) == []  # the partial write was discarded


def test_cancel_before_complete_deletes_the_staged_object(api, samples) -> None:
    data = samples["music.ogg"].read_bytes()
    upload = create(api, filename="c.ogg", contentType="audio/ogg", sizeBytes=len(data))
    url = f"/v0/uploads/{upload['id']}"
    assert api.client.put(f"{url}/content", content=data, headers=api.admin).status_code == 200
    assert api.rt.store.exists(f"incoming/{upload['id']}")

    assert api.client.delete(url, headers=api.read).status_code == 403
    cancelled = api.client.delete(url, headers=api.admin)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["uploadUrl"] is None
    assert not api.rt.store.exists(f"incoming/{upload['id']}")
    assert api.client.get(url, headers=api.read).json()["status"] == "cancelled"
    assert api.client.delete(url, headers=api.admin).json()["status"] == "cancelled"
    complete = api.client.post(f"{url}/complete", headers=api.admin)
    assert complete.status_code == 409 and "cancelled" in complete.json()["message"]
    put = api.client.put(f"{url}/content", content=data, headers=api.admin)
    assert put.status_code == 409
    assert ingest_jobs_of(api, upload["id"]) == []


def test_cancel_while_processing_cancels_the_queued_job(embedded_env, samples) -> None:
    """No worker runs here, so the job stays queued until the cancel reaches it."""
    with running_api(run_worker=False) as api:
        data = samples["music.ogg"].read_bytes()
        upload = create(api, filename="d.ogg", contentType="audio/ogg", sizeBytes=len(data))
        url = f"/v0/uploads/{upload['id']}"
        api.client.put(f"{url}/content", content=data, headers=api.admin)
        job_id = api.client.post(f"{url}/complete", headers=api.admin).json()["jobId"]
        cancelled = api.client.delete(url, headers=api.admin)
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["transcodeStatus"] == "cancelled"
        with api.rt.db.session() as s:
            assert s.get(JobRow, job_id).status == "cancelled"
        assert not api.rt.store.exists(f"incoming/{upload['id']}")
        assert list(api.rt.store.list("incoming/")) == []  # the frozen copy too


def test_concurrent_completes_make_one_job(embedded_env, samples) -> None:
    with running_api(run_worker=False) as api:
        data = samples["music.ogg"].read_bytes()
        upload = create(api, filename="r.ogg", contentType="audio/ogg", sizeBytes=len(data))
        url = f"/v0/uploads/{upload['id']}"
        api.client.put(f"{url}/content", content=data, headers=api.admin)
        barrier = threading.Barrier(6)
        answers: list[tuple[int, str]] = []

        def complete() -> None:
            barrier.wait()
            r = api.client.post(f"{url}/complete", headers=api.admin)
            answers.append((r.status_code, r.json()["jobId"]))

        threads = [threading.Thread(target=complete) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(answers) == 6 and {status for status, _ in answers} == {202}
        assert len({job_id for _, job_id in answers}) == 1
        assert [j.id for j in ingest_jobs_of(api, upload["id"])] == [answers[0][1]]


def test_a_file_that_is_not_media_fails_the_upload(api) -> None:
    data = b"this is not audio at all " * 400
    upload = create(api, filename="e.mp3", contentType="audio/mpeg", sizeBytes=len(data))
    url = f"/v0/uploads/{upload['id']}"
    api.client.put(f"{url}/content", content=data, headers=api.admin)
    assert api.client.post(f"{url}/complete", headers=api.admin).status_code == 202
    final = wait_for_end(api, upload["id"])
    assert final["status"] == "failed" and final["transcodeStatus"] == "failed"
    assert final["errorMessage"].startswith(("UnsupportedMediaError", "CorruptMediaError"))
    refused = api.client.delete(url, headers=api.admin)
    assert refused.status_code == 409 and "failed" in refused.json()["message"]


def test_idempotency_key_replays_the_same_session(api) -> None:
    fields = {"filename": "f.flac", "contentType": "audio/flac", "sizeBytes": 1234}
    headers = {**api.admin, "Idempotency-Key": f"upload-{uuid.uuid4()}"}
    first = api.client.post("/v0/uploads", json=fields, headers=headers)
    again = api.client.post("/v0/uploads", json=fields, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = api.client.post("/v0/uploads", json={**fields, "sizeBytes": 99}, headers=headers)
    assert other.status_code == 409 and other.json()["name"] == "ConflictError"
    with api.rt.db.session() as s:
        assert len(s.scalars(select(UploadRow)).all()) == 1
    assert (
        api.client.post("/v0/uploads", json=fields, headers=api.admin).json()["id"]
        != (first.json()["id"])
    )


def test_expired_upload_url_is_refused(api) -> None:
    upload = create(api, filename="g.wav", contentType="audio/wav", sizeBytes=10)
    with api.rt.db.session() as s:
        s.get(UploadRow, upload["id"]).upload_url_expires_at = datetime.now(UTC) - timedelta(
            seconds=1
        )
    put = api.client.put(upload["uploadUrl"], content=b"0123456789", headers=api.admin)
    assert put.status_code == 403, put.text
    assert "expired" in put.json()["message"]
    assert not api.rt.store.exists(f"incoming/{upload['id']}")
    assert (
        api.client.get(f"/v0/uploads/{upload['id']}", headers=api.read).json()["uploadUrl"] is None
    )


def test_requests_are_validated_and_scoped(api) -> None:
    good = {"filename": "h.flac", "contentType": "audio/flac", "sizeBytes": 10}
    for bad in (
        {**good, "sizeBytes": 0},
        {**good, "contentType": "flac"},
        {**good, "filename": ""},
        {**good, "legacyTrackToken": "../x"},
        {**good, "unknownField": 1},
        {**good, "sizeBytes": api.rt.settings.upload_max_bytes + 1},
    ):
        r = api.client.post("/v0/uploads", json=bad, headers=api.admin)
        assert r.status_code == 400 and r.json()["name"] == "InvalidRequestError", (bad, r.text)
    snake = {"filename": "h.flac", "content_type": "audio/flac", "size_bytes": 10}
    assert api.client.post("/v0/uploads", json=snake, headers=api.admin).status_code == 201
    assert api.client.post("/v0/uploads", json=good, headers=api.read).status_code == 403
    missing = api.client.get(f"/v0/uploads/{uuid.uuid4()}", headers=api.read)
    assert missing.status_code == 404 and missing.json()["name"] == "ModelNotFoundError"


def _s3_settings(moto_server, tmp_path: Path) -> Settings:
    from integration.conftest import make_s3_store, s3_settings

    bucket = f"up-{uuid.uuid4().hex[:12]}"
    make_s3_store(moto_server, bucket)
    return s3_settings(moto_server, tmp_path, bucket, data_dir=tmp_path / "s3-data")


@pytest.fixture
def s3_api(embedded_env, moto_server, tmp_path: Path):
    """The API on the S3 store (moto's server), SQLite and an in-process worker."""
    with running_api(_s3_settings(moto_server, tmp_path), run_worker=True) as api:
        yield api


@pytest.fixture
def paused_s3_api(embedded_env, moto_server, tmp_path: Path):
    """The API on the S3 store with no worker: jobs wait until a test starts one."""
    with running_api(_s3_settings(moto_server, tmp_path), run_worker=False) as api:
        yield api


def presigned_put(url: str, data: bytes, headers: dict[str, str]) -> int:
    """PUT `data` to a presigned URL as a client would (no API key, no proxy)."""
    request = urllib.request.Request(url, data=data, method="PUT", headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=60) as response:
        return response.status


def run_queued_jobs(api) -> None:
    """Start a worker, let it run everything queued (every stage), stop it."""
    with InProcessWorker(api.rt):
        api.rt.broker.join(QUEUE_NAME, timeout=int(UPLOAD_TIMEOUT_S * 1000), fail_fast=False)


def job_row(api, job_id: str) -> JobRow:
    with api.rt.db.session() as s:
        return s.get(JobRow, job_id)


def wait_for_job_row(api, job_id: str) -> JobRow:
    """Poll the jobs table (not the upload) until the job has ended."""
    deadline = time.monotonic() + UPLOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        job = job_row(api, job_id)
        if job.status in {"succeeded", "failed", "cancelled"}:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} not finished after {UPLOAD_TIMEOUT_S}s")


def other_bytes(data: bytes) -> bytes:
    """Different bytes of the same size (so no size check can tell them apart)."""
    return bytes(b ^ 0xFF for b in data[:64]) + data[64:]


def test_presigned_put_upload_on_the_s3_store(s3_api, samples) -> None:
    api = s3_api
    path = samples["music.flac"]
    data = path.read_bytes()
    upload = create(api, filename="music.flac", contentType="audio/flac", sizeBytes=len(data))
    url = upload["uploadUrl"]
    parts = urlsplit(url)
    assert url.startswith(api.rt.settings.s3_endpoint_url)
    assert parts.path == f"/{api.rt.store.bucket}/incoming/{upload['id']}"
    assert "X-Amz-Signature=" in parts.query and "X-Amz-Expires=" in parts.query
    local = api.client.put(f"/v0/uploads/{upload['id']}/content", content=data, headers=api.admin)
    assert local.status_code == 400 and "presigned" in local.json()["message"]

    request = urllib.request.Request(url, data=data, method="PUT", headers=upload["uploadHeaders"])
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=60) as response:
        assert response.status == 200
    assert api.rt.store.size(f"incoming/{upload['id']}") == len(data)

    done = api.client.post(f"/v0/uploads/{upload['id']}/complete", headers=api.admin)
    assert done.status_code == 202, done.text
    final = wait_for_end(api, upload["id"])
    assert final["status"] == "completed", final
    assert final["assetId"] == sha256_of(path)
    asset = asset_of(api, final["assetId"])
    assert asset["status"] == "analysed" and asset["lufs"] is not None
    assert api.rt.store.exists(f"originals/{final['assetId']}")
    assert not api.rt.store.exists(f"incoming/{upload['id']}")


def test_read_keys_get_no_upload_url_on_the_s3_store(s3_api) -> None:
    """An upload URL is a right to write into the bucket: admin keys only."""
    api = s3_api
    upload = create(api, filename="r.flac", contentType="audio/flac", sizeBytes=100)
    assert upload["uploadUrl"] and "X-Amz-Signature=" in upload["uploadUrl"]
    url = f"/v0/uploads/{upload['id']}"
    read = api.client.get(url, headers=api.read)
    assert read.status_code == 200, read.text
    assert read.json()["uploadUrl"] is None and read.json()["uploadHeaders"] == {}
    assert read.json()["status"] == "awaiting_upload"
    admin = api.client.get(url, headers=api.admin).json()
    assert urlsplit(admin["uploadUrl"]).path == f"/{api.rt.store.bucket}/incoming/{upload['id']}"
    assert admin["uploadHeaders"] == {"Content-Type": "audio/flac"}


def test_a_put_landing_after_complete_is_not_ingested_on_the_local_store(
    embedded_env, samples, monkeypatch
) -> None:
    """A PUT that started before `complete` and lands after it is refused (409), and
    the ingest reads the bytes `complete` checked, not the late ones."""
    with running_api(run_worker=False) as api:
        data = samples["music.ogg"].read_bytes()
        late = other_bytes(data)
        upload = create(api, filename="l.ogg", contentType="audio/ogg", sizeBytes=len(data))
        url = f"/v0/uploads/{upload['id']}"
        assert api.client.put(f"{url}/content", content=data, headers=api.admin).status_code == 200

        # The late PUT passes its checks, then its write is held (in the thread pool,
        # so the server goes on answering) until `complete` has answered.
        arrived, gate = threading.Event(), threading.Event()
        write = BlobWriter.write

        def held_write(self: BlobWriter, chunk: bytes) -> None:
            arrived.set()
            assert gate.wait(60)
            write(self, chunk)

        monkeypatch.setattr(BlobWriter, "write", held_write)
        answers: list[Any] = []
        putter = threading.Thread(
            target=lambda: answers.append(
                api.client.put(f"{url}/content", content=late, headers=api.admin)
            )
        )
        putter.start()
        assert arrived.wait(30)
        done = api.client.post(f"{url}/complete", headers=api.admin)
        assert done.status_code == 202, done.text
        gate.set()
        putter.join(60)
        monkeypatch.setattr(BlobWriter, "write", write)
        assert answers[0].status_code == 409, answers[0].text
        assert "takes no more" in answers[0].json()["message"]

        run_queued_jobs(api)
        job = job_row(api, done.json()["jobId"])
        assert job.status == "succeeded", (job.error_name, job.error_message)
        assert job.asset_id == hashlib.sha256(data).hexdigest()
        assert not api.rt.store.exists(f"originals/{hashlib.sha256(late).hexdigest()}")
        assert list(api.rt.store.list("incoming/")) == []  # late bytes and frozen copy gone


def test_bytes_put_after_complete_are_not_ingested_on_the_s3_store(paused_s3_api, samples) -> None:
    """The presigned PUT URL stays valid after `complete` (S3 cannot revoke it), but
    what it writes then is not what gets ingested."""
    api = paused_s3_api
    data = samples["music.ogg"].read_bytes()
    late = other_bytes(data)
    upload = create(api, filename="s.ogg", contentType="audio/ogg", sizeBytes=len(data))
    assert presigned_put(upload["uploadUrl"], data, upload["uploadHeaders"]) == 200
    done = api.client.post(f"/v0/uploads/{upload['id']}/complete", headers=api.admin)
    assert done.status_code == 202, done.text

    assert presigned_put(upload["uploadUrl"], late, upload["uploadHeaders"]) == 200
    assert api.rt.store.size(f"incoming/{upload['id']}") == len(late)
    run_queued_jobs(api)
    job = job_row(api, done.json()["jobId"])
    assert job.status == "succeeded", (job.error_name, job.error_message)
    assert job.asset_id == hashlib.sha256(data).hexdigest()
    assert api.rt.store.exists(f"originals/{job.asset_id}")
    assert not api.rt.store.exists(f"originals/{hashlib.sha256(late).hexdigest()}")
    frozen = job.params["source"]["key"]  # what the job read: no upload URL names it
    assert frozen.startswith(f"incoming/{upload['id']}.") and job.params["staged"] is True
    assert not api.rt.store.exists(frozen)  # ingest removed the frozen copy


def test_ingest_refuses_staged_bytes_of_another_size(embedded_env, samples) -> None:
    """Belt and braces: should the ingest's source not hold the declared size, the
    job fails for good with SizeMismatchError instead of ingesting it."""
    with running_api(run_worker=False) as api:
        data = samples["music.ogg"].read_bytes()
        upload = create(api, filename="m.ogg", contentType="audio/ogg", sizeBytes=len(data))
        url = f"/v0/uploads/{upload['id']}"
        api.client.put(f"{url}/content", content=data, headers=api.admin)
        job_id = api.client.post(f"{url}/complete", headers=api.admin).json()["jobId"]
        frozen = job_row(api, job_id).params["source"]["key"]
        with api.rt.store.open_write(frozen) as writer:  # what no upload URL can do
            writer.write(data + b"more")
        run_queued_jobs(api)
        job = job_row(api, job_id)
        assert job.status == "failed" and job.error_name == "SizeMismatchError"
        assert f"holds {len(data) + 4} bytes but {len(data)} were declared" in job.error_message
        assert job.attempts == 1, "a permanent failure is not retried"
        assert list(api.rt.store.list("originals/")) == []


def test_the_worker_settles_the_upload_when_its_job_ends(api, samples) -> None:
    """Nobody reads the session: the job's end maps the legacy token, records the
    session's status and writes `upload.completed`, all in the job's transaction."""
    path = samples["music.ogg"]
    data = path.read_bytes()
    upload = create(
        api, filename="w.ogg", contentType="audio/ogg", sizeBytes=len(data), legacyTrackToken="t-77"
    )
    url = f"/v0/uploads/{upload['id']}"
    api.client.put(f"{url}/content", content=data, headers=api.admin)
    job_id = api.client.post(f"{url}/complete", headers=api.admin).json()["jobId"]
    job = wait_for_job_row(api, job_id)
    assert job.status == "succeeded", (job.error_name, job.error_message)
    sha = sha256_of(path)
    with api.rt.db.session() as s:
        row = s.get(UploadRow, upload["id"])
        assert (row.status, row.asset_id) == ("completed", sha)
        assert s.get(LegacyTrackTokenRow, ("t-77", sha)) is not None
        events = [e.data["upload"] for e in outbox.list_events(s, "upload.completed")]
    assert len(events) == 1
    assert events[0]["id"] == upload["id"] and events[0]["status"] == "completed"
    assert events[0]["assetId"] == sha and events[0]["jobId"] == job_id
    assert events[0]["legacyTrackToken"] == "t-77" and events[0]["uploadUrl"] is None
    assert wait_for_end(api, upload["id"])["status"] == "completed"
    with api.rt.db.session() as s:
        assert len(outbox.list_events(s, "upload.completed")) == 1, "a read writes no second one"

    bad = b"this is not audio at all " * 400
    failing = create(api, filename="x.mp3", contentType="audio/mpeg", sizeBytes=len(bad))
    url = f"/v0/uploads/{failing['id']}"
    api.client.put(f"{url}/content", content=bad, headers=api.admin)
    job = wait_for_job_row(
        api, api.client.post(f"{url}/complete", headers=api.admin).json()["jobId"]
    )
    assert job.status == "failed"
    with api.rt.db.session() as s:
        row = s.get(UploadRow, failing["id"])
        assert row.status == "failed" and row.error_message.startswith(job.error_name)
        assert len(outbox.list_events(s, "upload.completed")) == 1


def test_cancelling_the_ingest_job_deletes_the_frozen_upload(embedded_env, samples) -> None:
    with running_api(run_worker=False) as api:
        data = samples["music.ogg"].read_bytes()
        upload = create(api, filename="k.ogg", contentType="audio/ogg", sizeBytes=len(data))
        url = f"/v0/uploads/{upload['id']}"
        api.client.put(f"{url}/content", content=data, headers=api.admin)
        job_id = api.client.post(f"{url}/complete", headers=api.admin).json()["jobId"]
        frozen = job_row(api, job_id).params["source"]["key"]
        assert api.rt.store.exists(frozen)
        cancelled = api.client.post(f"/v0/jobs/{job_id}/cancel", headers=api.admin)
        assert cancelled.status_code == 200, cancelled.text
        assert not api.rt.store.exists(frozen)
        with api.rt.db.session() as s:
            assert s.get(UploadRow, upload["id"]).status == "cancelled"


def test_an_unanswered_idempotency_claim_is_taken_over_after_the_timeout(api) -> None:
    """A claim whose process died (no answer, older than the timeout) does not block
    the key forever; a recent one is still "in progress"."""
    fields = {"filename": "i.flac", "contentType": "audio/flac", "sizeBytes": 12}
    digest = hashlib.sha256(
        json.dumps(
            CreateUpload.model_validate(fields).model_dump(mode="json"), sort_keys=True
        ).encode()
    ).hexdigest()
    client_id = api.admin["x-client-id"]
    timeout_s = api.rt.settings.idempotency_claim_timeout_s
    for key, age_s in (("stale", timeout_s + 5), ("recent", 1)):
        with api.rt.db.session() as s:
            s.add(
                IdempotencyKeyRow(
                    id=str(uuid.uuid4()),
                    client_id=client_id,
                    route="POST /v0/uploads",
                    key=key,
                    request_sha256=digest,
                    created_at=datetime.now(UTC) - timedelta(seconds=age_s),
                )
            )
    recent = api.client.post(
        "/v0/uploads", json=fields, headers={**api.admin, "Idempotency-Key": "recent"}
    )
    assert recent.status_code == 409 and "in progress" in recent.json()["message"]
    headers = {**api.admin, "Idempotency-Key": "stale"}
    first = api.client.post("/v0/uploads", json=fields, headers=headers)
    assert first.status_code == 201, first.text
    again = api.client.post("/v0/uploads", json=fields, headers=headers)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    with api.rt.db.session() as s:
        assert [r.id for r in s.scalars(select(UploadRow))] == [first.json()["id"]]


def test_the_local_upload_url_with_its_headers_is_all_a_put_needs(api, samples) -> None:
    """Like a presigned S3 PUT (issue 16, item 9): `uploadUrl` carries its own signature,
    so the PUT needs only `uploadHeaders`, no API key. A changed, foreign or missing
    signature is refused; an admin key still works without one."""
    data = samples["speech.wav"].read_bytes()
    first = create(api, filename="a.wav", contentType="audio/wav", sizeBytes=len(data))
    second = create(api, filename="b.wav", contentType="audio/wav", sizeBytes=len(data))
    url = first["uploadUrl"]
    query = dict(parse_qsl(urlsplit(url).query))
    assert set(query) == {"expires", "signature"}
    bare = f"/v0/uploads/{first['id']}/content"
    foreign = urlsplit(second["uploadUrl"]).query
    for bad, status in (
        (f"{bare}?expires={query['expires']}&signature={tamper(query['signature'])}", 403),
        (f"{bare}?expires={int(query['expires']) + 1}&signature={query['signature']}", 403),
        (f"{bare}?{foreign}", 403),
        (bare, 401),
    ):
        resp = api.client.put(bad, content=data, headers=first["uploadHeaders"])
        assert resp.status_code == status, (bad, resp.text)
    put = api.client.put(url, content=data, headers=first["uploadHeaders"])
    assert put.status_code == 200, put.text
    assert put.json()["receivedBytes"] == len(data)
    keyed = api.client.put(f"/v0/uploads/{second['id']}/content", content=data, headers=api.admin)
    assert keyed.status_code == 200
