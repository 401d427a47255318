"""Operators' view of assets: one page of them, filtered and sorted, and the derived
rows a deletion removes. Deleted assets are never listed."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from mediamill.schemas.errors import InvalidRequestError
from mediamill.schemas.media import Asset, AssetStatus
from mediamill.storage import repo
from mediamill.storage.models import AssetRow, LegacyTrackTokenRow, PackageRow, RenditionRow

MAX_PAGE_SIZE = 200


class AssetKind(StrEnum):
    """`type=` of a listing: the first part of the asset's MIME type."""

    AUDIO = "audio"
    VIDEO = "video"


class AssetSort(StrEnum):
    NEWEST = "-created"
    OLDEST = "created"


def list_assets_page(
    s: Session,
    *,
    status: AssetStatus | None = None,
    kind: AssetKind | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    legacy_token: str | None = None,
    sort: AssetSort = AssetSort.NEWEST,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Asset], str | None]:
    """A page of live assets, keyset-paginated on (created, id) in `sort` order; the
    cursor is the last asset's id (an unknown one is a 400). Returns (assets, next
    cursor or None on the last page)."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidRequestError(f"limit must be 1 to {MAX_PAGE_SIZE}")
    stmt = select(AssetRow).where(AssetRow.deleted.is_(False))
    if status is not None:
        stmt = stmt.where(AssetRow.status == status.value)
    if kind is not None:
        stmt = stmt.where(AssetRow.asset_type.like(f"{kind.value}/%"))
    if created_after is not None:
        stmt = stmt.where(AssetRow.created_at >= _utc(created_after))
    if created_before is not None:
        stmt = stmt.where(AssetRow.created_at < _utc(created_before))
    if legacy_token is not None:
        linked = select(LegacyTrackTokenRow.asset_id).where(
            LegacyTrackTokenRow.token == legacy_token
        )
        stmt = stmt.where(AssetRow.id.in_(linked))
    anchor = s.get(AssetRow, cursor) if cursor else None
    if cursor and anchor is None:
        raise InvalidRequestError("cursor is not one this listing gave")
    newest = sort is AssetSort.NEWEST
    page, next_cursor = repo.keyset_page(s, stmt, AssetRow, anchor, limit, newest)
    return [repo.asset_from_row(s, r) for r in page], next_cursor


def _utc(moment: datetime) -> datetime:
    """A filter's moment in UTC (one given without a zone is taken as UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def drop_derived_rows(s: Session, asset_id: str) -> None:
    """Remove the asset's rendition and package rows: what a deletion takes with the
    files (the asset row stays, marked deleted, so its id keeps naming it)."""
    s.execute(delete(RenditionRow).where(RenditionRow.asset_id == asset_id))
    s.execute(delete(PackageRow).where(PackageRow.asset_id == asset_id))
