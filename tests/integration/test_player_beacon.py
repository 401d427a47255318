"""The beacon script in a real browser: Debian's Chromium plays a real package through
the real nginx edge with hls.js and with dash.js from npm, the page (at another origin)
loads `GET /v0/player/beacon.js` from the API, and what it reports reaches the
database: heartbeats whose positions advance, a viewStart with a plausible startupMs,
the player's events, and the session ended by navigator.sendBeacon on pagehide; and
the views update makes it one counted view of the whole clip."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from edge_support import local_edge, make_package_tree, play_with_beacon
from playback_support import packaged_asset, session_row, stored_events, stored_heartbeats
from sqlalchemy import select
from support import free_port, serving

from mediamill.api.app import create_app
from mediamill.config.settings import Settings
from mediamill.storage.api_keys import create_api_key
from mediamill.storage.models import ViewRow
from mediamill.workers import views
from mediamill.workers.analytics import Dimension, Metric, series

pytestmark = pytest.mark.integration

SECRET = "beacon-test-secret-0123456789"


def _wait(check, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.1)
    raise AssertionError("timed out")


@pytest.mark.parametrize("refresh", [False, True], ids=["urls-live-on", "urls-refreshed"])
@pytest.mark.parametrize("kind", ["hls", "dash"])
def test_the_beacon_reports_a_real_player_through_the_nginx_edge(
    tmp_path: Path, kind: str, refresh: bool
) -> None:
    """With `refresh`, URLs are due for refresh 3 s after they are signed: a heartbeat
    brings fresh ones, the beacon switches the player to them where it is, and the
    player still plays to the end."""
    with local_edge(tmp_path / "edge", SECRET) as edge:
        asset_id, package_id = make_package_tree(edge.store.root)
        port, page_port = free_port(), free_port()
        settings = Settings(
            _env_file=None,
            data_dir=tmp_path / "data",
            storage_url=edge.store.root.as_uri(),
            signing_secret=SECRET,
            cdn_base_url=edge.base_url,
            embedded_edge=False,
            http_port=port,
            playback_allowed_origins=f"http://127.0.0.1:{page_port}",
            playback_heartbeat_interval_s=1,
            playback_flush_interval_s=0.2,
            **(
                {"playback_url_expires_s": 60, "playback_url_refresh_margin_s": 57}
                if refresh
                else {}
            ),
        )
        app = create_app(settings)
        with serving(app, port) as api_base:
            rt = app.state.runtime
            packaged_asset(rt, asset_id=asset_id, package_id=package_id, duration_ms=9000)
            with rt.db.session() as s:
                key = create_api_key(s, "playback", "page").api_key
            report = play_with_beacon(kind, api_base, key, asset_id, page_port)
            assert report["ok"], report
            assert report["beaconErrors"] == [], report
            sid = report["sessionId"]
            _wait(lambda: session_row(rt, sid).status == "ended")
            _wait(lambda: rt.playback_buffer().backlog() == 0)
    beats = stored_heartbeats(rt, sid)
    positions = [b.position_s for b in beats]
    assert len(beats) >= 3, positions
    assert positions == sorted(positions) and positions[-1] - positions[0] >= 3.0, positions
    assert positions[-1] == pytest.approx(9.0, abs=0.6)
    events = stored_events(rt, sid)
    kinds = [e.type for e in events]
    first = events[0].seq
    assert first > 1_700_000_000_000_000  # numbered from the attach's clock
    assert [e.seq for e in events] == list(range(first, first + len(events)))  # once, none lost
    assert kinds[0] == "viewStart" and kinds.count("viewStart") == 1, kinds
    startup_ms = events[0].data["startupMs"]
    assert 0 < startup_ms < 15_000, startup_ms
    assert "playing" in kinds and kinds[-1] in {"ended", "pause"}, kinds
    assert "ended" in kinds
    assert "renditionChange" in kinds, kinds
    change = next(e for e in events if e.type == "renditionChange")
    assert change.data["bitrate"] > 0 and change.data.get("height") in {240, 360}
    row = session_row(rt, sid)
    assert row.end_reason == "client" and row.device_id == f"browser-{kind}"
    if refresh:
        assert report["refreshes"] >= 1, report
        assert report["source"] != report["firstUrl"] and f"/{sid}/packages/" in report["source"]
        assert row.refresh_before > row.created_at + timedelta(seconds=2)  # the flush kept it
    else:
        assert report["refreshes"] == 0 and report["source"] == report["firstUrl"]
    # Issue 18: the playback is one counted view of the whole clip.
    views.update(rt)
    with rt.db.session() as s:
        view = s.scalars(select(ViewRow).where(ViewRow.id == sid)).one()
    assert view.counted and view.completed and view.protocol == kind
    assert view.watched_ms / 1000 == pytest.approx(9.0, abs=0.8), view.watched_ms
    assert view.startup_ms == startup_ms and view.device_class == "desktop"
    started = view.started_at - timedelta(minutes=1)
    total = series(rt, Metric.TOTAL_VIEWS, Dimension.SUMMARY, started, started + timedelta(hours=1))
    assert total[0].value == 1
