"""Content Automation API assets through HTTP: upload (streamed, hashed once, analysed
once), retrieval through signed URLs, renditions on request, metadata with ETags and
stream URLs. On the embedded default with the real in-process worker, on PostgreSQL
+ Redis + S3 with a `mediamill worker` process, and a large upload measured for memory."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import av
import httpx
import pytest
from support import free_port

from mediamill.pipeline.analysis import analyse_file
from mediamill.pipeline.signing import NginxSigner, package_expires_in_s
from mediamill.schemas.jobs import JobType
from mediamill.schemas.keys import package_prefix
from mediamill.storage import outbox, repo
from mediamill.storage.models import JobRow, PackageRow, RenditionRow

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "mediamill"]
JOBS_DONE_TIMEOUT_S = 180.0


# ---- helpers (also used by test_api_legacy.py) -------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def upload(
    api, path: Path, *, wait_s: float | None = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    """POST /v0/assets with `path` as the `assetfile` part."""
    params = {"wait": str(wait_s)} if wait_s is not None else {}
    with path.open("rb") as f:
        return api.client.post(
            "/v0/assets",
            params=params,
            files={"assetfile": (path.name, f, "application/octet-stream")},
            headers={**api.admin, **(headers or {})},
        )


def wait_until(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def wait_jobs_done(rt, asset_id: str, timeout_s: float = JOBS_DONE_TIMEOUT_S) -> None:
    """Until no job of the asset is queued or running (ingest ends with the package)."""

    def idle() -> bool:
        with rt.db.session() as s:
            jobs = s.query(JobRow).filter(JobRow.asset_id == asset_id).all()
            return bool(jobs) and all(j.status in {"succeeded", "failed"} for j in jobs)

    wait_until(idle, timeout_s, f"the jobs of {asset_id}")


def verify_file_url(rt, url: str) -> str:
    """The store key a signed nginx file URL opens, after checking its token as the edge
    would (recomputed with the signing secret)."""
    settings = rt.settings
    base = settings.resolved_cdn_base_url.rstrip("/")
    assert url.startswith(base + "/"), url
    parsed = urlparse(url)
    key = parsed.path.removeprefix(urlparse(base).path).lstrip("/")
    query = parse_qs(parsed.query)
    expires = int(query["expires"][0])
    signer = NginxSigner(settings.resolved_cdn_base_url, settings.resolved_signing_secret())
    assert signer.verify_file(key, query["md5"][0], expires)
    assert not signer.verify_file(key, query["md5"][0] + "x", expires)
    assert 0 < expires - time.time() <= settings.file_url_expires_s + 5
    return key


def stored_file(rt, key: str) -> Path:
    """The local store's file under `key`."""
    path = Path(rt.store.root, *key.split("/"))
    assert path.is_file(), key
    return path


def assert_error(response: httpx.Response, status: int, name: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert body["name"] == name and body["statusCode"] == status, body
    assert body["requestId"] == response.headers["x-request-id"]
    return body


def store_asset_directly(rt, path: Path, *, analysed: bool) -> str:
    """An asset stored (and optionally analysed) with no job at all: states the upload
    path would pass through too quickly to observe."""
    with path.open("rb") as f:
        blob, _ = rt.store.put_content_addressed("originals", f)
    with rt.db.session() as s:
        repo.insert_asset_if_absent(s, blob.sha256, blob.key, blob.size_bytes, path.name)
        if analysed:
            repo.record_analysis(repo.get_asset_row(s, blob.sha256), analyse_file(path))
    return blob.sha256


def count_rows(rt, model, **where: Any) -> int:
    with rt.db.session() as s:
        return s.query(model).filter_by(**where).count()


# ---- upload ---------------------------------------------------------------------------------


def test_upload_streams_hashes_waits_for_analysis_and_same_bytes_are_one_asset(
    api, samples
) -> None:
    path = samples["music.flac"]
    sha = sha256_of(path)
    headers = {
        "assetType": "audio/x-flac",
        "assetLength": str(path.stat().st_size),
        "legacyTrackToken": "370456",
    }
    r = upload(api, path, wait_s=60, headers=headers)
    assert r.status_code == 201, r.text
    body = r.json()
    expected = analyse_file(path)
    assert body["originalAssetId"] == sha
    assert body["status"] == "analysed"
    assert body["lufs"] == pytest.approx(expected.loudness.integrated_lufs, abs=1e-9)
    assert body["channels"] == 2 and body["sampleRate"] == expected.media.sample_rate_hz
    assert abs(body["duration"] - 6000) <= 50
    assert body["bitrate"] == expected.media.bitrate_bps and body["bitrate"] > 0
    assert body["assetType"] == expected.media.asset_type
    assert body["sizeBytes"] == path.stat().st_size
    assert body["legacyTrackTokens"] == ["370456"] and body["deleted"] is False
    for field in ("created", "modified"):
        datetime.fromisoformat(body[field])
    assert r.headers["location"] == f"/v0/assets/{sha}/metadata"
    first_job = r.headers["x-job-id"]
    # The bytes were stored once, under their SHA-256.
    assert sha256_of(stored_file(api.rt, f"originals/{sha}")) == sha

    again = upload(api, path, headers={"legacyTrackToken": "370457"})
    assert again.status_code == 201
    assert again.json()["originalAssetId"] == sha
    assert again.json()["lufs"] == body["lufs"]  # known already: nothing to wait for
    assert again.json()["legacyTrackTokens"] == ["370456", "370457"]
    assert "x-job-id" not in again.headers
    wait_jobs_done(api.rt, sha)
    with api.rt.db.session() as s:
        ingests = s.query(JobRow).filter_by(asset_id=sha, type=JobType.INGEST.value).all()
        assert [j.id for j in ingests] == [first_job]
        assert ingests[0].status == "succeeded"
        assert "analyse" in ingests[0].params["stageSeconds"]
        assert ingests[0].params["source"] == {
            "kind": "stored",
            "key": f"originals/{sha}",
            "sha256": sha,
        }
        assert len(outbox.list_events(s, "asset.analysed")) == 1
        assert len(outbox.list_events(s, "asset.created")) == 1


def test_upload_refuses_bad_requests_and_keeps_nothing_it_refused(api, samples) -> None:
    path = samples["speech.wav"]
    size = path.stat().st_size
    with path.open("rb") as f:
        files = {"assetfile": (path.name, f.read())}
    assert_error(api.client.post("/v0/assets", files=files), 401, "AuthenticationError")
    assert_error(
        api.client.post("/v0/assets", files=files, headers=api.read), 403, "PermissionDeniedError"
    )
    r = api.client.post(
        "/v0/assets", files=files, headers={**api.admin, "assetLength": str(size + 1)}
    )
    assert (
        f"assetLength says {size + 1} bytes but {size} bytes"
        in (assert_error(r, 400, "InvalidRequestError")["message"])
    )
    r = api.client.post("/v0/assets", files={"other": ("x.wav", b"abc")}, headers=api.admin)
    assert "assetfile" in assert_error(r, 400, "InvalidRequestError")["message"]
    r = api.client.post("/v0/assets", data={"assetfile": "not a file"}, headers=api.admin)
    assert_error(r, 400, "InvalidRequestError")
    r = api.client.post("/v0/assets", files={"assetfile": ("e.wav", b"")}, headers=api.admin)
    assert "empty" in assert_error(r, 400, "InvalidRequestError")["message"]
    for bad in ({"assetType": "flac"}, {"assetLength": "12ab"}, {"legacyTrackToken": "x" * 200}):
        r = api.client.post("/v0/assets", files=files, headers={**api.admin, **bad})
        assert_error(r, 400, "InvalidRequestError")
    r = api.client.post("/v0/assets?wait=61", files=files, headers=api.admin)
    assert_error(r, 400, "InvalidRequestError")
    assert count_rows(api.rt, JobRow) == 0
    assert list(api.rt.store.list("originals/")) == []


def test_bad_media_is_a_422_once_analysed_and_cannot_be_transcoded_or_packaged(
    api, tmp_path
) -> None:
    bad = tmp_path / "noise.flac"
    bad.write_bytes(b"fLaC" + os.urandom(50_000))
    sha = sha256_of(bad)
    r = upload(api, bad, wait_s=60)
    body = assert_error(r, 422, r.json()["name"])
    assert body["name"] in {"CorruptMediaError", "UnsupportedMediaError"}
    assert sha in body["message"]
    again = upload(api, bad)  # the same bytes: the known verdict, at once
    assert again.status_code == 422 and again.json()["name"] == body["name"]
    assert count_rows(api.rt, JobRow, asset_id=sha) == 1
    meta = api.client.get(f"/v0/assets/{sha}/metadata", headers=api.read).json()
    assert meta["status"] == "failed" and meta["error"]["name"] == body["name"]
    r = api.client.get(f"/v0/assets/{sha}?bitrate=128000&channels=2&format=mp3", headers=api.read)
    assert_error(r, 409, "ModelInvalidError")
    assert_error(
        api.client.get(f"/v0/assets/{sha}/streams", headers=api.read), 409, "ModelInvalidError"
    )
    # The original itself is still served.
    r = api.client.get(f"/v0/assets/{sha}", headers=api.read, follow_redirects=False)
    assert r.status_code == 302
    assert verify_file_url(api.rt, r.headers["location"]) == f"originals/{sha}"


# ---- retrieval --------------------------------------------------------------------------------


def test_original_redirects_to_a_signed_url_of_its_bytes(api, samples) -> None:
    path = samples["music.ogg"]
    sha = upload(api, path).json()["originalAssetId"]
    for query in ("", "?bitrate=&channels=&format=&exact=", "?exact=true"):
        r = api.client.get(f"/v0/assets/{sha}{query}", headers=api.read, follow_redirects=False)
        assert r.status_code == 302, r.text
        location = r.headers["location"]
        assert r.json()["url"] == location and r.headers["cache-control"] == "no-store"
        assert datetime.fromisoformat(r.json()["expiresAt"]).timestamp() == int(
            parse_qs(urlparse(location).query)["expires"][0]
        )
        key = verify_file_url(api.rt, location)
        assert key == f"originals/{sha}"
        assert stored_file(api.rt, key).read_bytes() == path.read_bytes()
    upper = api.client.get(f"/v0/assets/{sha.upper()}", headers=api.read, follow_redirects=False)
    assert upper.status_code == 302
    assert_error(api.client.get(f"/v0/assets/{sha}"), 401, "AuthenticationError")
    missing = "0" * 64
    body = assert_error(
        api.client.get(f"/v0/assets/{missing}", headers=api.read), 404, "ModelNotFoundError"
    )
    assert body["message"] == f"Original asset not found ({missing})"
    assert_error(
        api.client.get("/v0/assets/not-a-hash", headers=api.read), 404, "ModelNotFoundError"
    )
    wait_jobs_done(api.rt, sha)


def test_rendition_is_409_and_enqueued_once_then_302_to_a_file_in_that_codec(api, samples) -> None:
    sha = upload(api, samples["music44.flac"], wait_s=60).json()["originalAssetId"]
    wait_jobs_done(api.rt, sha)
    url = f"/v0/assets/{sha}?bitrate=96000&channels=1&format=ogg"
    first = api.client.get(url, headers=api.read, follow_redirects=False)
    body = assert_error(first, 409, "ModelNotReadyError")
    assert body["message"] == f"asset {sha} in requested format is not ready"
    assert int(first.headers["retry-after"]) >= 1
    answers = [first.status_code]

    def redirected() -> httpx.Response | None:
        r = api.client.get(url, headers=api.read, follow_redirects=False)
        answers.append(r.status_code)
        assert r.status_code in {302, 409}, r.text
        return r if r.status_code == 302 else None

    ready = wait_until(redirected, 120, "the ogg rendition")
    assert set(answers[:-1]) == {409}
    with api.rt.db.session() as s:
        rows = [
            r
            for r in s.query(RenditionRow).filter_by(asset_id=sha).all()
            if r.requested["format"] == "ogg" and r.requested["channels"] == 1
        ]
        assert len(rows) == 1 and rows[0].spec["bitrate"] == 96000
        transcodes = s.query(JobRow).filter_by(asset_id=sha, type=JobType.TRANSCODE.value).all()
        assert [j.id for j in transcodes] == [rows[0].job_id]
    key = verify_file_url(api.rt, ready.headers["location"])
    assert key == f"renditions/{sha}/{rows[0].spec_id}.ogg"
    with av.open(str(stored_file(api.rt, key))) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "vorbis"
        assert stream.codec_context.channels == 1
        assert stream.codec_context.sample_rate == 44100
    assert hashlib.sha256(stored_file(api.rt, key).read_bytes()).hexdigest() == rows[0].sha256


def test_rendition_errors_low_quality_not_ready_and_bad_parameters(api, samples) -> None:
    mp3 = upload(api, samples["music.mp3"], wait_s=60).json()
    sha = mp3["originalAssetId"]
    assert mp3["status"] == "analysed" and mp3["bitrate"] < 320000
    for query in ("bitrate=320000&channels=2&format=mp3", "bitrate=128000&channels=2&format=flac"):
        r = api.client.get(f"/v0/assets/{sha}?{query}&exact=true", headers=api.read)
        assert_error(r, 409, "LowQualityError")
    closest = api.client.get(
        f"/v0/assets/{sha}?bitrate=320000&channels=2&format=mp3", headers=api.read
    )
    assert closest.status_code in {302, 409}
    with api.rt.db.session() as s:
        (row,) = [r for r in repo.list_renditions(s, sha) if r.requested.bitrate_bps == 320000]
        assert row.spec.bitrate_bps < 320000 and row.adjustments
    for query, field in (
        ("bitrate=128000", "bitrate, channels and format"),
        ("bitrate=128000&channels=2", "bitrate, channels and format"),
        ("bitrate=12345&channels=2&format=mp3", "supported bitrates"),
        ("bitrate=128000&channels=3&format=mp3", "channels"),
        ("bitrate=128000&channels=2&format=mp4", "supported formats"),
        ("bitrate=128000&channels=2&format=wma", "format"),
        ("bitrate=128000&channels=two&format=mp3", "channels"),
        ("bitrate=128000&channels=2&format=mp3&exact=maybe", "exact"),
    ):
        r = api.client.get(f"/v0/assets/{sha}?{query}", headers=api.read)
        assert field in assert_error(r, 400, "InvalidRequestError")["message"], query
    missing = "f" * 64
    r = api.client.get(
        f"/v0/assets/{missing}?bitrate=128000&channels=2&format=mp3", headers=api.read
    )
    assert_error(r, 404, "ModelNotFoundError")
    # Not analysed yet (and no job on it): not ready, its analysis started, no rendition
    # planned before it; the original is served meanwhile.
    pending = store_asset_directly(api.rt, samples["mono.flac"], analysed=False)
    r = api.client.get(
        f"/v0/assets/{pending}?bitrate=128000&channels=1&format=mp3", headers=api.read
    )
    assert_error(r, 409, "ModelNotReadyError")
    assert int(r.headers["retry-after"]) >= 1
    with api.rt.db.session() as s:  # the defaults its analysis plans are stereo
        mono = [r for r in repo.list_renditions(s, pending) if r.requested.channels == 1]
        assert mono == []
    r = api.client.get(f"/v0/assets/{pending}", headers=api.read, follow_redirects=False)
    assert r.status_code == 302
    wait_jobs_done(api.rt, sha)
    wait_jobs_done(api.rt, pending)
    assert count_rows(api.rt, JobRow, asset_id=pending, type=JobType.INGEST.value) == 1


def test_a_url_that_cannot_be_signed_is_409_model_invalid(api, samples) -> None:
    sha = store_asset_directly(api.rt, samples["mono.flac"], analysed=True)
    settings = api.rt.settings
    try:
        for mode in ("cloudfront", "s3"):  # no key pair / not an s3 store: nothing can sign
            api.rt.settings = settings.model_copy(update={"signing_mode": mode})
            body = assert_error(
                api.client.get(f"/v0/assets/{sha}", headers=api.read), 409, "ModelInvalidError"
            )
            assert body["message"] == f"unable to sign a url for asset {sha}"
    finally:
        api.rt.settings = settings
    assert api.client.get(f"/v0/assets/{sha}", headers=api.read, follow_redirects=False).is_redirect


# ---- metadata and streams -----------------------------------------------------------------


def test_metadata_has_renditions_packages_and_an_etag(api, samples) -> None:
    sha = upload(api, samples["music.opus"], wait_s=60).json()["originalAssetId"]
    wait_jobs_done(api.rt, sha)
    r = api.client.get(f"/v0/assets/{sha}/metadata", headers=api.read)
    assert r.status_code == 200
    body = r.json()
    assert body["originalAssetId"] == sha and body["lufs"] is not None
    assert {x["spec"]["format"] for x in body["renditions"]} >= {"mp3", "aac", "opus"}
    assert all(x["status"] == "ready" for x in body["renditions"])
    assert [p["status"] for p in body["packages"]] == ["ready"]
    etag = r.headers["etag"]
    assert etag == f'"{hashlib.sha256(r.content).hexdigest()}"'
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        cached = api.client.get(
            f"/v0/assets/{sha}/metadata", headers={**api.read, "If-None-Match": header}
        )
        assert cached.status_code == 304 and cached.content == b""
        assert cached.headers["etag"] == etag
    other = api.client.get(
        f"/v0/assets/{sha}/metadata", headers={**api.read, "If-None-Match": '"other"'}
    )
    assert other.status_code == 200 and other.content == r.content
    # Anything new about the asset (a rendition asked for) changes the ETag.
    api.client.get(f"/v0/assets/{sha}?bitrate=64000&channels=1&format=mp3", headers=api.read)
    changed = api.client.get(
        f"/v0/assets/{sha}/metadata", headers={**api.read, "If-None-Match": etag}
    )
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert len(changed.json()["renditions"]) == len(body["renditions"]) + 1
    assert_error(
        api.client.get(f"/v0/assets/{'a' * 64}/metadata", headers=api.read),
        404,
        "ModelNotFoundError",
    )
    wait_jobs_done(api.rt, sha)


def verify_stream_urls(rt, sha: str, body: dict) -> str:
    """Check both manifest URLs' path tokens as the edge would; the package id."""
    signer = NginxSigner(rt.settings.resolved_cdn_base_url, rt.settings.resolved_signing_secret())
    expires_at = int(datetime.fromisoformat(body["expiresAt"]).timestamp())
    package_id = body["packageId"]
    base = rt.settings.resolved_cdn_base_url.rstrip("/")
    token = signer.package_token(sha, package_id, expires_at)
    prefix = package_prefix(sha, package_id)
    assert body["hlsUrl"] == f"{base}/p/{token}/{expires_at}/{prefix}/master.m3u8"
    assert body["dashUrl"] == f"{base}/p/{token}/{expires_at}/{prefix}/manifest.mpd"
    with rt.db.session() as s:
        duration_ms = repo.get_package_row(s, sha, package_id).duration_ms
    lifetime_s = expires_at - time.time()
    assert 0 < lifetime_s <= package_expires_in_s(rt.settings, duration_ms) + 1
    assert lifetime_s > package_expires_in_s(rt.settings, duration_ms) - 30
    assert stored_file(rt, f"{prefix}/master.m3u8").read_text().startswith("#EXTM3U")
    assert "<MPD" in stored_file(rt, f"{prefix}/manifest.mpd").read_text()
    return package_id


def test_streams_of_an_uploaded_asset_are_signed_hls_and_dash(api, samples) -> None:
    sha = upload(api, samples["speech.wav"], wait_s=60).json()["originalAssetId"]
    wait_jobs_done(api.rt, sha)
    r = api.client.get(f"/v0/assets/{sha}/streams", headers=api.read)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"hlsUrl", "dashUrl", "expiresAt", "packageId"}
    verify_stream_urls(api.rt, sha, r.json())
    assert count_rows(api.rt, JobRow, asset_id=sha, type=JobType.PACKAGE.value) == 0
    settings = api.rt.settings
    try:
        api.rt.settings = settings.model_copy(update={"signing_mode": "s3"})
        assert_error(
            api.client.get(f"/v0/assets/{sha}/streams", headers=api.read), 409, "ModelInvalidError"
        )
    finally:
        api.rt.settings = settings


def test_streams_without_a_package_start_one_job_and_answer_409_until_ready(api, samples) -> None:
    """An asset analysed without its package (no upload job): the first requests get its
    package renditions made, then exactly one package job; every answer until then is
    409 with Retry-After."""
    sha = store_asset_directly(api.rt, samples["music.flac"], analysed=True)
    answers: list[int] = []

    def streams() -> dict | None:
        r = api.client.get(f"/v0/assets/{sha}/streams", headers=api.read)
        answers.append(r.status_code)
        if r.status_code == 409:
            assert r.json()["name"] == "ModelNotReadyError" and int(r.headers["retry-after"]) >= 1
            return None
        assert r.status_code == 200, r.text
        return r.json()

    body = wait_until(streams, 180, "the package")
    assert answers[0] == 409 and answers[-1] == 200
    verify_stream_urls(api.rt, sha, body)
    assert count_rows(api.rt, JobRow, asset_id=sha, type=JobType.PACKAGE.value) == 1
    with api.rt.db.session() as s:
        specs = [r.spec.spec_id for r in repo.list_renditions(s, sha)]
        package = s.query(PackageRow).filter_by(asset_id=sha).one()
    assert sorted(specs) == sorted(set(specs)) == sorted(package.renditions["specIds"])
    assert count_rows(api.rt, JobRow, asset_id=sha, type=JobType.TRANSCODE.value) == len(specs)
    missing = api.client.get(f"/v0/assets/{'b' * 64}/streams", headers=api.read)
    assert_error(missing, 404, "ModelNotFoundError")
    # Not analysed (and no job on it): 409, and its ingest (which packages at its end)
    # is started, once however many ask.
    pending = store_asset_directly(api.rt, samples["mono.flac"], analysed=False)
    for _ in range(2):
        assert_error(
            api.client.get(f"/v0/assets/{pending}/streams", headers=api.read),
            409,
            "ModelNotReadyError",
        )
    wait_jobs_done(api.rt, pending)
    assert count_rows(api.rt, JobRow, asset_id=pending, type=JobType.INGEST.value) == 1
    assert count_rows(api.rt, JobRow, asset_id=pending, type=JobType.PACKAGE.value) == 0
    assert api.client.get(f"/v0/assets/{pending}/streams", headers=api.read).status_code == 200


def test_an_asset_left_stored_by_a_cancelled_ingest_has_its_analysis_restarted(
    embedded_env, samples
) -> None:
    """The upload's ingest is cancelled after the bytes were stored, before analysis: the
    asset stays `stored` with no job. A rendition, stream or legacy-track request still
    answers 409 ModelNotReadyError, but only after starting one new ingest (however many
    ask), which a worker then carries through to the analysis."""
    from api_support import running_api

    from mediamill.workers.worker import InProcessWorker

    path = samples["mono.flac"]
    with running_api(run_worker=False) as api:
        r = upload(api, path, headers={"legacyTrackToken": "cancelled-1"})
        assert r.status_code == 201 and r.json()["status"] == "stored", r.text
        sha, first_job = r.json()["originalAssetId"], r.headers["x-job-id"]
        cancelled = api.client.post(f"/v0/jobs/{first_job}/cancel", headers=api.admin)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"

        def ingests() -> list[JobRow]:
            with api.rt.db.session() as s:
                return (
                    s.query(JobRow)
                    .filter_by(asset_id=sha, type=JobType.INGEST.value)
                    .order_by(JobRow.created_at)
                    .all()
                )

        rendition = f"/v0/assets/{sha}?bitrate=128000&channels=2&format=mp3"
        for url in (
            rendition,
            rendition,
            f"/v0/assets/{sha}/streams",
            "/v0/legacy/tracks/cancelled-1?bitrate=128000&channels=2&format=mp3",
        ):
            r = api.client.get(url, headers=api.read)
            body = assert_error(r, 409, "ModelNotReadyError")
            assert "not analysed yet" in body["message"] and int(r.headers["retry-after"]) >= 1
            jobs = ingests()
            assert [j.status for j in jobs] == ["cancelled", "queued"], url
            assert jobs[0].id == first_job
        restarted = jobs[1]
        assert restarted.params["source"] == {
            "kind": "stored",
            "key": f"originals/{sha}",
            "sha256": sha,
        }
        with InProcessWorker(api.rt):

            def analysed() -> dict | None:
                meta = api.client.get(f"/v0/assets/{sha}/metadata", headers=api.read).json()
                return meta if meta["status"] == "analysed" else None

            meta = wait_until(analysed, 120, "the restarted analysis")
            assert meta["duration"] > 0 and meta["lufs"] is not None
            wait_until(
                lambda: ingests()[1].status == "succeeded", 120, "the restarted ingest to end"
            )
        assert [j.status for j in ingests()] == ["cancelled", "succeeded"]


def test_a_length_mismatch_never_deletes_content_addressed_bytes(api, samples) -> None:
    """The bytes of a refused upload (assetLength differs) stay where they were stored: a
    concurrent ingest of the same bytes may rely on them before its asset row exists.
    Unrecorded, they are only reused by the next upload of the same bytes."""
    import io

    from mediamill.schemas.errors import InvalidRequestError
    from mediamill.storage.models import AssetRow
    from mediamill.workers.assets import store_and_record

    path = samples["short.wav"]
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    with pytest.raises(InvalidRequestError, match="assetLength says"):
        store_and_record(api.rt, io.BytesIO(data), path.name, None, len(data) + 1, None)
    assert api.rt.store.exists(f"originals/{sha}")
    assert count_rows(api.rt, AssetRow, id=sha) == 0 and count_rows(api.rt, JobRow) == 0
    r = upload(api, path, wait_s=60)
    assert r.status_code == 201 and r.json()["originalAssetId"] == sha
    assert r.json()["status"] == "analysed"
    assert sha256_of(stored_file(api.rt, f"originals/{sha}")) == sha
    wait_jobs_done(api.rt, sha)


def test_an_asset_length_too_large_for_any_integer_is_a_400(api, samples) -> None:
    files = {"assetfile": ("short.wav", samples["short.wav"].read_bytes())}
    for length in ("9" * 5000, "1" + "0" * 20):
        r = api.client.post("/v0/assets", files=files, headers={**api.admin, "assetLength": length})
        assert "assetLength" in assert_error(r, 400, "InvalidRequestError")["message"]
    assert count_rows(api.rt, JobRow) == 0


# ---- the distributed stack -----------------------------------------------------------------


def test_upload_and_metadata_on_postgres_redis_s3_with_a_worker_process(
    redis_url, postgres_url, moto_server, samples, tmp_path
) -> None:
    """POST /v0/assets stores into S3 and enqueues on Redis; a `mediamill worker` process
    analyses, transcodes and packages; the API reads it all back from PostgreSQL. The
    original's presigned S3 URL serves the very bytes; s3 signing refuses packages (409)."""
    import redis
    from api_support import running_api
    from integration.conftest import distributed_env, settings_from_env

    # A Redis database of its own: other suites flush theirs.
    broker_url = redis_url.rsplit("/", 1)[0] + "/13"
    redis.Redis.from_url(broker_url).flushdb()
    with distributed_env(
        moto_server,
        broker_url,
        tmp_path / "data",
        "mm-api",
        MEDIAMILL_SIGNING_MODE="s3",
        MEDIAMILL_SWEEP_INTERVAL_S="1",
    ) as env:
        subprocess.run([*CLI, "db", "upgrade"], env=env, check=True, timeout=120)
        worker = subprocess.Popen(
            [*CLI, "worker", "--threads", "2"], env=env, stderr=subprocess.PIPE, text=True
        )
        try:
            with running_api(settings_from_env(env), run_worker=False) as api:
                path = samples["music44.flac"]
                r = upload(api, path, wait_s=60, headers={"legacyTrackToken": "d-1"})
                assert r.status_code == 201, r.text
                body = r.json()
                assert body["originalAssetId"] == sha256_of(path)
                assert body["status"] == "analysed" and body["lufs"] is not None
                sha = body["originalAssetId"]

                def packaged() -> dict | None:
                    assert worker.poll() is None, worker.stderr.read()
                    meta = api.client.get(f"/v0/assets/{sha}/metadata", headers=api.read)
                    assert meta.status_code == 200
                    done = [p for p in meta.json()["packages"] if p["status"] == "ready"]
                    return meta.json() if done else None

                meta = wait_until(packaged, 180, "the package on the worker process")
                assert meta["legacyTrackTokens"] == ["d-1"] and meta["lufs"] == body["lufs"]
                assert {x["status"] for x in meta["renditions"]} == {"ready"}
                assert len(meta["renditions"]) >= 3
                r = api.client.get(f"/v0/assets/{sha}", headers=api.read, follow_redirects=False)
                assert r.status_code == 302
                fetched = httpx.get(r.headers["location"], trust_env=False, timeout=30)
                assert fetched.status_code == 200
                assert hashlib.sha256(fetched.content).hexdigest() == sha
                streams = api.client.get(f"/v0/assets/{sha}/streams", headers=api.read)
                assert (
                    "s3 signing covers files only"
                    in (assert_error(streams, 409, "ModelInvalidError")["message"])
                )
        finally:
            worker.terminate()
            assert worker.wait(timeout=60) == 0


# ---- memory -------------------------------------------------------------------------------

SERVER = r"""
import sys
import uvicorn
from mediamill.api.app import create_app
from mediamill.config.settings import Settings
app = create_app(Settings(), run_worker=False)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""
BIG_UPLOAD_BYTES = 200 * 1024 * 1024
# Far below the upload's size: starlette spools the part to disk and the store copies
# it in 8 MiB chunks, so the server's peak RSS grows by a few chunks at most.
MAX_RSS_GROWTH_BYTES = 48 * 1024 * 1024


def _proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_a_200_mb_upload_streams_through_a_real_server_in_bounded_memory(tmp_path, samples) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
    env["MEDIAMILL_DATA_DIR"] = str(tmp_path / "data")
    key = json.loads(
        subprocess.run(
            [*CLI, "keys", "create", "--scope", "admin", "--json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    headers = {"X-API-Key": key["apiKey"]}
    big = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with big.open("wb") as f:
        for _ in range(BIG_UPLOAD_BYTES // (1 << 20)):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            f.write(chunk)
    sha = digest.hexdigest()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port)], env=env, stderr=subprocess.PIPE, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, trust_env=False, timeout=300) as client:

            def up() -> bool:
                assert server.poll() is None, server.stderr.read()
                try:
                    return client.get("/ready").status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(up, 60, "the API server")

            def post(path: Path) -> httpx.Response:
                with path.open("rb") as f:
                    return client.post(
                        "/v0/assets",
                        files={"assetfile": (path.name, f, "application/octet-stream")},
                        headers={**headers, "assetLength": str(path.stat().st_size)},
                    )

            assert post(samples["short.wav"]).status_code == 201  # warm: imports, pools
            Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # reset the peak RSS
            before_kib = _proc_kib(server.pid, "VmRSS")
            r = post(big)
            peak_kib = _proc_kib(server.pid, "VmHWM")
        assert r.status_code == 201, r.text
        assert r.json()["originalAssetId"] == sha and r.json()["sizeBytes"] == BIG_UPLOAD_BYTES
        growth_bytes = (peak_kib - before_kib) * 1024
        assert growth_bytes < MAX_RSS_GROWTH_BYTES, f"peak RSS grew {growth_bytes >> 20} MiB"
        stored = tmp_path / "data" / "store" / "originals" / sha
        assert stored.stat().st_size == BIG_UPLOAD_BYTES and sha256_of(stored) == sha
    finally:
        server.terminate()
        server.wait(timeout=30)
