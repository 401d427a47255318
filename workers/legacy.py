"""Legacy catalogue use cases: track tokens (old catalogue ids mapped to original
assets) and legacy assets (files of the old media cache, served as the original
whose SHA-256 is their `legacyAssetId`)."""

from __future__ import annotations

from mediamill.schemas.api import TrackMapping, checked_token
from mediamill.schemas.audit import AuditAction, AuditActor
from mediamill.schemas.errors import ModelInvalidError, ModelNotFoundError
from mediamill.storage import audit, legacy
from mediamill.storage.models import AssetRow
from mediamill.workers.runtime import Runtime


def asset_id_for_token(rt: Runtime, token: str) -> str:
    """The asset a track token was most recently mapped to (ModelNotFoundError)."""
    with rt.db.session() as s:
        row = legacy.asset_for_token(s, checked_token(token, what="trackToken"))
        if row is None:
            raise ModelNotFoundError(f"Original asset not found (legacy track token {token})")
        return row.id


def map_track_token(
    rt: Runtime, token: str, asset_ids: list[str], actor: AuditActor | None = None
) -> list[TrackMapping]:
    """Map `token` to each of `asset_ids` (distinct, checked ids), all or nothing: one
    unknown or deleted asset (ModelNotFoundError) maps none. Audit-logged by `actor`."""
    with rt.db.session() as s:
        for asset_id in asset_ids:
            row = s.get(AssetRow, asset_id)
            if row is None or row.deleted:
                raise ModelNotFoundError(f"Original asset not found ({asset_id})")
            legacy.link_track_token(s, token, asset_id)
        if actor is not None:
            audit.record(
                s, actor, AuditAction.LEGACY_TRACK_MAPPED, "legacyTrack", token,
                {"originalAssetIds": asset_ids},
            )
    return [TrackMapping(original_asset_id=i, legacy_track_token=token) for i in asset_ids]


def legacy_original_key(rt: Runtime, token: str) -> str:
    """The store key of the bytes a legacy asset serves: the original whose SHA-256
    is its `legacyAssetId`. ModelNotFoundError for an unknown legacy asset,
    ModelInvalidError while its original is unknown or not uploaded."""
    with rt.db.session() as s:
        row = legacy.get_legacy_asset(s, token)
        if row is None:
            raise ModelNotFoundError(f"legacy asset {token} was not found")
        asset = s.get(AssetRow, row.legacy_asset_id) if row.legacy_asset_id else None
        if asset is None or asset.deleted:
            why = (
                "its legacyAssetId is not set"
                if row.legacy_asset_id is None
                else f"no original with its legacyAssetId {row.legacy_asset_id} was uploaded"
            )
            raise ModelInvalidError(f"unable to sign a url for asset {token}: {why}")
        return asset.storage_key
