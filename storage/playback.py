"""Playback rows: tracking sessions, playback sessions, heartbeats and player events.

Heartbeats and events reach this module in batches, from the flush of the buffer
(workers/playback_flush.py), and may reach it twice (a flush whose worker died
before it confirmed): every insert is ON CONFLICT DO NOTHING on the record's own
key, and a session's position only moves to a later heartbeat, so a batch written
twice leaves what it left once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, bindparam, func, or_, select, text, update
from sqlalchemy.orm import Session

from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import InvalidRequestError
from mediamill.schemas.playback import (
    EndReason,
    EventBatchRecord,
    HeartbeatRecord,
    PlaybackSession,
    PlaybackStatus,
)
from mediamill.storage.db import dialect_insert, inserted_count
from mediamill.storage.models import (
    PlaybackHeartbeatRow,
    PlaybackSessionRow,
    PlayerEventRow,
    TrackingSessionRow,
)
from mediamill.storage.repo import keyset_page
from mediamill.storage.views import mark_sessions

MAX_PAGE_SIZE = 200


# ---- tracking sessions ----------------------------------------------------------------------


def add_tracking_session(session: Session, row: TrackingSessionRow) -> None:
    session.add(row)


def tracking_session_row(session: Session, session_id: str) -> TrackingSessionRow | None:
    return session.get(TrackingSessionRow, session_id)


def end_tracking_session(session: Session, session_id: str, at: datetime) -> bool:
    """Mark the tracking session ended; False when it was unknown or already ended."""
    result = session.execute(
        update(TrackingSessionRow)
        .where(TrackingSessionRow.id == session_id, TrackingSessionRow.ended_at.is_(None))
        .values(ended_at=at)
    )
    return result.rowcount == 1


# ---- playback sessions ----------------------------------------------------------------------


def lock_streams_of(session: Session, device_id: str, user_id: str | None) -> None:
    """Serialise the creation of sessions for one device (and user) until the
    transaction ends, so two at once cannot both take the last free stream. SQLite
    serialises every writer anyway."""
    if session.bind.dialect.name != "postgresql":
        return
    for subject in sorted({f"device:{device_id}", *([f"user:{user_id}"] if user_id else [])}):
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:subject, 0))"),
            {"subject": f"mediamill-streams:{subject}"},
        )


def _live(live_after: datetime):
    """Active, and heard from (or, never heard from, made) since `live_after`: never
    NULL, so its negation is exactly the sessions that are not live."""
    seen = func.coalesce(PlaybackSessionRow.last_heartbeat_at, PlaybackSessionRow.created_at)
    return and_(PlaybackSessionRow.status == PlaybackStatus.ACTIVE.value, seen >= live_after)


def count_live_streams(
    session: Session, live_after: datetime, *, device_id: str, user_id: str | None
) -> tuple[int, int]:
    """(live sessions of the device, live sessions of the user; 0 without a user)."""
    by_device = session.scalar(
        select(func.count())
        .select_from(PlaybackSessionRow)
        .where(PlaybackSessionRow.device_id == device_id, _live(live_after))
    )
    by_user = 0
    if user_id:
        by_user = session.scalar(
            select(func.count())
            .select_from(PlaybackSessionRow)
            .where(PlaybackSessionRow.user_id == user_id, _live(live_after))
        )
    return int(by_device or 0), int(by_user or 0)


def add_playback_session(session: Session, row: PlaybackSessionRow) -> None:
    session.add(row)


def playback_session_row(session: Session, session_id: str) -> PlaybackSessionRow | None:
    return session.get(PlaybackSessionRow, session_id)


def end_playback_session(
    session: Session, session_id: str, reason: EndReason, at: datetime
) -> bool:
    """Mark an active session ended; False when it was unknown or had ended already."""
    result = session.execute(
        update(PlaybackSessionRow)
        .where(
            PlaybackSessionRow.id == session_id,
            PlaybackSessionRow.status == PlaybackStatus.ACTIVE.value,
        )
        .values(status=PlaybackStatus.ENDED.value, end_reason=reason.value, ended_at=at)
    )
    if result.rowcount == 1:
        mark_sessions(session, [session_id], at)
    return result.rowcount == 1


def idle_session_ids(session: Session, idle_before: datetime, limit: int = 1000) -> list[str]:
    """Active sessions not heard from (nor made) since `idle_before`."""
    stmt = (
        select(PlaybackSessionRow.id)
        .where(
            PlaybackSessionRow.status == PlaybackStatus.ACTIVE.value,
            func.coalesce(PlaybackSessionRow.last_heartbeat_at, PlaybackSessionRow.created_at)
            < idle_before,
        )
        .limit(limit)
    )
    return list(session.scalars(stmt))


def end_idle_sessions(session: Session, ids: Iterable[str], idle_before: datetime) -> int:
    """End the sessions of `ids` that are still idle since `idle_before` (timeout); the
    end time is their last sign of life."""
    ids = list(ids)
    if not ids:
        return 0
    seen = func.coalesce(PlaybackSessionRow.last_heartbeat_at, PlaybackSessionRow.created_at)
    result = session.execute(
        update(PlaybackSessionRow)
        .where(
            PlaybackSessionRow.id.in_(ids),
            PlaybackSessionRow.status == PlaybackStatus.ACTIVE.value,
            seen < idle_before,
        )
        .values(
            status=PlaybackStatus.ENDED.value,
            end_reason=EndReason.TIMEOUT.value,
            ended_at=seen,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount:
        mark_sessions(session, ids, utcnow())
    return result.rowcount


def playback_session_of(row: PlaybackSessionRow) -> PlaybackSession:
    return PlaybackSession(
        session_id=row.id,
        asset_id=row.asset_id,
        package_id=row.package_id,
        device_id=row.device_id,
        tracking_session_id=row.tracking_session_id,
        user_id=row.user_id,
        status=PlaybackStatus(row.status),
        position_seconds=row.position_s,
        is_paused=row.is_paused,
        created_at=row.created_at,
        last_heartbeat_at=row.last_heartbeat_at,
        ended_at=row.ended_at,
        end_reason=EndReason(row.end_reason) if row.end_reason else None,
        expires_at=row.expires_at,
    )


def list_playback_sessions_page(
    session: Session,
    *,
    live_after: datetime,
    status: PlaybackStatus | None,
    asset_id: str | None,
    device_id: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[PlaybackSession], str | None]:
    """Sessions newest first; `status=active` lists those still live (active and heard
    from since `live_after`), `ended` the others. The cursor is the last session's id."""
    stmt = select(PlaybackSessionRow)
    if status is PlaybackStatus.ACTIVE:
        stmt = stmt.where(_live(live_after))
    elif status is PlaybackStatus.ENDED:
        stmt = stmt.where(~_live(live_after))
    if asset_id is not None:
        stmt = stmt.where(PlaybackSessionRow.asset_id == asset_id)
    if device_id is not None:
        stmt = stmt.where(PlaybackSessionRow.device_id == device_id)
    anchor = session.get(PlaybackSessionRow, cursor) if cursor else None
    if cursor and anchor is None:
        raise InvalidRequestError("cursor is not one this listing gave")
    page, next_cursor = keyset_page(session, stmt, PlaybackSessionRow, anchor, limit)
    return [playback_session_of(r) for r in page], next_cursor


# ---- buffered heartbeats and events ---------------------------------------------------------


@dataclass(frozen=True)
class WriteCounts:
    heartbeats: int
    events: int


def write_buffered(
    session: Session, records: Iterable[HeartbeatRecord | EventBatchRecord]
) -> WriteCounts:
    """Store a batch of buffered records, each once whatever ran before, and move each
    session's position to its latest heartbeat. Returns what was new."""
    heartbeats: dict[str, HeartbeatRecord] = {}
    events: dict[tuple[str, int], dict] = {}
    for record in records:
        if isinstance(record, HeartbeatRecord):
            heartbeats[record.id] = record
            continue
        for ev in record.events:
            events.setdefault(
                (ev.session_id, ev.seq),
                {
                    "session_id": ev.session_id,
                    "seq": ev.seq,
                    "type": ev.type.value,
                    "occurred_at": ev.occurred_at,
                    "received_at": ev.received_at,
                    "position_s": ev.position_seconds,
                    "data": ev.data,
                },
            )
    touched = {h.session_id for h in heartbeats.values()} | {sid for sid, _ in events}
    mark_sessions(session, touched, utcnow())
    if session.bind.dialect.name == "postgresql":
        return _write_postgresql(session, list(heartbeats.values()), list(events.values()))
    insert = dialect_insert(session)
    new_heartbeats = new_events = 0
    if heartbeats:
        rows = [
            {
                "id": h.id,
                "session_id": h.session_id,
                "received_at": h.received_at,
                "position_s": h.position_seconds,
                "is_paused": h.is_paused,
            }
            for h in heartbeats.values()
        ]
        table = PlaybackHeartbeatRow.__table__
        stmt = insert(table).on_conflict_do_nothing(index_elements=["id"]).returning(table.c.id)
        new_heartbeats = inserted_count(session, stmt, rows)
        _advance_sessions(session, heartbeats.values())
    if events:
        table = PlayerEventRow.__table__
        stmt = (
            insert(table)
            .on_conflict_do_nothing(index_elements=["session_id", "seq"])
            .returning(table.c.seq)
        )
        new_events = inserted_count(session, stmt, list(events.values()))
    return WriteCounts(new_heartbeats, new_events)


# On PostgreSQL a batch is three statements whatever its size: each column goes as one
# array and `unnest` makes the rows. Measured by scripts/bench_playback.py: the generic
# multi-row INSERT (SQLAlchemy compiling, psycopg parsing thousands of placeholders)
# cost the flush 40 us an entry, in bursts that showed as the API's p99 on a shared box.
_PG_HEARTBEATS = text(
    "INSERT INTO playback_heartbeats (id, session_id, received_at, position_s, is_paused) "
    "SELECT * FROM unnest(CAST(:ids AS varchar[]), CAST(:sessions AS varchar[]), "
    "CAST(:received AS timestamptz[]), CAST(:positions AS float8[]), "
    "CAST(:paused AS boolean[])) "
    "ON CONFLICT (id) DO NOTHING RETURNING 1"
)
_PG_EVENTS = text(
    "INSERT INTO player_events "
    "(session_id, seq, type, occurred_at, received_at, position_s, data) "
    "SELECT s, q, t, o, r, p, CAST(d AS json) FROM unnest(CAST(:sessions AS varchar[]), "
    "CAST(:seqs AS bigint[]), CAST(:types AS varchar[]), CAST(:occurred AS timestamptz[]), "
    "CAST(:received AS timestamptz[]), CAST(:positions AS float8[]), "
    "CAST(:data AS text[])) AS v(s, q, t, o, r, p, d) "
    "ON CONFLICT (session_id, seq) DO NOTHING RETURNING 1"
)
_PG_ADVANCE = text(
    "UPDATE playback_sessions AS p SET last_heartbeat_at = v.at, position_s = v.pos, "
    "is_paused = v.paused FROM unnest(CAST(:sessions AS varchar[]), "
    "CAST(:at AS timestamptz[]), CAST(:pos AS float8[]), CAST(:paused AS boolean[])) "
    "AS v(sid, at, pos, paused) "
    "WHERE p.id = v.sid AND (p.last_heartbeat_at IS NULL OR p.last_heartbeat_at < v.at)"
)


def _write_postgresql(
    session: Session, heartbeats: list[HeartbeatRecord], events: list[dict]
) -> WriteCounts:
    conn = session.connection()
    new_heartbeats = new_events = 0
    if heartbeats:
        found = conn.execute(
            _PG_HEARTBEATS,
            {
                "ids": [h.id for h in heartbeats],
                "sessions": [h.session_id for h in heartbeats],
                "received": [h.received_at for h in heartbeats],
                "positions": [h.position_seconds for h in heartbeats],
                "paused": [h.is_paused for h in heartbeats],
            },
        )
        new_heartbeats = len(found.all())
        latest = _latest(heartbeats)
        conn.execute(
            _PG_ADVANCE,
            {
                "sessions": [h.session_id for h in latest],
                "at": [h.received_at for h in latest],
                "pos": [h.position_seconds for h in latest],
                "paused": [h.is_paused for h in latest],
            },
        )
        _refresh_urls(session, heartbeats)
    if events:
        found = conn.execute(
            _PG_EVENTS,
            {
                "sessions": [e["session_id"] for e in events],
                "seqs": [e["seq"] for e in events],
                "types": [e["type"] for e in events],
                "occurred": [e["occurred_at"] for e in events],
                "received": [e["received_at"] for e in events],
                "positions": [e["position_s"] for e in events],
                "data": [json.dumps(e["data"], separators=(",", ":")) for e in events],
            },
        )
        new_events = len(found.all())
    return WriteCounts(new_heartbeats, new_events)


def _latest(heartbeats: Iterable[HeartbeatRecord]) -> list[HeartbeatRecord]:
    """Each session's latest heartbeat of the batch."""
    latest: dict[str, HeartbeatRecord] = {}
    for h in heartbeats:
        if h.session_id not in latest or h.received_at > latest[h.session_id].received_at:
            latest[h.session_id] = h
    return list(latest.values())


def _advance_sessions(session: Session, heartbeats: Iterable[HeartbeatRecord]) -> None:
    latest = _latest(heartbeats)
    table = PlaybackSessionRow.__table__
    stmt = (
        update(table)
        .where(
            table.c.id == bindparam("sid"),
            or_(table.c.last_heartbeat_at.is_(None), table.c.last_heartbeat_at < bindparam("at")),
        )
        .values(
            last_heartbeat_at=bindparam("at"),
            position_s=bindparam("pos"),
            is_paused=bindparam("paused"),
        )
    )
    params = [
        {"sid": h.session_id, "at": h.received_at, "pos": h.position_seconds, "paused": h.is_paused}
        for h in latest
    ]
    session.connection().execute(stmt, params)
    _refresh_urls(session, list(heartbeats))


def _refresh_urls(session: Session, heartbeats: Iterable[HeartbeatRecord]) -> None:
    """The new URL expiry of sessions whose heartbeats got fresh URLs: each session's
    latest expiry of the batch (its newest heartbeat need not be the one that got them)."""
    table = PlaybackSessionRow.__table__
    newest: dict[str, HeartbeatRecord] = {}
    for h in heartbeats:
        if h.urls_expire_at is None or h.urls_refresh_before is None:
            continue
        known = newest.get(h.session_id)
        if known is None or h.urls_expire_at > known.urls_expire_at:  # type: ignore[operator]
            newest[h.session_id] = h
    refreshed = [
        {"sid": h.session_id, "exp": h.urls_expire_at, "ref": h.urls_refresh_before}
        for h in newest.values()
    ]
    if refreshed:
        session.connection().execute(
            update(table)
            .where(table.c.id == bindparam("sid"), table.c.expires_at < bindparam("exp"))
            .values(expires_at=bindparam("exp"), refresh_before=bindparam("ref")),
            refreshed,
        )


def count_stored(session: Session, session_ids: Iterable[str] | None = None) -> WriteCounts:
    """Heartbeats and events stored (of `session_ids`, or all)."""
    hb = select(func.count()).select_from(PlaybackHeartbeatRow)
    ev = select(func.count()).select_from(PlayerEventRow)
    if session_ids is not None:
        ids = list(session_ids)
        hb = hb.where(PlaybackHeartbeatRow.session_id.in_(ids))
        ev = ev.where(PlayerEventRow.session_id.in_(ids))
    return WriteCounts(int(session.scalar(hb) or 0), int(session.scalar(ev) or 0))
