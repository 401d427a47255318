"""The playback use cases (workers/playback.py) on SQLite and the in-process buffer:
tracking sessions, playback sessions with URLs signed for them, heartbeats and events
that reach the database only through the flush, once each, and the limits."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playback_support import packaged_asset, session_row, stored_events, stored_heartbeats
from support import MakeRuntime

from mediamill.config.settings import Settings
from mediamill.pipeline.signing import NginxSigner, TokenVerdict
from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import (
    ConcurrentStreamsExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    PlaybackSessionEndedError,
    TrackingSessionInvalidError,
)
from mediamill.schemas.playback import EventBatch, HeartbeatRequest, PlaybackStatus
from mediamill.storage.models import PlaybackSessionRow, TrackingSessionRow
from mediamill.workers import playback
from mediamill.workers.playback_flush import end_idle_sessions, flush


@pytest.fixture
def rt(make_runtime: MakeRuntime, tmp_path: Path):
    return make_runtime(
        Settings(_env_file=None, data_dir=tmp_path / "data", signing_secret="s" * 32)
    )


def _beat(rt, session_id: str, position_s: float, paused: bool = False):
    return asyncio.run(
        playback.heartbeat(
            rt, session_id, HeartbeatRequest(position_seconds=position_s, is_paused=paused)
        )
    )


def _events(rt, session_id: str, events: list[dict]):
    return asyncio.run(
        playback.record_events(rt, session_id, EventBatch.model_validate({"events": events}))
    )


def _event(seq: int, type_: str = "playing", **fields) -> dict:
    return {"seq": seq, "type": type_, "timestamp": utcnow().isoformat(), **fields}


# ---- tracking sessions ----------------------------------------------------------------------


def test_a_tracking_session_reads_back_by_its_token_until_it_is_ended(rt) -> None:
    session, token = playback.create_tracking_session(rt, "site-1", None)
    assert playback.read_tracking_session(rt, token, "site-1") == session
    with rt.db.session() as s:
        row = s.get(TrackingSessionRow, session.session_id)
        assert row.user_id is None and row.playout_id == "site-1"
    with pytest.raises(TrackingSessionInvalidError, match="another playout"):
        playback.read_tracking_session(rt, token, "site-2")
    playback.end_tracking_session(rt, token, "site-1")
    with pytest.raises(TrackingSessionInvalidError, match="ended"):
        playback.read_tracking_session(rt, token, "site-1")
    with pytest.raises(TrackingSessionInvalidError, match="no tracking session"):
        playback.read_tracking_session(rt, None, "site-1")


def test_a_user_id_is_kept_only_when_sent(rt) -> None:
    session, _ = playback.create_tracking_session(rt, "app", "user-42")
    with rt.db.session() as s:
        assert s.get(TrackingSessionRow, session.session_id).user_id == "user-42"


# ---- playback sessions ----------------------------------------------------------------------


def test_a_session_gets_urls_whose_signature_covers_it(rt) -> None:
    asset_id = packaged_asset(rt)
    created = playback.create_playback_session(rt, asset_id, "device-1", None, "client")
    sid = created.session_id
    signer = rt.signer()
    assert isinstance(signer, NginxSigner)
    for url, manifest in ((created.hls_url, "master.m3u8"), (created.dash_url, "manifest.mpd")):
        parts = urlsplit(url).path.split("/")
        s_at = parts.index("s")
        token, expires, named = parts[s_at + 1 : s_at + 4]
        assert named == sid
        assert parts[-4:] == ["packages", asset_id, "pkg-test", manifest]
        check = signer.check_package
        assert check(asset_id, "pkg-test", token, expires, session_id=sid) is TokenVerdict.VALID
        other = "0" * 8 + sid[8:]
        assert check(asset_id, "pkg-test", token, expires, session_id=other) is TokenVerdict.WRONG
        assert check(asset_id, "pkg-test", token, expires) is TokenVerdict.WRONG
    assert created.expires_at > created.token_refresh_before > utcnow()
    assert created.heartbeat_interval_s == 30
    row = session_row(rt, sid)
    assert (row.status, row.device_id, row.duration_ms) == ("active", "device-1", 9000)


def test_unknown_assets_are_404(rt) -> None:
    with pytest.raises(ModelNotFoundError):
        playback.create_playback_session(rt, "0" * 64, "device-1", None, "client")


def test_heartbeats_reach_the_database_through_the_flush_once_each(rt) -> None:
    sid = playback.create_playback_session(
        rt, packaged_asset(rt), "device-1", None, "client"
    ).session_id
    answer = _beat(rt, sid, 1.5)
    assert answer.refreshed_urls is None
    assert answer.session_expires_at > utcnow() + timedelta(seconds=80)
    _beat(rt, sid, 3.0, paused=True)
    assert stored_heartbeats(rt, sid) == []  # the hot path never wrote the database
    result = flush(rt)
    assert (result.entries, result.heartbeats) == (2, 2)
    assert [h.position_s for h in stored_heartbeats(rt, sid)] == [1.5, 3.0]
    row = session_row(rt, sid)
    assert (row.position_s, row.is_paused) == (3.0, True)
    assert flush(rt).entries == 0


def test_a_flush_that_ran_twice_stores_each_record_once(rt) -> None:
    """A flush killed after writing and before confirming: its entries are taken again
    after the claim time and written again, which adds nothing."""
    sid = playback.create_playback_session(
        rt, packaged_asset(rt), "device-1", None, "client"
    ).session_id
    _beat(rt, sid, 1.0)
    _events(rt, sid, [_event(0, "viewStart", startupMs=250), _event(1)])
    buffer = rt.playback_buffer()
    taken = buffer.take("doomed", 100, claim_idle_s=30)
    from mediamill.storage import playback as rows

    with rt.db.session() as s:
        rows.write_buffered(s, [r for _, r in taken])  # ...and then the worker died
    buffer._taken = {k: (r, t - 31) for k, (r, t) in buffer._taken.items()}
    assert flush(rt).entries == 2
    assert len(stored_heartbeats(rt, sid)) == 1
    assert [e.type for e in stored_events(rt, sid)] == ["viewStart", "playing"]
    assert buffer.backlog() == 0


def test_events_are_stored_once_by_seq_and_a_bad_batch_is_refused_whole(rt) -> None:
    sid = playback.create_playback_session(
        rt, packaged_asset(rt), "device-1", None, "client"
    ).session_id
    batch = [
        _event(0, "viewStart", startupMs=420),
        _event(1, "seek", **{"from": 1.0, "to": 5.0}),
        _event(2, "renditionChange", bitrate=600000, height=360),
        _event(3, "error", code="MEDIA_ERR_NETWORK", message="gone"),
    ]
    assert _events(rt, sid, batch).accepted == 4
    assert _events(rt, sid, batch).accepted == 4  # the client retried
    flush(rt)
    stored = stored_events(rt, sid)
    assert [(e.seq, e.type) for e in stored] == [
        (0, "viewStart"),
        (1, "seek"),
        (2, "renditionChange"),
        (3, "error"),
    ]
    assert stored[0].data == {"startupMs": 420}
    assert stored[1].data == {"from": 1.0, "to": 5.0}
    assert stored[2].data == {"bitrate": 600000, "height": 360}
    with pytest.raises(InvalidRequestError, match=r"events\[1\] \(seek\): to 50 s is past"):
        _events(rt, sid, [_event(10), _event(11, "seek", **{"from": 1.0, "to": 50.0})])
    with pytest.raises(InvalidRequestError, match=r"events\[1\].*seq 20 is already events\[0\]"):
        _events(rt, sid, [_event(20), _event(20, "pause")])
    flush(rt)
    assert len(stored_events(rt, sid)) == 4  # nothing of the refused batches


def test_a_position_past_the_end_is_refused(rt) -> None:
    sid = playback.create_playback_session(
        rt, packaged_asset(rt, duration_ms=9000), "device-1", None, "client"
    ).session_id
    _beat(rt, sid, 10.5)  # within the slack of the last segment
    with pytest.raises(InvalidRequestError, match="past the end of the asset"):
        _beat(rt, sid, 60.0)


def test_an_ended_session_takes_no_more(rt) -> None:
    sid = playback.create_playback_session(
        rt, packaged_asset(rt), "device-1", None, "client"
    ).session_id
    _beat(rt, sid, 1.0)
    asyncio.run(playback.end_playback_session(rt, sid))
    asyncio.run(playback.end_playback_session(rt, sid))  # twice is fine
    with pytest.raises(PlaybackSessionEndedError):
        _beat(rt, sid, 2.0)
    row = session_row(rt, sid)
    assert (row.status, row.end_reason) == ("ended", "client")
    with pytest.raises(ModelNotFoundError):
        asyncio.run(playback.end_playback_session(rt, "no-such-session"))
    with pytest.raises(ModelNotFoundError):
        _beat(rt, "no-such-session", 1.0)


def test_a_session_without_heartbeats_for_its_ttl_ends_by_itself(rt) -> None:
    sid = playback.create_playback_session(
        rt, packaged_asset(rt), "device-1", None, "client"
    ).session_id
    _beat(rt, sid, 1.0)
    flush(rt)
    assert end_idle_sessions(rt) == 0
    long_ago = utcnow() - timedelta(seconds=rt.settings.playback_session_ttl_s + 5)
    with rt.db.session() as s:
        row = s.get(PlaybackSessionRow, sid)
        row.last_heartbeat_at = long_ago
    assert end_idle_sessions(rt) == 0  # the buffer still holds its live state
    asyncio.run(rt.playback_buffer().drop_state(sid))  # as its TTL would
    assert end_idle_sessions(rt) == 1
    row = session_row(rt, sid)
    assert (row.status, row.end_reason) == ("ended", "timeout")
    assert row.ended_at == long_ago
    with pytest.raises(PlaybackSessionEndedError):
        _beat(rt, sid, 2.0)


def test_fresh_urls_once_the_refresh_time_has_passed(rt) -> None:
    sid = playback.create_playback_session(
        rt, packaged_asset(rt), "device-1", None, "client"
    ).session_id
    buffer = rt.playback_buffer()
    state = asyncio.run(playback._live_state(rt, sid, None))
    asyncio.run(
        buffer.put_state(state.model_copy(update={"refresh_before_s": int(time.time()) - 1}), 90)
    )
    answer = _beat(rt, sid, 1.0)
    assert answer.refreshed_urls is not None
    assert f"/{sid}/packages/" in answer.refreshed_urls.hls_url
    assert answer.refreshed_urls.token_refresh_before > utcnow()
    assert _beat(rt, sid, 2.0).refreshed_urls is None  # the state has the new times
    flush(rt)
    assert session_row(rt, sid).refresh_before > utcnow()


def test_concurrent_streams_are_limited_per_device_and_per_user(rt, tmp_path: Path) -> None:
    rt.settings = Settings(
        _env_file=None,
        data_dir=tmp_path / "data",
        signing_secret="s" * 32,
        max_concurrent_streams=1,
    )
    asset_id = packaged_asset(rt)
    first = playback.create_playback_session(rt, asset_id, "tv", None, "client")
    with pytest.raises(ConcurrentStreamsExceededError, match="this device"):
        playback.create_playback_session(rt, asset_id, "tv", None, "client")
    tracking, _ = playback.create_tracking_session(rt, "app", "user-1")
    playback.create_playback_session(rt, asset_id, "phone", tracking, "client")
    with pytest.raises(ConcurrentStreamsExceededError, match="this user"):
        playback.create_playback_session(rt, asset_id, "tablet", tracking, "client")
    asyncio.run(playback.end_playback_session(rt, first.session_id))
    playback.create_playback_session(rt, asset_id, "tv", None, "client")


def test_the_listing_tells_live_sessions_from_ended_ones(rt) -> None:
    asset_id = packaged_asset(rt)
    live = playback.create_playback_session(rt, asset_id, "d1", None, "c").session_id
    gone = playback.create_playback_session(rt, asset_id, "d2", None, "c").session_id
    asyncio.run(playback.end_playback_session(rt, gone))

    def ids(**filters) -> list[str]:
        page, _ = playback.list_playback_sessions(
            rt,
            status=filters.get("status"),
            asset_id=filters.get("asset_id"),
            device_id=filters.get("device_id"),
            limit=50,
            cursor=None,
        )
        return [x.session_id for x in page]

    assert ids(status=PlaybackStatus.ACTIVE) == [live]
    assert ids(status=PlaybackStatus.ENDED) == [gone]
    assert ids(device_id="d2") == [gone]
    assert ids(asset_id=asset_id) == [gone, live]
    page, cursor = playback.list_playback_sessions(
        rt, status=None, asset_id=None, device_id=None, limit=1, cursor=None
    )
    assert [x.session_id for x in page] == [gone] and cursor == gone
    page, cursor = playback.list_playback_sessions(
        rt, status=None, asset_id=None, device_id=None, limit=1, cursor=cursor
    )
    assert [x.session_id for x in page] == [live] and cursor is None


def test_a_session_never_heard_from_is_listed_ended_once_idle(rt) -> None:
    sid = playback.create_playback_session(rt, packaged_asset(rt), "d", None, "c").session_id
    with rt.db.session() as s:
        s.get(PlaybackSessionRow, sid).created_at = utcnow() - timedelta(hours=1)

    def listed(status: PlaybackStatus) -> list[str]:
        page, _ = playback.list_playback_sessions(
            rt, status=status, asset_id=None, device_id=None, limit=50, cursor=None
        )
        return [x.session_id for x in page]

    assert listed(PlaybackStatus.ACTIVE) == [] and listed(PlaybackStatus.ENDED) == [sid]


def test_refreshed_urls_reach_the_row_whichever_heartbeat_is_newest(rt) -> None:
    from datetime import UTC, datetime

    from mediamill.schemas.playback import HeartbeatRecord
    from mediamill.storage import playback as rows

    sid = playback.create_playback_session(rt, packaged_asset(rt), "d", None, "c").session_id
    now = utcnow()
    later = datetime(2099, 1, 1, tzinfo=UTC)
    refreshed = HeartbeatRecord(
        id="hb-1",
        session_id=sid,
        received_at=now,
        position_seconds=1.0,
        is_paused=False,
        urls_expire_at=later,
        urls_refresh_before=later - timedelta(minutes=5),
    )
    newer = HeartbeatRecord(
        id="hb-2",
        session_id=sid,
        received_at=now + timedelta(seconds=1),
        position_seconds=2.0,
        is_paused=False,
    )
    with rt.db.session() as s:
        rows.write_buffered(s, [refreshed, newer])
    row = session_row(rt, sid)
    assert row.expires_at == later and row.position_s == 2.0


def test_with_cloudfront_a_session_gets_the_cookies_its_segments_need(
    make_runtime: MakeRuntime, tmp_path: Path
) -> None:
    import base64
    import json as jsonlib

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = rsa.generate_private_key(65537, 2048)
    pem = tmp_path / "cf.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cdn = "https://d111111abcdef8.cloudfront.net"
    rt = make_runtime(
        Settings(
            _env_file=None,
            data_dir=tmp_path / "data",
            signing_secret="s" * 32,
            signing_mode="cloudfront",
            cdn_base_url=cdn,
            cloudfront_key_pair_id="K2JCJMDEHXQW5F",
            cloudfront_private_key_file=pem,
        )
    )
    asset_id = packaged_asset(rt)
    created = playback.create_playback_session(rt, asset_id, "d", None, "c")
    sid = created.session_id
    body = created.to_json_dict()
    prefix = f"/s/{sid}/packages/{asset_id}/pkg-test"
    assert created.hls_url.startswith(f"{cdn}{prefix}/master.m3u8?Policy=")
    assert body["cookiePath"] == f"{prefix}/"
    cookies = body["cookies"]
    assert set(cookies) == {"CloudFront-Policy", "CloudFront-Signature", "CloudFront-Key-Pair-Id"}

    def cf(text: str) -> bytes:
        return base64.b64decode(text.replace("-", "+").replace("_", "=").replace("~", "/"))

    policy = cf(cookies["CloudFront-Policy"])
    assert jsonlib.loads(policy)["Statement"][0]["Resource"] == f"{cdn}{prefix}/*"
    key.public_key().verify(
        cf(cookies["CloudFront-Signature"]), policy, padding.PKCS1v15(), hashes.SHA1()
    )
    # nginx signing sends no cookies: the fields are absent, not null.
    nginx_rt = make_runtime(
        Settings(_env_file=None, data_dir=tmp_path / "d2", signing_secret="s" * 32)
    )
    plain = playback.create_playback_session(nginx_rt, asset_id, "d2", None, "c").to_json_dict()
    assert "cookies" not in plain and "cookiePath" not in plain
