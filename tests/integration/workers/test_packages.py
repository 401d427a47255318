"""The package stage through the queue on the embedded default: an upload ends with
HLS + DASH stored under `packages/<assetId>/<packageId>/`, and packaging again
rewrites the same keys."""

from __future__ import annotations

from pathlib import Path

import m3u8
import pytest
from support import wait_job

from mediamill.config.settings import get_settings
from mediamill.schemas.packages import package_id_for
from mediamill.storage import outbox, repo
from mediamill.workers.boot import build_runtime
from mediamill.workers.packages import enqueue_package
from mediamill.workers.runtime import Runtime
from mediamill.workers.submit import submit_local_file
from mediamill.workers.worker import InProcessWorker

pytestmark = pytest.mark.integration


@pytest.fixture
def rt(embedded_env: Path) -> Runtime:
    get_settings.cache_clear()
    runtime = build_runtime(get_settings())
    with InProcessWorker(runtime, threads=2):
        yield runtime


def _referenced(rt: Runtime, prefix: str) -> set[str]:
    """Every file the HLS master leads to (playlists, init and media segments)."""

    def load(name: str) -> m3u8.M3U8:
        with rt.store.open(f"{prefix}/{name}") as f:
            return m3u8.loads(f.read().decode())

    master = load("master.m3u8")
    names = {"master.m3u8"}
    playlists = [p.uri for p in master.playlists] + [m.uri for m in master.media if m.uri]
    for uri in playlists:
        media = load(uri)
        names |= {uri, media.segment_map[0].uri, *(s.uri for s in media.segments)}
    return names


def test_video_upload_ends_with_a_package_of_its_ladder(rt: Runtime, samples) -> None:
    job_id = submit_local_file(rt, samples["video.mp4"], stage_in_store=False).id
    job = wait_job(rt, job_id, timeout_s=120)
    assert job.status == "succeeded" and job.stage == "done", job
    with rt.db.session() as s:
        (package,) = repo.list_packages(s, job.asset_id)
        ladder = [r for r in repo.list_renditions(s, job.asset_id) if r.spec.format == "mp4"]
        events = outbox.list_events(s, "package.ready")
    assert package.status == "ready"
    assert sorted(package.renditions) == sorted(r.spec.spec_id for r in ladder)
    assert package.package_id == package_id_for(package.renditions, 4)
    assert job.result == {"packageId": package.package_id}
    prefix = f"packages/{job.asset_id}/{package.package_id}"
    assert package.master_key == f"{prefix}/master.m3u8"
    assert package.manifest_key == f"{prefix}/manifest.mpd"
    stored = {key[len(prefix) + 1 :] for key in rt.store.list(prefix + "/")}
    assert _referenced(rt, prefix) | {"manifest.mpd"} == stored
    assert package.size_bytes == sum(rt.store.size(f"{prefix}/{n}") for n in stored)
    assert package.duration_ms == pytest.approx(2000, abs=60)
    assert [e.data["package"]["packageId"] for e in events] == [package.package_id]
    with rt.store.open(package.master_key) as f:
        master = m3u8.loads(f.read().decode())
    assert len(master.playlists) == len(ladder) and master.media[0].group_id == "audio"


def test_audio_upload_ends_with_an_aac_ladder_package_and_repackaging_is_in_place(
    rt: Runtime, samples
) -> None:
    job_id = submit_local_file(rt, samples["music.flac"], stage_in_store=False).id
    job = wait_job(rt, job_id, timeout_s=120)
    assert job.status == "succeeded", job
    with rt.db.session() as s:
        (package,) = repo.list_packages(s, job.asset_id)
    assert package.renditions and all(r.startswith("aac-") for r in package.renditions)
    assert len(package.renditions) == 3  # aac 64k, 128k, 256k
    prefix = f"packages/{job.asset_id}/{package.package_id}"
    before = {key: rt.store.size(key) for key in rt.store.list(prefix + "/")}

    again = wait_job(rt, enqueue_package(rt, job.asset_id), timeout_s=120)
    assert again.status == "succeeded" and again.result == {"packageId": package.package_id}
    with rt.db.session() as s:
        (repackaged,) = repo.list_packages(s, job.asset_id)
        assert len(outbox.list_events(s, "package.ready")) == 2
    assert repackaged.id == package.id and repackaged.modified > package.modified
    after = {key: rt.store.size(key) for key in rt.store.list(prefix + "/")}
    assert after == before, "same keys, same bytes: re-packaging overwrote in place"
    assert sorted(rt.store.list("packages/")) == sorted(after)
