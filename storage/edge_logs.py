"""Edge log rows: segment requests of playback sessions (one per log line, keyed by the
line's SHA-256, so overlapping or repeated logs count each line once), the log objects
ingested from the store, and what the edge delivered to each session."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mediamill.schemas.base import utcnow
from mediamill.schemas.edge_logs import SessionDelivery
from mediamill.storage.db import dialect_insert, inserted_count
from mediamill.storage.models import (
    AssetRow,
    EdgeLogFileRow,
    EdgeSegmentRequestRow,
    PackageRow,
    PlaybackSessionRow,
)
from mediamill.storage.views import mark_sessions

_CHUNK = 500


def known_sessions(session: Session, session_ids: Iterable[str]) -> set[str]:
    """Which of the ids are playback sessions."""
    ids = sorted(set(session_ids))
    found: set[str] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        found |= set(
            session.scalars(select(PlaybackSessionRow.id).where(PlaybackSessionRow.id.in_(chunk)))
        )
    return found


@dataclass(frozen=True)
class PackageShape:
    """What turns a segment number into a span and a representation into a rendition."""

    segment_s: int
    duration_ms: int | None
    spec_ids: list[str]  # in ladder order
    has_video: bool


def package_shape(session: Session, asset_id: str, package_id: str) -> PackageShape | None:
    row = session.scalar(
        select(PackageRow).where(
            PackageRow.asset_id == asset_id, PackageRow.package_id == package_id
        )
    )
    if row is None:
        return None
    asset = session.get(AssetRow, asset_id)
    return PackageShape(
        segment_s=row.segment_s,
        duration_ms=row.duration_ms,
        spec_ids=list((row.renditions or {}).get("specIds") or []),
        has_video=asset is not None and asset.video is not None,
    )


def add_segment_requests(session: Session, rows: Sequence[dict]) -> int:
    """Insert the requests not stored before (one executemany); how many were new."""
    table = EdgeSegmentRequestRow.__table__
    stmt = (
        dialect_insert(session)(table)
        .on_conflict_do_nothing(index_elements=["line_id"])
        .returning(table.c.line_id)
    )
    mark_sessions(session, (r["session_id"] for r in rows), utcnow())
    return inserted_count(session, stmt, rows)


def ingested_sizes(session: Session, keys: Sequence[str]) -> dict[str, int]:
    """The size each of these log objects had when last ingested (absent: never)."""
    found: dict[str, int] = {}
    for start in range(0, len(keys), _CHUNK):
        chunk = list(keys[start : start + _CHUNK])
        rows = session.execute(
            select(EdgeLogFileRow.key, EdgeLogFileRow.size_bytes).where(
                EdgeLogFileRow.key.in_(chunk)
            )
        )
        found.update({key: size for key, size in rows})
    return found


def log_file_offset(session: Session, key: str, head: bytes) -> int:
    """How far the log object `key` was read (whole lines): 0 if never, or if what is
    stored under the key now (`head`: its first bytes) begins otherwise than what was
    read (a new log under the old name)."""
    row = session.get(EdgeLogFileRow, key)
    if row is None or hashlib.sha256(head[: row.head_bytes]).hexdigest() != row.head_sha256:
        return 0
    return row.offset_bytes


def record_log_file(
    session: Session,
    key: str,
    *,
    size_bytes: int,
    offset_bytes: int,
    head: bytes,
    lines: int,
    new_requests: int,
    at: datetime,
) -> None:
    """Remember how far `key` was read, and how it begins (up to `offset_bytes` of
    `head`); lines and new requests add up over the reads."""
    known = head[:offset_bytes]
    head_sha256, head_bytes = hashlib.sha256(known).hexdigest(), len(known)
    row = session.get(EdgeLogFileRow, key)
    if row is None:
        session.add(
            EdgeLogFileRow(
                key=key,
                size_bytes=size_bytes,
                offset_bytes=offset_bytes,
                head_sha256=head_sha256,
                head_bytes=head_bytes,
                lines=lines,
                new_requests=new_requests,
                ingested_at=at,
            )
        )
        return
    row.size_bytes, row.offset_bytes, row.ingested_at = size_bytes, offset_bytes, at
    row.head_sha256, row.head_bytes = head_sha256, head_bytes
    row.lines += lines
    row.new_requests += new_requests


def deliveries(session: Session, session_ids: Iterable[str] | None = None) -> list[SessionDelivery]:
    """Per session and rendition: segments, bytes, and the span of the asset delivered."""
    r = EdgeSegmentRequestRow
    stmt = (
        select(
            r.session_id,
            r.rendition,
            func.count(),
            func.sum(r.bytes),
            func.min(r.from_s),
            func.max(r.to_s),
        )
        .group_by(r.session_id, r.rendition)
        .order_by(r.session_id, r.rendition)
    )
    if session_ids is not None:
        stmt = stmt.where(r.session_id.in_(list(session_ids)))
    return [
        SessionDelivery(
            session_id=sid,
            rendition=rendition,
            segments=int(count),
            bytes=int(total or 0),
            watched_from_s=float(first or 0.0),
            watched_to_s=float(last or 0.0),
        )
        for sid, rendition, count, total, first, last in session.execute(stmt)
    ]
