"""Legacy track tokens and legacy assets: the Content Automation API's bridge to the
catalogue that predates content addressing.

A legacy track token names a track of the old catalogue. It maps to one or more
original assets (`legacy_track_tokens`, many-to-many); the newest mapping is the
one served. A legacy asset is a file of the old media cache, keyed by its token,
with the SHA-256 of its bytes (`legacyAssetId`) once known.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, false, func, or_, select, true
from sqlalchemy.orm import Session

from mediamill.schemas.api import Condition, LegacyField, LegacyFilters, MatchOp, SortKey
from mediamill.schemas.base import utcnow
from mediamill.storage.db import dialect_insert
from mediamill.storage.models import AssetRow, LegacyAssetRow, LegacyTrackTokenRow

# ---- track tokens -------------------------------------------------------------------------


def link_track_token(session: Session, token: str, asset_id: str) -> bool:
    """Map `token` to `asset_id` unless it already is; True when this call linked it.
    Safe under concurrency (ON CONFLICT DO NOTHING on the pair)."""
    stmt = (
        dialect_insert(session)(LegacyTrackTokenRow)
        .values(token=token, asset_id=asset_id, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["token", "asset_id"])
        .returning(LegacyTrackTokenRow.token)
    )
    return session.execute(stmt).scalar_one_or_none() is not None


def asset_for_token(session: Session, token: str) -> AssetRow | None:
    """The asset a token serves: of its mapped assets that are not deleted, the most
    recently mapped (a re-uploaded master replaces the old one)."""
    stmt = (
        select(AssetRow)
        .join(LegacyTrackTokenRow, LegacyTrackTokenRow.asset_id == AssetRow.id)
        .where(LegacyTrackTokenRow.token == token, AssetRow.deleted.is_(False))
        .order_by(LegacyTrackTokenRow.created_at.desc(), AssetRow.created_at.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


# ---- legacy assets ------------------------------------------------------------------------


def get_legacy_asset(session: Session, token: str) -> LegacyAssetRow | None:
    return session.get(LegacyAssetRow, token)


def insert_legacy_asset(
    session: Session, token: str, legacy_asset_id: str | None, original_filename: str | None
) -> bool:
    """Create the legacy asset of `token` unless one exists; True when this call made it."""
    now = utcnow()
    stmt = (
        dialect_insert(session)(LegacyAssetRow)
        .values(
            legacy_track_token=token,
            legacy_asset_id=legacy_asset_id,
            original_filename=original_filename,
            created_at=now,
            modified_at=now,
        )
        .on_conflict_do_nothing(index_elements=["legacy_track_token"])
        .returning(LegacyAssetRow.legacy_track_token)
    )
    return session.execute(stmt).scalar_one_or_none() is not None


def update_legacy_asset(row: LegacyAssetRow, changes: dict[str, Any]) -> None:
    """Apply `{"legacy_asset_id": ..., "original_filename": ...}` (either may be absent)."""
    for name in ("legacy_asset_id", "original_filename"):
        if name in changes:
            setattr(row, name, changes[name])
    row.modified_at = utcnow()


_COLUMNS = {
    LegacyField.LEGACY_TRACK_TOKEN: LegacyAssetRow.legacy_track_token,
    LegacyField.LEGACY_ASSET_ID: LegacyAssetRow.legacy_asset_id,
    LegacyField.ORIGINAL_FILE_NAME: LegacyAssetRow.original_filename,
}


def _like_escaped(text: str) -> str:
    return text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _match(field: LegacyField, op: MatchOp, value: str) -> ColumnElement[bool]:
    """One case-insensitive string match (mongoose-middleware matches ignore case)."""
    column = func.lower(_COLUMNS[field])
    if op is MatchOp.EXACT:
        return column == value.lower()
    pattern = {
        MatchOp.CONTAINS: "%{}%",
        MatchOp.STARTS_WITH: "{}%",
        MatchOp.ENDS_WITH: "%{}",
    }[op].format(_like_escaped(value))
    return column.like(pattern, escape="\\")


def _condition(cond: Condition) -> ColumnElement[bool]:
    return or_(*(_match(cond.field, cond.op, v) for v in cond.values))


def _where(filters: LegacyFilters) -> list[ColumnElement[bool]]:
    clauses = [_condition(c) for c in filters.mandatory]
    if filters.optional:
        clauses.append(or_(*(_condition(c) for c in filters.optional)))
    if filters.keyword is not None:
        terms = filters.keyword.terms
        if not terms:
            clauses.append(false())
        else:
            clauses.append(
                or_(
                    *(_match(f, MatchOp.CONTAINS, t) for f in filters.keyword.fields for t in terms)
                )
            )
    return clauses


def list_legacy_assets(
    session: Session, filters: LegacyFilters, sort: list[SortKey], start: int, count: int
) -> tuple[list[LegacyAssetRow], int]:
    """One page of legacy assets matching `filters` and the total that match. Without
    a sort they come in creation order; the token breaks ties, so pages are stable."""
    where = and_(true(), *_where(filters))
    total = session.scalar(select(func.count()).select_from(LegacyAssetRow).where(where)) or 0
    order = [_COLUMNS[k.field].desc() if k.descending else _COLUMNS[k.field].asc() for k in sort]
    if not sort:
        order.append(LegacyAssetRow.created_at.asc())
    order.append(LegacyAssetRow.legacy_track_token.asc())
    rows = session.scalars(
        select(LegacyAssetRow).where(where).order_by(*order).offset(start).limit(count)
    ).all()
    return list(rows), total
