"""Edge logs for players that send nothing: Chromium plays a playback session's URL
with hls.js (no beacon) through the real nginx edge `mediamill edge nginx-conf`
configures; `mediamill ingest-edge-logs` turns nginx's JSON access log into the span
watched and the bytes delivered per rendition for that session, and reading the same
file again counts nothing twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from edge_support import local_edge, make_package_tree, play_in_browser
from playback_support import packaged_asset

from mediamill.config.settings import Settings
from mediamill.schemas.renditions import parse_video_ladder
from mediamill.storage import repo
from mediamill.workers import playback
from mediamill.workers.boot import build_runtime

pytestmark = pytest.mark.integration

SECRET = "edge-log-test-secret-0123456789"
CLI = [sys.executable, "-m", "mediamill"]


def _ingest(env: dict[str, str], log: Path) -> dict:
    out = subprocess.run(
        [*CLI, "ingest-edge-logs", str(log), "--json"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_silent_players_segments_become_its_watched_span_and_bytes(tmp_path: Path) -> None:
    with local_edge(tmp_path / "edge", SECRET) as edge:
        asset_id, package_id = make_package_tree(edge.store.root)
        settings = Settings(
            _env_file=None,
            data_dir=tmp_path / "data",
            storage_url=edge.store.root.as_uri(),
            signing_secret=SECRET,
            cdn_base_url=edge.base_url,
        )
        rt = build_runtime(settings)
        packaged_asset(rt, asset_id=asset_id, package_id=package_id, duration_ms=9000)
        spec_ids = [s.spec_id for s in parse_video_ladder("360:600000,240:300000")]
        with rt.db.session() as s:
            repo.get_package_row(s, asset_id, package_id).renditions = {"specIds": spec_ids}
            repo.get_asset_row(s, asset_id).video = {"codec": "h264", "width": 640, "height": 360}
        created = playback.create_playback_session(rt, asset_id, "silent-tv", None, "c")
        report = play_in_browser("hls", created.hls_url)
        assert report["ok"], report
    log = tmp_path / "edge" / "state" / "access.json.log"
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    mine = [x for x in lines if x["session"] == created.session_id]
    assert mine and all("client" in x and "userAgent" in x for x in mine)  # nginx logs them
    segments = [x for x in mine if "/seg-" in x["key"] and x["status"] in (200, 206)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
    env.update(
        MEDIAMILL_DATA_DIR=str(tmp_path / "data"),
        MEDIAMILL_STORAGE_URL=edge.store.root.as_uri(),
        MEDIAMILL_SIGNING_SECRET=SECRET,
    )
    first = _ingest(env, log)
    assert first["segmentRequests"] == first["newRequests"] == len(segments)
    delivered = {d["rendition"]: d for d in first["deliveries"]}
    assert {d["sessionId"] for d in first["deliveries"]} == {created.session_id}
    assert "audio" in delivered and set(delivered) - {"audio"} <= set(spec_ids)
    assert delivered["audio"]["watchedFromS"] == 0.0 and delivered["audio"]["watchedToS"] == 9.0
    video_to = max(d["watchedToS"] for r, d in delivered.items() if r != "audio")
    assert video_to == 9.0  # played to the end
    assert sum(d["bytes"] for d in delivered.values()) == sum(x["bytes"] for x in segments)
    assert sum(d["segments"] for d in delivered.values()) == len(segments)
    sizes = {
        p.name: p.stat().st_size
        for p in (edge.store.root / "packages" / asset_id / package_id).iterdir()
    }
    whole = [x for x in segments if x["status"] == 200]
    assert all(x["bytes"] == sizes[x["key"].rsplit("/", 1)[1]] for x in whole)
    again = _ingest(env, log)
    assert again["newRequests"] == 0 and again["deliveries"] == first["deliveries"]
    # The database holds no address and no user agent of the player.
    db_text = (tmp_path / "data" / "mediamill.db").read_bytes()
    assert b"HeadlessChrome" not in db_text and b"127.0.0.1" not in db_text


def test_a_log_dropped_under_the_prefix_is_ingested_by_a_worker(tmp_path: Path) -> None:
    """The sweeper of a running worker finds the object and the actor ingests it."""
    import io
    import time

    from mediamill.storage.models import EdgeLogFileRow
    from mediamill.workers.edge_logs import deliveries
    from mediamill.workers.worker import InProcessWorker

    settings = Settings(_env_file=None, data_dir=tmp_path / "data", signing_secret=SECRET)
    rt = build_runtime(settings)
    asset_id = packaged_asset(rt, duration_ms=9000)
    sid = playback.create_playback_session(rt, asset_id, "tv", None, "c").session_id
    lines = [
        json.dumps(
            {
                "time": "2026-12-04T01:00:00+00:00",
                "msec": 1796346000.0 + n,
                "session": sid,
                "key": f"packages/{asset_id}/pkg-test/seg-0-{n:05d}.m4s",
                "status": 200,
                "bytes": 1000,
                "requestTime": 0.001,
                "method": "GET",
                "userAgent": "UA",
                "client": "203.0.113.1",
            }
        )
        for n in (1, 2, 3)
    ]
    key = f"{settings.edge_logs_prefix}edge-a/2026-12-04.json.log"
    with InProcessWorker(rt, threads=2):
        rt.store.put(key, io.BytesIO("\n".join(lines).encode()))
        deadline = time.monotonic() + 30
        while not deliveries(rt, [sid]) and time.monotonic() < deadline:
            time.sleep(0.2)
    got = deliveries(rt, [sid])
    assert len(got) == 1 and (got[0].segments, got[0].bytes, got[0].watched_to_s) == (3, 3000, 9.0)
    with rt.db.session() as s:
        assert s.get(EdgeLogFileRow, key).lines == 3
