"""Upload session use cases (workers/uploads.py) on SQLite, a local store and a stub
broker: a session is opened within the size limit, completing freezes exactly the
declared bytes and enqueues one ingest of the frozen copy, and cancelling deletes
what was staged."""

from __future__ import annotations

import io

import pytest
from dramatiq import Message
from support import MakeRuntime

from mediamill.config.settings import Settings
from mediamill.schemas import keys
from mediamill.schemas.errors import ConflictError, InvalidRequestError
from mediamill.schemas.uploads import CreateUpload, UploadStatus
from mediamill.storage import repo
from mediamill.workers import uploads
from mediamill.workers.queue import QUEUE_NAME
from mediamill.workers.runtime import Runtime

BYTES = b"RIFF-not-really-a-wave-file" * 10


@pytest.fixture
def rt(make_runtime: MakeRuntime) -> Runtime:
    return make_runtime(Settings(_env_file=None, upload_max_bytes=1000))


def _open(rt: Runtime, size_bytes: int = len(BYTES)) -> str:
    body = CreateUpload(filename="a.wav", content_type="audio/wav", size_bytes=size_bytes)
    with rt.db.session() as s:
        return uploads.open_upload(rt, s, body).id


def test_open_stages_under_the_upload_key_and_refuses_over_the_limit(rt: Runtime) -> None:
    upload_id = _open(rt)
    row, job = uploads.load_upload(rt, upload_id)
    assert (row.status, row.storage_key, job) == (
        UploadStatus.AWAITING_UPLOAD.value,
        keys.upload_key(upload_id),
        None,
    )
    with pytest.raises(InvalidRequestError, match="over the 1000-byte limit"):
        _open(rt, size_bytes=1001)


def test_complete_freezes_the_bytes_and_enqueues_one_ingest(rt: Runtime) -> None:
    upload_id = _open(rt)
    rt.store.put(keys.upload_key(upload_id), io.BytesIO(BYTES))
    row, job = uploads.complete_upload(rt, upload_id)
    assert row.status == UploadStatus.PROCESSING.value and job is not None
    params = repo.params_of(job)
    frozen = params.source.key
    assert frozen != row.storage_key and keys.is_staged(frozen)
    assert params.upload_id == upload_id and params.staged is True
    assert rt.store.size(frozen) == len(BYTES)
    assert not rt.store.exists(keys.upload_key(upload_id))  # later PUTs are never ingested
    assert [Message.decode(m).args for m in rt.broker.queues[QUEUE_NAME].queue] == [(job.id,)]
    _, same = uploads.complete_upload(rt, upload_id)
    assert same is not None and same.id == job.id
    assert rt.broker.queues[QUEUE_NAME].qsize() == 1


def test_complete_refuses_missing_or_wrong_sized_bytes(rt: Runtime) -> None:
    upload_id = _open(rt)
    with pytest.raises(ConflictError, match="nothing was uploaded"):
        uploads.complete_upload(rt, upload_id)
    rt.store.put(keys.upload_key(upload_id), io.BytesIO(BYTES[:-1]))
    with pytest.raises(ConflictError, match=f"holds {len(BYTES) - 1} bytes"):
        uploads.complete_upload(rt, upload_id)
    assert [k for k in rt.store.list("") if k != keys.upload_key(upload_id)] == []
    assert uploads.load_upload(rt, upload_id)[0].status == UploadStatus.AWAITING_UPLOAD.value


def test_cancel_deletes_the_staged_and_frozen_copies(rt: Runtime) -> None:
    waiting = _open(rt)
    rt.store.put(keys.upload_key(waiting), io.BytesIO(BYTES))
    row, _ = uploads.cancel_upload(rt, waiting)
    assert row.status == UploadStatus.CANCELLED.value
    assert not rt.store.exists(keys.upload_key(waiting))
    assert uploads.cancel_upload(rt, waiting)[0].status == UploadStatus.CANCELLED.value
    with pytest.raises(ConflictError, match="was cancelled"):
        uploads.complete_upload(rt, waiting)

    processing = _open(rt)
    rt.store.put(keys.upload_key(processing), io.BytesIO(BYTES))
    _, job = uploads.complete_upload(rt, processing)
    frozen = repo.params_of(job).source.key
    assert rt.store.exists(frozen)
    row, job = uploads.cancel_upload(rt, processing)
    assert row.status == UploadStatus.CANCELLED.value and job.status == "cancelled"
    assert not rt.store.exists(frozen)
