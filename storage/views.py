"""View rows: the marks that say a session's view must be derived again, the facts the
derivation reads, the views and sections it writes, and the rollup buckets.

Every write here is idempotent: a view is replaced whole under its session's id, a
bucket's rollup rows are replaced whole, and each write of a view moves the version of
the buckets it lands in, so a rollup made from an older version is known stale.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, and_, delete, func, or_, select, text, tuple_, type_coerce, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from mediamill.schemas.analytics import (
    Audience,
    DeviceClass,
    DeviceInfo,
    FactEvent,
    FactHeartbeat,
    FactSegment,
    SessionFacts,
    View,
    ViewFigures,
)
from mediamill.storage.db import dialect_insert
from mediamill.storage.models import (
    EdgeSegmentRequestRow,
    PlaybackHeartbeatRow,
    PlaybackSessionRow,
    PlayerEventRow,
    RollupBucketRow,
    TrackingSessionRow,
    UTCDateTime,
    ViewMarkRow,
    ViewRollupRow,
    ViewRow,
    ViewSectionRow,
)

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
# Bounds that keep range scans on their index: a section (one stretch of playing) of
# more than two days, or a view (pauses included) of more than a week, is not looked for.
MAX_SECTION_SPAN = timedelta(days=2)
MAX_VIEW_SPAN = timedelta(days=7)
LEVEL_HOUR = "h"
LEVEL_DAY = "d"
_OK_STATUSES = (200, 206, 304)


def hour_of(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_of(at: datetime) -> datetime:
    return hour_of(at).replace(hour=0)


# ---- marks ----------------------------------------------------------------------------------


def mark_sessions(session: Session, session_ids: Iterable[str], at: datetime) -> None:
    """Note that these sessions' views must be derived (again)."""
    rows = [{"session_id": sid, "marked_at": at} for sid in sorted(set(session_ids))]
    if not rows:
        return
    insert = dialect_insert(session)
    stmt = insert(ViewMarkRow.__table__)
    stmt = stmt.on_conflict_do_update(
        index_elements=["session_id"], set_={"marked_at": stmt.excluded.marked_at}
    )
    session.connection().execute(stmt, rows)


def marked_sessions(session: Session, limit: int) -> list[tuple[str, datetime]]:
    stmt = select(ViewMarkRow.session_id, ViewMarkRow.marked_at).order_by(ViewMarkRow.marked_at)
    return [(sid, at) for sid, at in session.execute(stmt.limit(limit))]


def unmark(session: Session, marks: Sequence[tuple[str, datetime]]) -> None:
    """Drop the marks that were read, unless a newer write marked the session again."""
    pairs = list(marks)
    for i in range(0, len(pairs), 500):
        chunk = pairs[i : i + 500]
        ids = [sid for sid, _ in chunk]
        # One statement a chunk: the marks whose time is still the one read.
        current = tuple_(ViewMarkRow.session_id, ViewMarkRow.marked_at).in_(chunk)
        session.execute(delete(ViewMarkRow).where(ViewMarkRow.session_id.in_(ids), current))


def count_marks(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(ViewMarkRow)) or 0)


# ---- facts ----------------------------------------------------------------------------------


def session_facts(session: Session, session_ids: Sequence[str]) -> list[SessionFacts]:
    """The stored records of these sessions, one SessionFacts each (unknown ids skipped).
    The viewer is the tracking session's user id when it has one, else the tracking
    session, else the device."""
    ids = list(session_ids)
    ps = PlaybackSessionRow
    cols = (
        ps.id,
        ps.asset_id,
        ps.duration_ms,
        ps.created_at,
        ps.ended_at,
        ps.user_id,
        ps.tracking_session_id,
        ps.device_id,
        ps.country,
        ps.device_class,
        ps.device_info,
        ps.source,
    )
    sessions = list(session.execute(select(*cols).where(ps.id.in_(ids))))
    if not sessions:
        return []
    tracking_ids = {r.tracking_session_id for r in sessions if r.tracking_session_id}
    users = dict(
        session.execute(
            select(TrackingSessionRow.id, TrackingSessionRow.user_id).where(
                TrackingSessionRow.id.in_(tracking_ids)
            )
        ).all()
    )
    events: dict[str, list[FactEvent]] = {r.id: [] for r in sessions}
    stmt = select(
        PlayerEventRow.session_id,
        PlayerEventRow.seq,
        PlayerEventRow.type,
        PlayerEventRow.occurred_at,
        PlayerEventRow.received_at,
        PlayerEventRow.position_s,
        PlayerEventRow.data,
    ).where(PlayerEventRow.session_id.in_(ids))
    for sid, seq, kind, occurred_at, received_at, position_s, data in session.execute(stmt):
        # Rows this module wrote from validated records: no second validation.
        events[sid].append(
            FactEvent.model_construct(
                seq=seq,
                type=kind,
                occurred_at=occurred_at,
                received_at=received_at,
                position_s=position_s,
                data=data or {},
            )
        )
    beats: dict[str, list[FactHeartbeat]] = {r.id: [] for r in sessions}
    stmt = select(
        PlaybackHeartbeatRow.session_id,
        PlaybackHeartbeatRow.received_at,
        PlaybackHeartbeatRow.position_s,
        PlaybackHeartbeatRow.is_paused,
    ).where(PlaybackHeartbeatRow.session_id.in_(ids))
    for sid, received_at, position_s, is_paused in session.execute(stmt):
        beats[sid].append(
            FactHeartbeat(received_at=received_at, position_s=position_s, is_paused=is_paused)
        )
    segments: dict[str, list[FactSegment]] = {r.id: [] for r in sessions}
    stmt = select(
        EdgeSegmentRequestRow.session_id,
        EdgeSegmentRequestRow.requested_at,
        EdgeSegmentRequestRow.from_s,
        EdgeSegmentRequestRow.to_s,
    ).where(
        EdgeSegmentRequestRow.session_id.in_(ids),
        EdgeSegmentRequestRow.status.in_(_OK_STATUSES),
    )
    for sid, requested_at, from_s, to_s in session.execute(stmt):
        segments[sid].append(FactSegment(requested_at=requested_at, from_s=from_s, to_s=to_s))
    out = []
    for row in sessions:
        user_id = row.user_id or users.get(row.tracking_session_id or "")
        viewer = user_id or row.tracking_session_id or f"device:{row.device_id}"
        out.append(
            SessionFacts(
                session_id=row.id,
                asset_id=row.asset_id,
                duration_ms=row.duration_ms,
                created_at=row.created_at,
                ended_at=row.ended_at,
                viewer_id=viewer,
                authenticated=user_id is not None,
                device_id=row.device_id,
                audience=Audience(
                    country=row.country,
                    device_class=DeviceClass(row.device_class or DeviceClass.OTHER.value),
                    device_info=DeviceInfo.model_validate(row.device_info or {}),
                    source=row.source,
                ),
                events=events[row.id],
                heartbeats=beats[row.id],
                segments=segments[row.id],
            )
        )
    return out


# ---- views ----------------------------------------------------------------------------------


def _bump(session: Session, hours: Iterable[datetime], bump_from: datetime | None = None) -> None:
    """Move the version of these hours' buckets and of their days' (not of those that
    begin before `bump_from`)."""
    hours = list(hours)
    keys = {(LEVEL_HOUR, hour_of(h)) for h in hours} | {(LEVEL_DAY, day_of(h)) for h in hours}
    if bump_from is not None:
        keys = {(level, at) for level, at in keys if at >= bump_from}
    if not keys:
        return
    insert = dialect_insert(session)
    table = RollupBucketRow.__table__
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["level", "bucket_at"], set_={"version": table.c.version + 1}
    )
    rows = [
        {"level": level, "bucket_at": at, "version": 1, "rolled_version": 0, "rolled_at": None}
        for level, at in sorted(keys)
    ]
    session.connection().execute(stmt, rows)


def replace_views(
    session: Session,
    views: Sequence[View],
    removed: Sequence[str] = (),
    *,
    bump_from: datetime | None = None,
) -> None:
    """Write each view whole (its row and its sections) under its id, and remove the
    views of `removed`; the buckets of what changed, old and new, move their version,
    but for buckets that begin before `bump_from` (past the raw retention: never rolled
    again, so their rollups stand)."""
    ids = [v.view_id for v in views] + list(removed)
    if not ids:
        return
    before = dict(
        session.execute(select(ViewRow.id, ViewRow.started_at).where(ViewRow.id.in_(ids))).all()
    )
    session.execute(delete(ViewSectionRow).where(ViewSectionRow.view_id.in_(ids)))
    session.execute(delete(ViewRow).where(ViewRow.id.in_(ids)))
    rows, sections = [], []
    for v in views:
        a = v.audience
        rows.append(
            {
                "id": v.view_id,
                "asset_id": v.asset_id,
                "viewer_id": v.viewer_id,
                "authenticated": v.authenticated,
                "device_id": v.device_id,
                "country": a.country,
                "device_class": a.device_class.value,
                "device_info": a.device_info.model_dump(mode="json"),
                "source": a.source,
                "protocol": v.protocol,
                "rendition": v.rendition,
                "duration_ms": v.duration_ms,
                "started_at": v.started_at,
                "finished_at": v.finished_at,
                "last_activity_at": v.last_activity_at,
                "watched_ms": v.watched_ms,
                "counted": v.counted,
                "completed": v.completed,
                "startup_ms": v.startup_ms,
                "playing_ms": v.playing_ms,
                "rebuffer_ms": v.rebuffer_ms,
                "rebuffer_count": v.rebuffer_count,
                "failed": v.failed,
                "avg_bitrate": v.avg_bitrate,
                "coverage": v.coverage,
            }
        )
        for idx, s in enumerate(v.sections):
            last = idx == len(v.sections) - 1
            sections.append(
                {
                    "view_id": v.view_id,
                    "idx": idx,
                    "from_s": s.from_s,
                    "to_s": s.to_s,
                    "started_at": s.started_at,
                    # The last section of an unfinished view is itself unfinished.
                    "finished_at": None if last and v.finished_at is None else s.finished_at,
                }
            )
    if rows:
        session.connection().execute(ViewRow.__table__.insert(), rows)
    if sections:
        session.connection().execute(ViewSectionRow.__table__.insert(), sections)
    _bump(session, [*before.values(), *(v.started_at for v in views)], bump_from)


def count_views(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(ViewRow)) or 0)


# ---- rollup buckets -------------------------------------------------------------------------


def stale_buckets(
    session: Session, level: str, after: datetime, before: datetime, limit: int
) -> list[tuple[datetime, int]]:
    """Buckets of `level` that begin in [after, before) and whose rollup is missing or
    stale: (bucket start, version to roll)."""
    stmt = (
        select(RollupBucketRow.bucket_at, RollupBucketRow.version)
        .where(
            RollupBucketRow.level == level,
            RollupBucketRow.bucket_at >= after,
            RollupBucketRow.bucket_at < before,
            RollupBucketRow.rolled_version < RollupBucketRow.version,
        )
        .order_by(RollupBucketRow.bucket_at)
        .limit(limit)
    )
    return [(at, version) for at, version in session.execute(stmt)]


def clean_buckets(session: Session, level: str, start: datetime, end: datetime) -> set[datetime]:
    """The buckets of `level` in [start, end) whose rollup rows are current."""
    stmt = select(RollupBucketRow.bucket_at).where(
        RollupBucketRow.level == level,
        RollupBucketRow.bucket_at >= start,
        RollupBucketRow.bucket_at < end,
        RollupBucketRow.rolled_version == RollupBucketRow.version,
    )
    return {at.astimezone(UTC) for at in session.scalars(stmt)}


def known_buckets(session: Session, level: str, start: datetime, end: datetime) -> set[datetime]:
    """The buckets of `level` in [start, end) that ever held a view."""
    stmt = select(RollupBucketRow.bucket_at).where(
        RollupBucketRow.level == level,
        RollupBucketRow.bucket_at >= start,
        RollupBucketRow.bucket_at < end,
    )
    return {at.astimezone(UTC) for at in session.scalars(stmt)}


def replace_rollups(
    session: Session, level: str, bucket_at: datetime, version: int, rows: Sequence[dict]
) -> bool:
    """Replace the bucket's rollup rows with `rows`, made from `version`; False (and
    nothing written) when a view landed in the bucket since that version was read."""
    done = session.execute(
        update(RollupBucketRow)
        .where(
            RollupBucketRow.level == level,
            RollupBucketRow.bucket_at == bucket_at,
            RollupBucketRow.version == version,
        )
        .values(rolled_version=version, rolled_at=func.now())
    )
    if done.rowcount != 1:
        return False
    session.execute(
        delete(ViewRollupRow).where(
            ViewRollupRow.level == level, ViewRollupRow.bucket_at == bucket_at
        )
    )
    if rows:
        session.connection().execute(ViewRollupRow.__table__.insert(), list(rows))
    return True


def rollup_rows(
    session: Session,
    level: str,
    buckets: Iterable[datetime],
    asset_ids: Sequence[str] | None,
    dimension: str,
    *,
    per_asset: bool = False,
) -> Iterator[ViewRollupRow]:
    """The rollup rows of these buckets for one dimension: every asset's (`per_asset`),
    those of `asset_ids`, or else the all-assets rows."""
    wanted = {b.astimezone(UTC) for b in buckets}
    if not wanted:
        return
    # A range and a filter here, not `IN (...)`: a range may hold more buckets than a
    # statement may carry parameters.
    stmt = select(ViewRollupRow).where(
        ViewRollupRow.level == level,
        ViewRollupRow.bucket_at >= min(wanted),
        ViewRollupRow.bucket_at <= max(wanted),
        ViewRollupRow.dimension == dimension,
    )
    if per_asset:
        stmt = stmt.where(ViewRollupRow.asset_id != "")
    elif asset_ids:
        stmt = stmt.where(ViewRollupRow.asset_id.in_(list(asset_ids)))
    else:
        stmt = stmt.where(ViewRollupRow.asset_id == "")
    for row in session.scalars(stmt.execution_options(yield_per=2000)):
        if row.bucket_at.astimezone(UTC) in wanted:
            yield row


def view_figures(
    session: Session, start: datetime, end: datetime, asset_ids: Sequence[str] | None = None
) -> Iterator[ViewFigures]:
    """What rollups read of the views that started in [start, end), streamed."""
    cols = (
        ViewRow.asset_id,
        ViewRow.started_at,
        ViewRow.viewer_id,
        ViewRow.authenticated,
        ViewRow.device_id,
        ViewRow.country,
        ViewRow.device_class,
        ViewRow.source,
        ViewRow.counted,
        ViewRow.watched_ms,
        ViewRow.completed,
        ViewRow.protocol,
        ViewRow.rendition,
        ViewRow.startup_ms,
        ViewRow.playing_ms,
        ViewRow.rebuffer_ms,
        ViewRow.failed,
        ViewRow.avg_bitrate,
        ViewRow.coverage,
    )
    stmt = select(*cols).where(ViewRow.started_at >= start, ViewRow.started_at < end)
    if asset_ids:
        stmt = stmt.where(ViewRow.asset_id.in_(list(asset_ids)))
    names = [c.key for c in cols]
    for row in session.execute(stmt.execution_options(yield_per=5000)):
        yield ViewFigures.model_construct(**dict(zip(names, row, strict=True)))


# The key of the one advisory lock that makes view updates run one at a time.
_UPDATE_LOCK_KEY = 0x6D6D5F7669657773  # "mm_views"


@contextmanager
def exclusive_update(engine: Engine, wait_s: float = 0.0) -> Iterator[bool]:
    """Whether this process may update views now: on PostgreSQL a session advisory lock
    held for the block, waited for up to `wait_s` (another worker holding it past that:
    False); elsewhere always True (one process owns a SQLite file)."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    with engine.connect() as conn:
        deadline = time.monotonic() + wait_s
        while True:
            got = bool(
                conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": _UPDATE_LOCK_KEY})
            )
            conn.commit()
            if got or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        try:
            yield got
        finally:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _UPDATE_LOCK_KEY})
                conn.commit()


def _sections_in(start: datetime, end: datetime, *, inclusive: bool, unfinished: bool):
    """IBM's range rules for sections. Inclusive: a section that started in the range,
    or started before it and finished in it; otherwise only one that started and
    finished in it. Unfinished sections (finished_at null) only when `unfinished`."""
    sec = ViewSectionRow
    started_in = and_(sec.started_at >= start, sec.started_at <= end)
    finished_in = and_(sec.finished_at >= start, sec.finished_at <= end)
    if inclusive:
        # A section is one stretch of playing: none lasts longer than MAX_SECTION_SPAN,
        # which bounds the scan of those that began before the range.
        earlier = and_(sec.started_at < start, sec.started_at >= start - MAX_SECTION_SPAN)
        cond = or_(started_in, and_(earlier, finished_in))
    else:
        cond = and_(started_in, or_(finished_in, sec.finished_at.is_(None)))
    if not unfinished:
        cond = and_(cond, sec.finished_at.is_not(None))
    return cond


def _like(fragment: str) -> str:
    escaped = fragment.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def section_page(
    session: Session,
    start: datetime,
    end: datetime,
    asset_ids: Sequence[str] | None,
    *,
    inclusive: bool,
    unfinished: bool,
    offset: int,
    limit: int,
) -> tuple[int, list[tuple[ViewSectionRow, ViewRow]]]:
    """IBM's `/views`: (how many sections match, one page of them with their views)."""
    sec = ViewSectionRow
    cond = _sections_in(start, end, inclusive=inclusive, unfinished=unfinished)
    base = select(sec, ViewRow).join(ViewRow, ViewRow.id == sec.view_id).where(cond)
    if asset_ids:
        base = base.where(ViewRow.asset_id.in_(list(asset_ids)))
    count = session.scalar(select(func.count()).select_from(base.subquery())) or 0
    page = base.order_by(sec.started_at, sec.view_id, sec.idx).offset(offset).limit(limit)
    return int(count), [(a, b) for a, b in session.execute(page).all()]


def viewer_page(
    session: Session,
    start: datetime,
    end: datetime,
    asset_ids: Sequence[str] | None,
    viewer_fragment: str | None,
    *,
    unfinished: bool,
    offset: int,
    limit: int,
) -> tuple[int, list[tuple[str, list[tuple[ViewSectionRow, ViewRow]]]]]:
    """IBM's `/viewers`: (how many viewers have a section in the range, one page of
    them, by identifier, each with its sections and their views)."""
    sec = ViewSectionRow
    cond = _sections_in(start, end, inclusive=True, unfinished=unfinished)
    matched = select(ViewRow.viewer_id).join(sec, sec.view_id == ViewRow.id).where(cond)
    if asset_ids:
        matched = matched.where(ViewRow.asset_id.in_(list(asset_ids)))
    if viewer_fragment:
        matched = matched.where(ViewRow.viewer_id.ilike(_like(viewer_fragment), escape="\\"))
    viewers = matched.distinct().subquery()
    count = session.scalar(select(func.count()).select_from(viewers)) or 0
    ids = list(
        session.scalars(
            select(viewers.c.viewer_id).order_by(viewers.c.viewer_id).offset(offset).limit(limit)
        )
    )
    if not ids:
        return int(count), []
    stmt = (
        select(sec, ViewRow)
        .join(ViewRow, ViewRow.id == sec.view_id)
        .where(cond, ViewRow.viewer_id.in_(ids))
        .order_by(sec.started_at, sec.view_id, sec.idx)
    )
    if asset_ids:
        stmt = stmt.where(ViewRow.asset_id.in_(list(asset_ids)))
    by_viewer: dict[str, list[tuple[ViewSectionRow, ViewRow]]] = {i: [] for i in ids}
    for a, b in session.execute(stmt).all():
        by_viewer[b.viewer_id].append((a, b))
    return int(count), list(by_viewer.items())


def view_spans(
    session: Session, start: datetime, end: datetime, asset_ids: Sequence[str] | None
) -> Iterator[tuple[str, datetime, datetime]]:
    """(asset, started, last seen) of every view that was playing at some time in
    [start, end): a finished view until it finished, an unfinished one until its last
    activity."""
    until = type_coerce(func.coalesce(ViewRow.finished_at, ViewRow.last_activity_at), UTCDateTime())
    stmt = select(ViewRow.asset_id, ViewRow.started_at, until).where(
        ViewRow.started_at < end,
        ViewRow.started_at >= start - MAX_VIEW_SPAN,
        until >= start,
    )
    if asset_ids:
        stmt = stmt.where(ViewRow.asset_id.in_(list(asset_ids)))
    for asset, started, last in session.execute(stmt.execution_options(yield_per=5000)):
        yield asset, started.astimezone(UTC), last.astimezone(UTC)


# ---- erasure and export ---------------------------------------------------------------------


def erase_viewer(session: Session, viewer_id: str) -> tuple[dict[str, int], set[datetime]]:
    """Delete everything stored of one viewer: their views and sections, playback
    sessions with their heartbeats, events and edge requests, and tracking sessions.
    Rollup rows are left as they are (the caller rebuilds their sketches). Returns
    (how many of each were deleted, the start times of the deleted views)."""
    views = dict(
        session.execute(
            select(ViewRow.id, ViewRow.started_at).where(ViewRow.viewer_id == viewer_id)
        ).all()
    )
    tracking_ids = set(
        session.scalars(
            select(TrackingSessionRow.id).where(
                or_(TrackingSessionRow.user_id == viewer_id, TrackingSessionRow.id == viewer_id)
            )
        )
    )
    owned = [
        PlaybackSessionRow.user_id == viewer_id,
        PlaybackSessionRow.id.in_(list(views)),
    ]
    if tracking_ids:
        owned.append(PlaybackSessionRow.tracking_session_id.in_(list(tracking_ids)))
    if viewer_id.startswith("device:"):
        owned.append(
            and_(
                PlaybackSessionRow.device_id == viewer_id.removeprefix("device:"),
                PlaybackSessionRow.tracking_session_id.is_(None),
                PlaybackSessionRow.user_id.is_(None),
            )
        )
    sessions = list(session.scalars(select(PlaybackSessionRow.id).where(or_(*owned))))
    ids = sorted(set(sessions) | set(views))
    counts = {"views": len(views), "playback_sessions": len(sessions)}
    counts["tracking_sessions"] = len(tracking_ids)
    for table, column in (
        (ViewSectionRow, ViewSectionRow.view_id),
        (ViewRow, ViewRow.id),
        (ViewMarkRow, ViewMarkRow.session_id),
        (PlayerEventRow, PlayerEventRow.session_id),
        (PlaybackHeartbeatRow, PlaybackHeartbeatRow.session_id),
        (EdgeSegmentRequestRow, EdgeSegmentRequestRow.session_id),
        (PlaybackSessionRow, PlaybackSessionRow.id),
    ):
        for i in range(0, len(ids), 1000):
            session.execute(delete(table).where(column.in_(ids[i : i + 1000])))
    if tracking_ids:
        session.execute(
            delete(TrackingSessionRow).where(TrackingSessionRow.id.in_(list(tracking_ids)))
        )
    return counts, {at.astimezone(UTC) for at in views.values()}


def replace_sketches(
    session: Session,
    level: str,
    bucket_at: datetime,
    sketches: dict[tuple[str, str, str], dict],
    empty: dict,
) -> int:
    """Put new unique-count sketches in a bucket's rollup rows, keeping their counts; a
    row whose group has none any more gets `empty`'s. How many rows changed."""
    rows = session.scalars(
        select(ViewRollupRow).where(
            ViewRollupRow.level == level, ViewRollupRow.bucket_at == bucket_at
        )
    ).all()
    for row in rows:
        new = sketches.get((row.asset_id, row.dimension, row.value), empty)
        row.viewers, row.devices, row.auth_viewers = (
            new["viewers"],
            new["devices"],
            new["auth_viewers"],
        )
    return len(rows)


def export_rows(
    session: Session, start: datetime, end: datetime, asset_ids: Sequence[str] | None
) -> Iterator[ViewRow]:
    """Every view that started in [start, end), oldest first, streamed in batches."""
    stmt = select(ViewRow).where(ViewRow.started_at >= start, ViewRow.started_at < end)
    if asset_ids:
        stmt = stmt.where(ViewRow.asset_id.in_(list(asset_ids)))
    stmt = stmt.order_by(ViewRow.started_at, ViewRow.id).execution_options(yield_per=1000)
    for row in session.scalars(stmt):
        yield row
        session.expunge(row)


def purge_before(session: Session, cutoff: datetime, limit: int) -> dict[str, int]:
    """Delete up to `limit` raw views that started before `cutoff` (their rollups stay),
    and up to `limit` playback sessions made and ended before it, with their records,
    and the tracking sessions that expired before it."""
    view_ids = list(
        session.scalars(select(ViewRow.id).where(ViewRow.started_at < cutoff).limit(limit))
    )
    session_ids = list(
        session.scalars(
            select(PlaybackSessionRow.id)  # made before it ended: ended_at alone says it
            .where(PlaybackSessionRow.ended_at < cutoff)
            .limit(limit)
        )
    )
    if view_ids:
        session.execute(delete(ViewSectionRow).where(ViewSectionRow.view_id.in_(view_ids)))
        session.execute(delete(ViewRow).where(ViewRow.id.in_(view_ids)))
    if session_ids:
        for table, column in (
            (ViewMarkRow, ViewMarkRow.session_id),
            (PlayerEventRow, PlayerEventRow.session_id),
            (PlaybackHeartbeatRow, PlaybackHeartbeatRow.session_id),
            (EdgeSegmentRequestRow, EdgeSegmentRequestRow.session_id),
            (PlaybackSessionRow, PlaybackSessionRow.id),
        ):
            session.execute(delete(table).where(column.in_(session_ids)))
    tracking = session.execute(
        delete(TrackingSessionRow).where(TrackingSessionRow.expires_at < cutoff)
    ).rowcount
    return {"views": len(view_ids), "playback_sessions": len(session_ids), "tracking": tracking}


# ---- PostgreSQL partitions ------------------------------------------------------------------

PARTITIONED = ("views", "view_sections")
# Months older than this (a very long retention) stay in the default partition.
MAX_PARTITIONED_DAYS = 730
_PARTITION = re.compile(r"^(views|view_sections)_y(\d{4})m(\d{2})$")


def _month(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month(at: datetime) -> datetime:
    return (
        at.replace(year=at.year + 1, month=1) if at.month == 12 else at.replace(month=at.month + 1)
    )


def ensure_partitions(
    session: Session, now: datetime, retention_days: int, ahead_months: int = 2
) -> tuple[list[str], list[str]]:
    """On PostgreSQL: a partition per month of `views` and `view_sections` from the raw
    retention's start to `ahead_months` ahead, and the partitions wholly past the
    retention dropped (their rows were raw views; rollups stay). (made, dropped) names.
    Elsewhere nothing. A month whose rows already sit in the default partition stays
    there (a partition cannot be made over them)."""
    if session.bind.dialect.name != "postgresql":
        return [], []
    cutoff = now - timedelta(days=retention_days)
    made, dropped = [], []
    # Partition DDL locks the parent table: give up rather than queue behind a long read.
    session.execute(text("SET LOCAL lock_timeout = '5s'"))
    month = _month(max(cutoff, now - timedelta(days=MAX_PARTITIONED_DAYS)))
    last = _month(now)
    for _ in range(ahead_months):
        last = _next_month(last)
    existing = set(
        session.scalars(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname IN "
                "('views', 'view_sections')"
            )
        )
    )
    while month <= last:
        end = _next_month(month)
        for table in PARTITIONED:
            name = f"{table}_y{month.year:04d}m{month.month:02d}"
            if name in existing:
                continue
            try:
                with session.begin_nested():
                    session.execute(
                        text(
                            f"CREATE TABLE {name} PARTITION OF {table} FOR VALUES FROM "
                            f"('{month.isoformat()}') TO ('{end.isoformat()}')"
                        )
                    )
                made.append(name)
            except DBAPIError:
                pass  # rows of that month in the default partition: they stay there
        month = end
    for name in sorted(existing):
        found = _PARTITION.match(name)
        if found is None:
            continue
        start = datetime(int(found[2]), int(found[3]), 1, tzinfo=UTC)
        if _next_month(start) <= cutoff:
            session.execute(text(f"DROP TABLE {name}"))
            dropped.append(name)
    return made, dropped
