"""Playback in tests: an asset with a ready package recorded straight in the database
(the playback routes need nothing more of it), and reading back what was stored."""

from __future__ import annotations

import hashlib
import os

from mediamill.schemas.packages import PackageStatus
from mediamill.storage import repo
from mediamill.storage.models import PlaybackHeartbeatRow, PlaybackSessionRow, PlayerEventRow
from mediamill.workers.runtime import Runtime


def packaged_asset(
    rt: Runtime,
    *,
    asset_id: str | None = None,
    package_id: str = "pkg-test",
    duration_ms: int = 9000,
) -> str:
    """An analysed asset (`duration_ms` long) with one ready package; its id. The package
    files are not stored: put them under its prefix when a test fetches them."""
    asset_id = asset_id or hashlib.sha256(os.urandom(32)).hexdigest()
    with rt.db.session() as s:
        repo.insert_asset_if_absent(s, asset_id, f"originals/{asset_id}", 1000, "clip.mp4")
        row = repo.get_asset_row(s, asset_id)
        row.status = "analysed"
        row.duration_ms = duration_ms
        package = repo.upsert_package(s, asset_id, package_id, [], 4, None)
        package.status = PackageStatus.READY.value
        package.duration_ms = duration_ms
        package.master_key = f"packages/{asset_id}/{package_id}/master.m3u8"
        package.manifest_key = f"packages/{asset_id}/{package_id}/manifest.mpd"
    return asset_id


def stored_heartbeats(rt: Runtime, session_id: str) -> list[PlaybackHeartbeatRow]:
    with rt.db.session() as s:
        rows = (
            s.query(PlaybackHeartbeatRow)
            .filter_by(session_id=session_id)
            .order_by(PlaybackHeartbeatRow.received_at)
            .all()
        )
        s.expunge_all()
        return rows


def stored_events(rt: Runtime, session_id: str) -> list[PlayerEventRow]:
    with rt.db.session() as s:
        rows = (
            s.query(PlayerEventRow)
            .filter_by(session_id=session_id)
            .order_by(PlayerEventRow.seq)
            .all()
        )
        s.expunge_all()
        return rows


def session_row(rt: Runtime, session_id: str) -> PlaybackSessionRow:
    with rt.db.session() as s:
        row = s.get(PlaybackSessionRow, session_id)
        assert row is not None
        s.expunge(row)
        return row
