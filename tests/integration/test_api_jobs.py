"""The jobs API on real media: submit from a store key or an http(s) URL with the
renditions wanted, read, list with filters and pages, cancel (no worker resurrects a
cancelled job), retry (only what failed is redone), idempotency, scopes, and one
run against a real `mediamill worker` on PostgreSQL + Redis + S3."""

from __future__ import annotations

import functools
import hashlib
import http.server
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import Api, running_api
from support import raw_job

from mediamill.schemas.errors import MediaMillError, ProcessingTimeoutError, TransientError
from mediamill.schemas.jobs import JobStage, JobType
from mediamill.storage import outbox, repo
from mediamill.storage.models import JobRow, OutboxEventRow
from mediamill.workers.queue import QUEUE_NAME

pytestmark = pytest.mark.integration

JOB_TIMEOUT_S = 120.0
MP3 = {"format": "mp3", "bitrate": 128000, "channels": 2}
OPUS = {"format": "opus", "bitrate": 96000, "channels": 2}
OGG = {"format": "ogg", "bitrate": 96000, "channels": 1}


# ---- helpers and fixtures -------------------------------------------------------------------


def put_sample(api: Api, path: Path, key: str) -> str:
    with path.open("rb") as f:
        api.rt.store.put(key, f)
    return key


def post_job(api: Api, body: dict, headers: dict | None = None):
    return api.client.post("/v0/jobs", json=body, headers=headers or api.admin)


def wait_job(api: Api, job_id: str, timeout_s: float = JOB_TIMEOUT_S) -> dict:
    """Poll GET /v0/jobs/{id} until the job is finished; the last body."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = api.client.get(f"/v0/jobs/{job_id}", headers=api.read)
        assert r.status_code == 200, r.text
        job = r.json()
        if job["status"] in {"succeeded", "failed", "cancelled"}:
            return job
        assert time.monotonic() < deadline, f"job {job_id} did not finish: {job}"
        time.sleep(0.1)


def wait_until(predicate, timeout_s: float = JOB_TIMEOUT_S, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def renditions_by_spec(api: Api, asset_id: str) -> dict[str, dict]:
    with api.rt.db.session() as s:
        return {r.spec.spec_id: r.to_json_dict() for r in repo.list_renditions(s, asset_id)}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def paused_api(embedded_env) -> Iterator[Api]:
    """The API with no worker: jobs stay queued until a test starts one."""
    with running_api(run_worker=False) as running:
        yield running


def _api_with_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> Iterator[Api]:
    from mediamill.config.settings import get_settings

    for name, value in env.items():
        monkeypatch.setenv(f"MEDIAMILL_{name}", value)
    get_settings.cache_clear()
    with running_api() as running:
        yield running


@pytest.fixture
def private_url_api(embedded_env, monkeypatch) -> Iterator[Api]:
    """The API with loopback URL sources allowed (the file server below is on 127.0.0.1)."""
    yield from _api_with_env(monkeypatch, ALLOW_PRIVATE_URL_INGEST="true")


@pytest.fixture
def fast_retry_api(embedded_env, monkeypatch) -> Iterator[Api]:
    """One retry after a few milliseconds, so a transient-then-permanent failure is quick."""
    yield from _api_with_env(
        monkeypatch, MAX_RETRIES="1", RETRY_MIN_BACKOFF_MS="10", RETRY_MAX_BACKOFF_MS="50"
    )


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", "/" + self.path.split("/", 2)[2])
            self.end_headers()
            return
        if self.path.startswith("/unsized/"):  # no Content-Length: the body ends at close
            data = (Path(self.directory) / self.path.split("/", 2)[2]).read_bytes()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(data)
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture
def file_server(samples: dict[str, Path]) -> Iterator[str]:
    """The samples over HTTP on a loopback port (`/redirect/<name>` answers 302)."""
    directory = next(iter(samples.values())).parent
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(directory))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# ---- create --------------------------------------------------------------------------------


def test_create_from_a_store_key_makes_only_the_renditions_asked_for(api, samples) -> None:
    key = put_sample(api, samples["music.flac"], "media/music.flac")
    r = post_job(api, {"source": {"key": key}, "renditions": [MP3], "package": False})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["type"] == "ingest" and created["status"] in {"queued", "running"}
    assert r.headers["location"] == f"/v0/jobs/{created['id']}"
    job = wait_job(api, created["id"])
    assert job["status"] == "succeeded", job
    asset_id = sha256_of(samples["music.flac"])
    assert job["assetId"] == asset_id and job["stage"] == "done"
    # One child per rendition made, and nothing else: no defaults, no package ladder.
    assert [c["type"] for c in job["children"]] == ["rendition"]
    assert job["children"][0]["status"] == "succeeded"
    made = renditions_by_spec(api, asset_id)
    assert list(made) == ["mp3-128000-2ch-48000hz"]
    assert made["mp3-128000-2ch-48000hz"]["status"] == "ready"
    assert made["mp3-128000-2ch-48000hz"]["codec"] == "mp3"
    assert made["mp3-128000-2ch-48000hz"]["channels"] == 2
    with api.rt.db.session() as s:
        assert repo.list_packages(s, asset_id) == []
    assert api.rt.store.exists(key), "a source outside incoming/ is left where it was"

    # The same bytes again, asking for more: the known asset is not analysed again, the
    # new rendition is planned on it, and the defaults are added when asked for.
    r = post_job(
        api,
        {"source": {"key": key}, "renditions": [OGG], "defaultRenditions": True, "package": False},
    )
    again = wait_job(api, r.json()["id"])
    assert again["status"] == "succeeded", again
    assert again["assetId"] == asset_id
    made = renditions_by_spec(api, asset_id)
    assert set(made) == {
        "mp3-128000-2ch-48000hz",  # the first job's, left alone
        "ogg-96000-1ch-48000hz",
        "aac-128000-2ch-48000hz",
        "opus-96000-2ch-48000hz",
    }
    assert all(m["status"] == "ready" for m in made.values())
    assert made["ogg-96000-1ch-48000hz"]["channels"] == 1
    assert len(again["children"]) == 3
    with api.rt.db.session() as s:
        assert len(outbox.list_events(s, "asset.analysed")) == 1


def test_create_from_an_http_url_runs_the_default_pipeline(
    private_url_api, file_server, samples
) -> None:
    api = private_url_api
    r = post_job(api, {"source": {"url": f"{file_server}/redirect/speech.wav"}})
    assert r.status_code == 201, r.text
    job = wait_job(api, r.json()["id"])
    assert job["status"] == "succeeded", job
    asset_id = sha256_of(samples["speech.wav"])
    assert job["assetId"] == asset_id
    with api.rt.db.session() as s:
        asset = repo.asset_from_row(s, repo.get_asset_row(s, asset_id))
        packages = repo.list_packages(s, asset_id)
    assert asset.size_bytes == samples["speech.wav"].stat().st_size
    assert asset.duration_ms == pytest.approx(5000, abs=50)
    # Nothing asked for: the default audio renditions and the AAC package ladder.
    made = renditions_by_spec(api, asset_id)
    assert {"mp3", "aac", "opus"} <= {spec.split("-")[0] for spec in made}
    assert all(m["status"] == "ready" for m in made.values())
    assert [p.status.value for p in packages] == ["ready"]

    missing = wait_job(
        api, post_job(api, {"source": {"url": f"{file_server}/nope.wav"}}).json()["id"]
    )
    assert missing["status"] == "failed" and missing["error"]["name"] == "ModelNotFoundError"
    assert "404" in missing["error"]["message"]

    # Too big: refused from the declared length, and while streaming when none is declared.
    api.rt.settings.url_ingest_max_bytes = 100_000
    for path in ("music.flac", "unsized/music.flac"):
        r = post_job(api, {"source": {"url": f"{file_server}/{path}"}})
        big = wait_job(api, r.json()["id"])
        assert big["status"] == "failed" and big["error"]["name"] == "FileTooLargeError"
        assert "larger than 100000 bytes" in big["error"]["message"], big
    assert list(api.rt.store.list("originals/")) == [f"originals/{asset_id}"]


def test_url_sources_are_checked_before_and_when_fetched(api, file_server) -> None:
    from mediamill.schemas.errors import InvalidRequestError
    from mediamill.workers.url_source import open_source_url

    for url, words in [
        (f"{file_server}/speech.wav", "non-public address"),
        ("http://localhost:9/x.wav", "non-public address"),
        ("http://169.254.169.254/latest/meta-data", "non-public address"),
        ("http://[::ffff:127.0.0.1]/x.wav", "non-public address"),
        ("file:///etc/passwd", "only http(s)"),
        ("ftp://example.com/x.wav", "only http(s)"),
        ("http://user:pw@example.com/x.wav", "credentials"),
        ("http:///nohost", "no host"),
    ]:
        r = post_job(api, {"source": {"url": url}})
        assert r.status_code == 400, (url, r.text)
        assert r.json()["name"] == "InvalidRequestError" and words in r.json()["message"], url
    # The worker checks again at fetch time (DNS may answer differently by then).
    with (
        pytest.raises(InvalidRequestError, match="non-public"),
        open_source_url(
            f"{file_server}/speech.wav",
            allow_private=False,
            max_bytes=10,
            timeout_s=5,
            read_timeout_s=5,
        ),
    ):
        pass
    with api.rt.db.session() as s:
        assert repo.list_jobs(s)[0] == []


def test_create_refuses_what_it_cannot_do(api, samples) -> None:
    key = put_sample(api, samples["music.flac"], "media/music.flac")
    cases = [
        ({"source": {"key": "../etc/passwd"}}, 400, "InvalidRequestError"),
        ({"source": {"key": "media/absent.flac"}}, 404, "ModelNotFoundError"),
        ({"source": {}}, 400, "InvalidRequestError"),
        ({"source": {"key": key, "url": "http://example.com/a"}}, 400, "InvalidRequestError"),
        ({"source": {"key": key}, "rendition": [MP3]}, 400, "InvalidRequestError"),
        (
            {"source": {"key": key}, "renditions": [{"format": "mp3", "channels": 2}]},
            400,
            "InvalidRequestError",
        ),
        (
            # Any bitrate the encoder delivers is taken (issue 16); 12345 no MP3 carries.
            {"source": {"key": key}, "renditions": [{**MP3, "bitrate": 12345}]},
            400,
            "UnsupportedRenditionError",
        ),
        ({"source": {"key": key}, "renditions": [{"format": "wav"}]}, 400, "InvalidRequestError"),
        (
            {"source": {"key": key}, "renditions": [{"format": "mp4", "bitrate": 800000}]},
            400,
            "InvalidRequestError",
        ),
        (
            {"source": {"key": key}, "renditions": [{**OPUS, "sampleRate": 44100}]},
            400,
            "UnsupportedRenditionError",
        ),
        (
            {
                "source": {"key": key},
                "renditions": [{**MP3, "sampleRate": 16000, "bitrate": 320000}],
            },
            400,
            "UnsupportedRenditionError",
        ),
        ({"source": {"key": key}, "renditions": [MP3] * 33}, 400, "InvalidRequestError"),
    ]
    for body, status, name in cases:
        r = post_job(api, body)
        assert (r.status_code, r.json()["name"]) == (status, name), (body, r.text)
        assert r.json()["statusCode"] == status and r.json()["requestId"]
    with api.rt.db.session() as s:
        assert repo.list_jobs(s)[0] == [], "nothing refused was written"


def test_renditions_the_original_cannot_give_fail_the_job(api, samples) -> None:
    key = put_sample(api, samples["mono.flac"], "media/mono.flac")
    r = post_job(
        api, {"source": {"key": key}, "renditions": [MP3], "exact": True, "package": False}
    )
    job = wait_job(api, r.json()["id"])
    assert job["status"] == "failed" and job["stage"] == "analyse"
    assert job["error"]["name"] == "LowQualityError" and "2 channels" in job["error"]["message"]
    with api.rt.db.session() as s:
        asset = repo.get_asset_row(s, sha256_of(samples["mono.flac"]))
        assert asset.status == "analysed", "the analysis is kept"
    assert renditions_by_spec(api, asset.id) == {}
    # A rendition no original of this kind can give fails the job, even without exact.
    video = {"format": "mp4", "height": 360, "bitrate": 800000}
    r = post_job(api, {"source": {"key": key}, "renditions": [video, MP3], "package": False})
    job = wait_job(api, r.json()["id"])
    assert job["status"] == "failed" and job["error"]["name"] == "UnsupportedRenditionError"
    assert "no video" in job["error"]["message"] and job["children"] == []
    assert renditions_by_spec(api, asset.id) == {}


def test_idempotency_key_replays_the_created_job(paused_api, samples) -> None:
    api = paused_api
    key = put_sample(api, samples["speech.wav"], "media/speech.wav")
    headers = {**api.admin, "Idempotency-Key": "create-speech-1"}
    body = {"source": {"key": key}, "renditions": [MP3]}
    first = post_job(api, body, headers)
    again = post_job(api, body, headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    other = post_job(api, {**body, "package": False}, headers)
    assert other.status_code == 409 and other.json()["name"] == "ConflictError"
    with api.rt.db.session() as s:
        jobs, _ = repo.list_jobs(s)
    assert [j.id for j in jobs] == [first.json()["id"]]
    with api.rt.db.session() as s:
        params = repo.get_job_row(s, first.json()["id"]).params
    assert params["source"] == {"kind": "store", "key": key}
    assert params["plan"] == {
        "renditions": [{**MP3, "sampleRate": None, "height": None, "loudness": None}],
        "defaults": False,
        "exact": False,
        "package": True,
    }


# ---- read and list -------------------------------------------------------------------------


def test_get_returns_the_job_with_its_children_or_404(paused_api, samples) -> None:
    api = paused_api
    asset_id = "a" * 64
    with api.rt.db.session() as s:
        parent = raw_job(s, JobType.TRANSCODE, JobStage.TRANSCODE, {}, asset_id=asset_id)
        kids = [
            raw_job(
                s,
                JobType.RENDITION,
                JobStage.TRANSCODE,
                {},
                asset_id=asset_id,
                parent_id=parent.id,
            )
            for _ in range(2)
        ]
    r = api.client.get(f"/v0/jobs/{parent.id}", headers=api.read)
    assert r.status_code == 200
    job = r.json()
    assert job["id"] == parent.id and job["type"] == "transcode" and job["assetId"] == asset_id
    assert job["status"] == "queued" and job["stage"] == "transcode" and job["progress"] == 0.0
    assert [c["id"] for c in job["children"]] == [k.id for k in kids]
    assert all(c["parentId"] == parent.id for c in job["children"])
    assert set(job) >= {"attempts", "error", "createdAt", "startedAt", "finishedAt"}
    missing = api.client.get(f"/v0/jobs/{uuid.uuid4()}", headers=api.read)
    assert missing.status_code == 404
    assert missing.json()["name"] == "ModelNotFoundError"


def test_list_filters_and_pages_through_every_job(paused_api, samples) -> None:
    api = paused_api
    key = put_sample(api, samples["speech.wav"], "media/speech.wav")
    ingests = [post_job(api, {"source": {"key": key}}).json()["id"] for _ in range(5)]
    asset_a, asset_b = "a" * 64, "b" * 64
    with api.rt.db.session() as s:
        t1 = raw_job(s, JobType.TRANSCODE, JobStage.TRANSCODE, {}, asset_id=asset_a)
        raw_job(
            s, JobType.RENDITION, JobStage.TRANSCODE, {}, asset_id=asset_a, parent_id=t1.id
        )
        t2 = raw_job(s, JobType.TRANSCODE, JobStage.TRANSCODE, {}, asset_id=asset_b)
        p1 = raw_job(s, JobType.PACKAGE, JobStage.PACKAGE, {}, asset_id=asset_a)
        repo.get_job_row(s, ingests[1]).status = "failed"
        repo.get_job_row(s, t2.id).status = "failed"
    everything = [p1.id, t2.id, t1.id, *reversed(ingests)]  # newest first, no children

    def page_through(query: str, limit: int) -> list[str]:
        seen, cursor, pages = [], None, 0
        while True:
            url = f"/v0/jobs?limit={limit}{query}" + (f"&cursor={cursor}" if cursor else "")
            r = api.client.get(url, headers=api.read)
            assert r.status_code == 200, r.text
            body = r.json()
            assert set(body) == {"data", "nextCursor"} and len(body["data"]) <= limit
            seen += [j["id"] for j in body["data"]]
            pages += 1
            cursor = body["nextCursor"]
            if cursor is None:
                return seen
            assert pages < 20

    assert page_through("", 3) == everything
    assert page_through("", 1) == everything
    assert page_through("", 200) == everything
    assert page_through("&status=failed", 1) == [t2.id, ingests[1]]
    assert page_through("&type=transcode", 1) == [t2.id, t1.id]
    assert page_through("&type=ingest&status=queued", 2) == [
        i for i in reversed(ingests) if i != ingests[1]
    ]
    assert page_through(f"&assetId={asset_a}", 2) == [p1.id, t1.id]
    assert page_through(f"&assetId={asset_a}&type=package", 5) == [p1.id]
    assert page_through("&status=cancelled", 5) == []
    default_page = api.client.get("/v0/jobs", headers=api.read).json()
    assert [j["id"] for j in default_page["data"]] == everything
    assert default_page["nextCursor"] is None

    for query in [
        "status=done",
        "type=thumbnail",
        "limit=0",
        "limit=201",
        "limit=ten",
        "assetId=xyz",
        f"cursor={uuid.uuid4()}",
        "cursor=",
    ]:
        r = api.client.get(f"/v0/jobs?{query}", headers=api.read)
        assert r.status_code == 400, (query, r.text)
        assert r.json()["name"] == "InvalidRequestError"


@pytest.mark.security
def test_read_keys_read_and_only_admin_keys_write(paused_api, samples) -> None:
    api = paused_api
    key = put_sample(api, samples["speech.wav"], "media/speech.wav")
    job_id = post_job(api, {"source": {"key": key}}).json()["id"]
    for path in ["/v0/jobs", f"/v0/jobs/{job_id}/cancel", f"/v0/jobs/{job_id}/retry"]:
        r = api.client.post(path, json={"source": {"key": key}}, headers=api.read)
        assert r.status_code == 403, path
        assert r.json()["name"] == "PermissionDeniedError"
        assert api.client.post(path, json={"source": {"key": key}}).status_code == 401
    assert api.client.get(f"/v0/jobs/{job_id}", headers=api.read).json()["status"] == "queued"
    assert api.client.get("/v0/jobs", headers=api.read).status_code == 200
    assert api.client.get("/v0/jobs").status_code == 401


# ---- cancel --------------------------------------------------------------------------------


def test_cancel_of_a_queued_job_means_no_worker_ever_runs_it(paused_api, samples) -> None:
    from mediamill.workers.sweeper import sweep
    from mediamill.workers.worker import InProcessWorker

    api = paused_api
    key = put_sample(api, samples["speech.wav"], "media/speech.wav")
    job_id = post_job(api, {"source": {"key": key}}).json()["id"]
    r = api.client.post(f"/v0/jobs/{job_id}/cancel", headers=api.admin)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled" and r.json()["finishedAt"] is not None
    again = api.client.post(f"/v0/jobs/{job_id}/cancel", headers=api.admin)
    assert again.status_code == 409 and again.json()["name"] == "ConflictError"
    retried = api.client.post(f"/v0/jobs/{job_id}/retry", headers=api.admin)
    assert retried.status_code == 409
    assert api.client.post(f"/v0/jobs/{uuid.uuid4()}/cancel", headers=api.admin).status_code == 404

    # Its message is still in the queue: a worker now takes it and must skip it, and
    # the sweeper must not send it again.
    assert api.rt.broker.queues[QUEUE_NAME].qsize() == 1
    with InProcessWorker(api.rt):
        api.rt.broker.join(QUEUE_NAME, timeout=30_000)
        assert sweep(api.rt, queued_older_than_s=0) == 0
    job = api.client.get(f"/v0/jobs/{job_id}", headers=api.read).json()
    assert job["status"] == "cancelled" and job["stage"] == "store" and job["attempts"] == 0
    assert job["startedAt"] is None and job["assetId"] is None
    assert list(api.rt.store.list("originals/")) == []


def test_cancel_during_analysis_stops_the_job_there(api, samples, monkeypatch) -> None:
    from mediamill.workers.native import NativePool

    release, entered = threading.Event(), threading.Event()
    real = NativePool.analyse

    def held_analysis(pool, path, **kwargs):
        if kwargs.get("stage", "analyse") == "analyse":
            entered.set()
            assert release.wait(60), "the test never released the analysis"
        return real(pool, path, **kwargs)

    monkeypatch.setattr(NativePool, "analyse", held_analysis)
    key = put_sample(api, samples["speech.wav"], "media/speech.wav")
    job_id = post_job(api, {"source": {"key": key}}).json()["id"]
    wait_until(entered.is_set, what="the analysis to start")
    r = api.client.post(f"/v0/jobs/{job_id}/cancel", headers=api.admin)
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text

    release.set()  # the analysis completes; planning renditions would resurrect the job
    api.rt.broker.join(QUEUE_NAME, timeout=60_000)
    job = api.client.get(f"/v0/jobs/{job_id}", headers=api.read).json()
    assert (job["status"], job["stage"], job["children"]) == ("cancelled", "analyse", [])
    asset_id = sha256_of(samples["speech.wav"])
    assert renditions_by_spec(api, asset_id) == {}
    with api.rt.db.session() as s:
        # What was learnt about the bytes is kept; nothing was planned from it.
        assert repo.get_asset_row(s, asset_id).status == "analysed"
        assert s.query(JobRow).count() == 1


def test_cancel_of_a_running_transcode_is_not_undone_by_its_worker(
    api, samples, monkeypatch, caplog
) -> None:
    from mediamill.pipeline import transcode

    release, entered = threading.Event(), threading.Event()
    real_produce = transcode.produce

    def held_produce(*args, **kwargs):
        entered.set()
        assert release.wait(60), "the test never released the transcode"
        return real_produce(*args, **kwargs)

    monkeypatch.setattr(transcode, "produce", held_produce)
    key = put_sample(api, samples["music.flac"], "media/music.flac")
    body = {"source": {"key": key}, "renditions": [MP3, OPUS], "package": False}
    job_id = post_job(api, body).json()["id"]
    wait_until(entered.is_set, what="the transcode to start")
    running = api.client.get(f"/v0/jobs/{job_id}", headers=api.read).json()
    assert (running["status"], running["stage"]) == ("running", "transcode")
    assert [c["status"] for c in running["children"]] == ["running", "running"]

    r = api.client.post(f"/v0/jobs/{job_id}/cancel", headers=api.admin)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    assert [c["status"] for c in r.json()["children"]] == ["cancelled", "cancelled"]
    asset_id = running["assetId"]
    assert renditions_by_spec(api, asset_id) == {}, "unmade renditions are dropped at once"

    release.set()  # the worker finishes its encode and must not record anything
    api.rt.broker.join(QUEUE_NAME, timeout=60_000)
    job = api.client.get(f"/v0/jobs/{job_id}", headers=api.read).json()
    assert job["status"] == "cancelled" and job["stage"] == "transcode"
    assert [c["status"] for c in job["children"]] == ["cancelled", "cancelled"]
    assert renditions_by_spec(api, asset_id) == {}
    with api.rt.db.session() as s:
        assert outbox.list_events(s, "rendition.ready") == []
        assert outbox.list_events(s, "job.failed") == []
    # The worker noticed the cancel and stopped cleanly (no crash on a vanished row).
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text

    # Nothing is stuck: asking again makes the renditions afresh.
    body["defaultRenditions"] = False
    again = wait_job(api, post_job(api, body).json()["id"])
    assert again["status"] == "succeeded", again
    made = renditions_by_spec(api, asset_id)
    assert sorted(m["status"] for m in made.values()) == ["ready", "ready"]


# ---- retry ---------------------------------------------------------------------------------


class StoreRefusedError(MediaMillError):
    """A permanent failure, injected into the store for one rendition."""


def test_retry_remakes_only_the_failed_rendition(api, samples, monkeypatch) -> None:
    store = api.rt.store
    real_put = store.put
    puts: list[str] = []
    failing = {"on": True}

    def flaky_put(key, stream, **kwargs):
        if key.startswith("renditions/"):
            puts.append(key)
            if failing["on"] and len(puts) == 2:
                raise StoreRefusedError("the store refused this object")
        return real_put(key, stream, **kwargs)

    monkeypatch.setattr(store, "put", flaky_put)
    key = put_sample(api, samples["music.flac"], "media/music.flac")
    body = {"source": {"key": key}, "renditions": [MP3, OPUS], "package": False}
    job_id = post_job(api, body).json()["id"]
    failed = wait_job(api, job_id)
    assert failed["status"] == "failed" and failed["stage"] == "transcode"
    assert failed["error"]["name"] == "StoreRefusedError"
    assert sorted(c["status"] for c in failed["children"]) == ["failed", "succeeded"]
    asset_id = failed["assetId"]
    before = renditions_by_spec(api, asset_id)
    ready = [spec for spec, r in before.items() if r["status"] == "ready"]
    broken = [spec for spec, r in before.items() if r["status"] == "failed"]
    assert len(ready) == len(broken) == 1
    assert before[broken[0]]["error"]["name"] == "StoreRefusedError"

    failing["on"] = False
    puts.clear()
    r = api.client.post(f"/v0/jobs/{job_id}/retry", headers=api.admin)
    assert r.status_code == 200, r.text
    assert r.json()["status"] in {"queued", "running"} and r.json()["stage"] == "transcode"
    job = wait_job(api, job_id)
    assert job["status"] == "succeeded" and job["error"] is None, job
    assert [c["status"] for c in job["children"]] == ["succeeded", "succeeded"]
    after = renditions_by_spec(api, asset_id)
    assert [p.rsplit("/", 1)[-1].split(".")[0] for p in puts] == broken, "only it was redone"
    assert after[ready[0]] == before[ready[0]], "the ready rendition was not touched"
    assert after[broken[0]]["status"] == "ready" and after[broken[0]]["codec"] == "opus"
    assert after[broken[0]]["error"] is None

    done = api.client.post(f"/v0/jobs/{job_id}/retry", headers=api.admin)
    assert done.status_code == 409 and "succeeded" in done.json()["message"]
    child = job["children"][0]["id"]
    assert api.client.post(f"/v0/jobs/{child}/retry", headers=api.admin).status_code == 409


def test_retry_after_a_transient_then_permanent_failure(fast_retry_api, samples, monkeypatch):
    from mediamill.workers.native import NativePool

    api = fast_retry_api
    real = NativePool.analyse
    calls: list[str] = []

    def analyse_file(pool, path, **kwargs):
        if kwargs.get("stage", "analyse") != "analyse":  # measuring outputs
            return real(pool, path, **kwargs)
        calls.append(str(path))
        if len(calls) == 1:
            raise TransientError("the disk hiccuped")
        if len(calls) == 2:
            raise ProcessingTimeoutError("the analysis ran past its time limit")
        return real(pool, path, **kwargs)

    monkeypatch.setattr(NativePool, "analyse", analyse_file)
    key = put_sample(api, samples["speech.wav"], "media/speech.wav")
    job_id = post_job(api, {"source": {"key": key}, "package": False}).json()["id"]
    failed = wait_job(api, job_id)
    assert failed["status"] == "failed" and failed["stage"] == "analyse", failed
    assert failed["error"]["name"] == "ProcessingTimeoutError" and failed["attempts"] == 2
    with api.rt.db.session() as s:
        assert repo.get_asset_row(s, failed["assetId"]).status == "stored"

    r = api.client.post(f"/v0/jobs/{job_id}/retry", headers=api.admin)
    assert r.status_code == 200, r.text
    assert (r.json()["stage"], r.json()["error"]["name"]) == ("analyse", "ProcessingTimeoutError")
    assert r.json()["status"] in {"queued", "running"} and r.json()["finishedAt"] is None
    job = wait_job(api, job_id)
    assert job["status"] == "succeeded" and job["stage"] == "done", job
    assert len(calls) == 3
    made = renditions_by_spec(api, job["assetId"])
    assert sorted(made) == [
        "aac-128000-2ch-48000hz",
        "mp3-128000-2ch-48000hz",
        "opus-96000-2ch-48000hz",
    ]
    with api.rt.db.session() as s:
        failures = [e.data["job"]["id"] for e in outbox.list_events(s, "job.failed")]
        rows = s.query(JobRow).filter(JobRow.parent_id.is_(None)).count()
        analysed = s.query(OutboxEventRow).filter(OutboxEventRow.type == "asset.analysed").count()
    assert failures == [job_id] and rows == 1 and analysed == 1


# ---- the distributed stack -----------------------------------------------------------------


def test_a_worker_process_runs_a_job_created_over_http(
    embedded_env, postgres_url, redis_url, moto_server, samples, tmp_path
) -> None:
    from integration.conftest import make_s3_store

    from mediamill.config.settings import Settings
    from mediamill.storage.db import database_for

    bucket = f"mm-{uuid.uuid4().hex[:12]}"
    make_s3_store(moto_server, bucket)
    env = {
        "MEDIAMILL_BROKER_URL": redis_url,
        "MEDIAMILL_DATABASE_URL": postgres_url,
        "MEDIAMILL_STORAGE_URL": f"s3://{bucket}",
        "MEDIAMILL_S3_ENDPOINT_URL": moto_server.endpoint_url,
        "MEDIAMILL_S3_ACCESS_KEY_ID": "testing",
        "MEDIAMILL_S3_SECRET_ACCESS_KEY": "testing",
        "MEDIAMILL_SIGNING_SECRET": "test-signing-secret-0123456789",
        "MEDIAMILL_DATA_DIR": str(tmp_path / "data"),
        "MEDIAMILL_SWEEP_INTERVAL_S": "1",
        "MEDIAMILL_REQUEUE_AFTER_S": "5",
    }
    settings = Settings(**{k.removeprefix("MEDIAMILL_").lower(): v for k, v in env.items()})
    database_for(postgres_url).upgrade()
    worker_env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "mediamill", "worker", "--threads", "2"],
        env={**worker_env, **env},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with running_api(settings, run_worker=False) as api:
            key = put_sample(api, samples["music.flac"], "media/music.flac")
            body = {"source": {"key": key}, "renditions": [MP3], "package": False}
            r = post_job(api, body, {**api.admin, "Idempotency-Key": "dist-1"})
            assert r.status_code == 201, r.text
            assert (
                post_job(api, body, {**api.admin, "Idempotency-Key": "dist-1"}).json() == r.json()
            )
            job_id = r.json()["id"]
            deadline = time.monotonic() + JOB_TIMEOUT_S
            while (job := api.client.get(f"/v0/jobs/{job_id}", headers=api.read).json())[
                "status"
            ] not in {"succeeded", "failed", "cancelled"}:
                assert worker.poll() is None, f"worker died:\n{worker.stderr.read()}"
                assert time.monotonic() < deadline, job
                time.sleep(0.2)
            assert job["status"] == "succeeded", job
            asset_id = sha256_of(samples["music.flac"])
            assert job["assetId"] == asset_id
            assert [c["status"] for c in job["children"]] == ["succeeded"]
            made = renditions_by_spec(api, asset_id)
            assert list(made) == ["mp3-128000-2ch-48000hz"]
            assert made["mp3-128000-2ch-48000hz"]["status"] == "ready"
            assert api.rt.store.exists(made["mp3-128000-2ch-48000hz"]["storageKey"])
            assert api.rt.store.exists(key), "a caller's own key is never removed by ingest"
            listed = api.client.get(f"/v0/jobs?assetId={asset_id}", headers=api.read).json()
            assert [j["id"] for j in listed["data"]] == [job_id]
    finally:
        worker.terminate()
        worker.wait(timeout=60)


def test_source_keys_under_mediamills_own_prefixes_are_refused(paused_api, samples) -> None:
    """`incoming/` holds other uploads' staged bytes (ingest would consume them) and the
    rest is MediaMill's own output: none is a caller's source, and nothing is touched."""
    api = paused_api
    for prefix in ("incoming/", "originals/", "renditions/", "packages/"):
        key = put_sample(api, samples["music.ogg"], f"{prefix}someone-else")
        r = post_job(api, {"source": {"key": key}})
        assert r.status_code == 400, (key, r.text)
        assert (
            r.json()["name"] == "InvalidRequestError" and "MediaMill's own" in r.json()["message"]
        )
        assert api.rt.store.exists(key)
    with api.rt.db.session() as s:
        assert repo.list_jobs(s)[0] == [], "nothing refused was written"
    key = put_sample(api, samples["music.ogg"], "media/incoming/a.ogg")  # a prefix deeper is fine
    assert post_job(api, {"source": {"key": key}}).status_code == 201


def test_the_created_job_and_its_idempotency_answer_commit_together(
    paused_api, samples, monkeypatch
) -> None:
    """The answer is written in the job's own transaction: should that fail, neither
    the job nor an answer is left, and a retry with the key makes the job."""
    from mediamill.storage import idempotency

    api = paused_api
    key = put_sample(api, samples["music.ogg"], "media/together.ogg")
    headers = {**api.admin, "Idempotency-Key": "together-1"}

    def failing(*args, **kwargs) -> bool:
        raise RuntimeError("database gone mid-transaction")

    monkeypatch.setattr(idempotency, "record_answer", failing)
    assert post_job(api, {"source": {"key": key}}, headers).status_code == 500
    monkeypatch.undo()
    with api.rt.db.session() as s:
        assert repo.list_jobs(s)[0] == [], "the job rolled back with its answer"
    first = post_job(api, {"source": {"key": key}}, headers)
    assert first.status_code == 201, first.text
    again = post_job(api, {"source": {"key": key}}, headers)
    assert again.json()["id"] == first.json()["id"]
    with api.rt.db.session() as s:
        assert [j.id for j in repo.list_jobs(s)[0]] == [first.json()["id"]]
