"""Issue 15 item 4: bucket notifications are checked against the object, over HTTP
on a real S3 endpoint. Records with made-up eTags for one key make one job; a record
of an object that does not exist makes none (acknowledged, logged); more records than
`MEDIAMILL_BUCKET_EVENT_MAX_RECORDS` is a 413 before anything is read."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_support import Api, running_api
from sqlalchemy import func, select

from mediamill.config.settings import Settings
from mediamill.storage.models import BucketEventRow, JobRow

pytestmark = pytest.mark.integration

TOKEN = "bucket-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def _record(bucket: str, key: str, **obj: Any) -> dict[str, Any]:
    return {
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, **obj}},
    }


def _count(api: Api, model: type) -> int:
    with api.rt.db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def _bucket_settings(moto_server: Any, tmp_path: Path, **extra: Any) -> Settings:
    """A deployment on a fresh bucket of the moto endpoint, notifications on."""
    from integration.conftest import make_s3_store, s3_settings

    bucket = f"sec-{uuid.uuid4().hex[:12]}"
    make_s3_store(moto_server, bucket)
    return s3_settings(moto_server, tmp_path, bucket, bucket_events_token=TOKEN, **extra)


@pytest.fixture
def s3_api(embedded_env: Path, moto_server: Any, tmp_path: Path) -> Iterator[Api]:
    """The API on a fresh bucket of the S3 store, no worker, notifications on, at most
    1,000 records per body (the attack's size)."""
    settings = _bucket_settings(moto_server, tmp_path, bucket_event_max_records=1000)
    with running_api(settings, run_worker=False) as api:
        yield api


def test_a_thousand_records_with_a_thousand_etags_make_one_job(s3_api: Api) -> None:
    store = s3_api.rt.store
    store.client.put_object(Bucket=store.bucket, Key="inbox/one.ogg", Body=b"OggS" * 100)
    body = {"Records": [_record(store.bucket, "inbox/one.ogg", eTag=f"e{i}") for i in range(1000)]}
    r = s3_api.client.post("/v0/events/storage", json=body, headers=BEARER)
    assert r.status_code == 202, r.text
    answer = r.json()
    assert (answer["received"], answer["accepted"], answer["duplicates"]) == (1000, 1, 999)
    assert _count(s3_api, JobRow) == 1 and _count(s3_api, BucketEventRow) == 1


def test_a_record_of_a_missing_object_gets_no_job(
    s3_api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"Records": [_record(s3_api.rt.store.bucket, "inbox/ghost.ogg", eTag="e", size=9)]}
    with caplog.at_level(logging.INFO, logger="mediamill.workers.bucket"):
        r = s3_api.client.post("/v0/events/storage", json=body, headers=BEARER)
    assert r.status_code == 200, r.text
    [result] = r.json()["records"]
    assert result["outcome"] == "ignored" and result["reason"].startswith("no such object")
    assert "bucket record for 'inbox/ghost.ogg' ignored: no such object" in caplog.text
    assert _count(s3_api, JobRow) == 0 and _count(s3_api, BucketEventRow) == 0


def test_more_records_than_the_default_limit_are_a_413(
    embedded_env: Path, moto_server: Any, tmp_path: Path
) -> None:
    settings = _bucket_settings(moto_server, tmp_path)
    bucket = settings.resolved_storage_url.removeprefix("s3://").strip("/")
    assert settings.bucket_event_max_records == 100
    with running_api(settings, run_worker=False) as api:
        records = [_record(bucket, f"inbox/{i}.ogg", eTag="e") for i in range(101)]
        r = api.client.post("/v0/events/storage", json={"Records": records}, headers=BEARER)
        assert r.status_code == 413, r.text
        assert r.json()["name"] == "PayloadTooLargeError"
        assert "at most 100 records, not 101" in r.json()["message"]
        assert _count(api, JobRow) == 0


def test_the_local_store_refusal_names_no_server_path(embedded_env: Path) -> None:
    """Item 6's part for this route: the 400 says what kind of store, not where it is."""
    with running_api(Settings(bucket_events_token=TOKEN), run_worker=False) as api:
        body = {"Records": [_record("any", "inbox/x.flac", eTag="abc")]}
        r = api.client.post("/v0/events/storage", json=body, headers=BEARER)
        assert r.status_code == 400 and "need an S3 store" in r.json()["message"]
        assert str(embedded_env) not in r.text
        assert not re.search(r"(?<![:/\w])/(?:[\w.-]+/)+", r.json()["message"])
