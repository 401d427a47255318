"""Content Automation API (v0) legacy support: legacy track tokens (old catalogue ids
mapped to original assets) and legacy assets (files of the old media cache).

A track token resolves to the asset it was most recently mapped to, and then
behaves exactly like `GET /v0/assets/{id}`. A legacy asset's URL is signed for the
original whose SHA-256 is its `legacyAssetId`, once those bytes were uploaded.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Body, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from mediamill.api.deps import AdminActor, ReadKey, RuntimeDep, SessionDep
from mediamill.api.responses import redirect_to
from mediamill.schemas.api import (
    LEGACY_PAGE_MAX,
    LegacyAsset,
    LegacyAssetCreate,
    LegacyAssetPage,
    LegacyAssetUpdate,
    RenditionQuery,
    asset_id_or_none,
    checked_token,
    filters_from_query,
    parse_composite_key,
    parse_legacy_filters,
    parse_sort,
    whole_number,
)
from mediamill.schemas.audit import AuditAction
from mediamill.schemas.errors import (
    ArgumentNullOrEmptyError,
    ConflictError,
    InvalidRequestError,
    ModelNotFoundError,
    describe_validation,
)
from mediamill.storage import audit, legacy, repo
from mediamill.storage.models import LegacyAssetRow
from mediamill.workers import legacy as legacy_use
from mediamill.workers.assets import deliver
from mediamill.workers.delivery import sign_file_url

router = APIRouter(tags=["legacy"])
# The largest `?start=` (an SQL OFFSET: a 32-bit bound is far past any real catalogue
# and fits every backend's integer).
MAX_START = 2**31 - 1
M = TypeVar("M", bound=BaseModel)


# ---- legacy tracks ---------------------------------------------------------------------------


@router.get("/v0/legacy/tracks/{trackToken}", status_code=302)
def get_track(
    rt: RuntimeDep,
    track_token: Annotated[str, Path(alias="trackToken")],
    query: Annotated[RenditionQuery, Query()],
    _: ReadKey,
) -> JSONResponse:
    """Like `GET /v0/assets/{id}` for the asset the token maps to: 302 to the original
    or the requested rendition; 409 ModelNotReadyError (Retry-After) until it is made."""
    return redirect_to(deliver(rt, legacy_use.asset_id_for_token(rt, track_token), query))


@router.head("/v0/legacy/tracks/{trackToken}")
def head_track(
    rt: RuntimeDep,
    track_token: Annotated[str, Path(alias="trackToken")],
    query: Annotated[RenditionQuery, Query()],
    _: ReadKey,
) -> Response:
    """Whether the catalogue has the track: 200 when the GET would redirect (header
    `x-original-asset-id`), 404 for an unknown token, 409 when it is not ready or
    cannot be served; the same checks as the GET, without a body."""
    asset_id = legacy_use.asset_id_for_token(rt, track_token)
    deliver(rt, asset_id, query)
    return Response(status_code=200, headers={"x-original-asset-id": asset_id})


@router.get("/v0/legacy/tracks/{trackToken}/originalAssets")
def get_track_asset(
    s: SessionDep,
    track_token: Annotated[str, Path(alias="trackToken")],
    _: ReadKey,
) -> JSONResponse:
    """The Asset (metadata) the token maps to."""
    row = legacy.asset_for_token(s, checked_token(track_token, what="trackToken"))
    if row is None:
        raise ModelNotFoundError(f"Original asset not found (legacy track token {track_token})")
    return JSONResponse(repo.asset_from_row(s, row).to_json_dict())


@router.post("/v0/legacy/tracks/{trackToken}/originalAssets", status_code=201)
def map_track_assets(
    rt: RuntimeDep,
    track_token: Annotated[str, Path(alias="trackToken")],
    actor: AdminActor,
    body: Annotated[Any, Body()] = None,
) -> JSONResponse:
    """Map the token to one or more original assets (a JSON array of their ids); 201 with
    every mapping. All or nothing: one unknown id (404) maps none. Mapping again is
    harmless; the most recently mapped asset is the one the token serves."""
    token = checked_token(track_token, what="trackToken")
    if body is None or body == []:
        raise ArgumentNullOrEmptyError("originalAssetIds cannot be null or empty")
    if not isinstance(body, list) or not all(isinstance(v, str) for v in body):
        raise InvalidRequestError("the body must be a JSON array of original asset ids")
    ids = []
    for given in body:
        asset_id = asset_id_or_none(given)
        if asset_id is None:
            raise InvalidRequestError(f"not an original asset id (a SHA-256 in hex): {given!r}")
        if asset_id not in ids:
            ids.append(asset_id)
    mappings = legacy_use.map_track_token(rt, token, ids, actor)
    return JSONResponse([m.to_json_dict() for m in mappings], status_code=201)


# ---- legacy assets ---------------------------------------------------------------------------


def _legacy_json(row: LegacyAssetRow) -> dict[str, Any]:
    return LegacyAsset(
        legacy_track_token=row.legacy_track_token,
        legacy_asset_id=row.legacy_asset_id,
        original_file_name=row.original_filename,
    ).to_json_dict()


def _legacy_row(session: Session, token: str) -> LegacyAssetRow:
    row = legacy.get_legacy_asset(session, token)
    if row is None:
        raise ModelNotFoundError(f"legacy asset {token} was not found")
    return row


def _validated(model: type[M], body: Any) -> M:
    """`body` (a JSON object) as `model`, or a 400 naming each problem."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise InvalidRequestError("the body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequestError(describe_validation(exc.errors())) from exc


@router.get("/v0/legacy/assets", response_model=LegacyAssetPage)
def list_legacy_assets(
    s: SessionDep,
    request: Request,
    _: ReadKey,
    filters: str | None = None,
    count: str | None = None,
    start: str | None = None,
    sort: str | None = None,
) -> JSONResponse:
    """A page of legacy assets: `filters` as mongoose-middleware's object (JSON, or
    `filters[mandatory][exact][legacyTrackToken]=...`), `count` (default and at most
    100), `start` (default 0), `sort` (`-field` descending). `total` counts every match."""
    raw = filters_from_query(filters, list(request.query_params.multi_items()))
    parsed = parse_legacy_filters(raw)
    order = parse_sort(sort)
    page_size = whole_number(count, "count", LEGACY_PAGE_MAX, LEGACY_PAGE_MAX, cap=True)
    offset = whole_number(start, "start", 0, MAX_START)
    rows, total = legacy.list_legacy_assets(s, parsed, order, offset, page_size)
    results = [_legacy_json(r) for r in rows]
    page = LegacyAssetPage(
        options={
            "count": page_size,
            "filters": parsed.echo,
            "sort": {k.field.value: -1 if k.descending else 1 for k in order},
            "start": offset,
        },
        results=results,
        total=total,
    )
    return JSONResponse(page.model_dump(mode="json"))


@router.get("/v0/legacy/assets/{compositeKey}", status_code=302)
def get_legacy_asset(
    rt: RuntimeDep,
    composite_key: Annotated[str, Path(alias="compositeKey")],
    _: ReadKey,
) -> JSONResponse:
    """302 to a signed URL of the legacy asset's bytes: the original whose SHA-256 is its
    `legacyAssetId`. 409 ModelInvalidError while that is unknown or not uploaded."""
    token = parse_composite_key(composite_key)
    key = legacy_use.legacy_original_key(rt, token)
    return redirect_to(sign_file_url(rt, key, token))


@router.head("/v0/legacy/assets/{compositeKey}")
def head_legacy_asset(
    s: SessionDep,
    composite_key: Annotated[str, Path(alias="compositeKey")],
    _: ReadKey,
) -> Response:
    """200 with `x-legacy-asset-id` (when known) if the legacy asset exists, else 404."""
    token = parse_composite_key(composite_key)
    row = _legacy_row(s, token)
    headers = {"x-legacy-asset-id": row.legacy_asset_id} if row.legacy_asset_id else {}
    return Response(status_code=200, headers=headers)


@router.put("/v0/legacy/assets/{compositeKey}", status_code=202)
def update_legacy_asset(
    rt: RuntimeDep,
    composite_key: Annotated[str, Path(alias="compositeKey")],
    actor: AdminActor,
    body: Annotated[Any, Body()] = None,
) -> JSONResponse:
    """Change `legacyAssetId` and/or `originalFileName` (fields left out stay, null
    clears); 202 with the legacy asset. The token is its key and cannot change."""
    token = parse_composite_key(composite_key)
    update = _validated(LegacyAssetUpdate, body)
    changes = update.model_dump(exclude_unset=True)
    if "legacy_track_token" in changes:
        given = checked_token(changes.pop("legacy_track_token"))
        if given != token:
            raise InvalidRequestError(
                f"legacyTrackToken is the key of this legacy asset ({token}); it cannot change"
            )
    if "original_file_name" in changes:
        changes["original_filename"] = changes.pop("original_file_name")
    with rt.db.session() as s:
        row = _legacy_row(s, token)
        legacy.update_legacy_asset(row, changes)
        audit.record(
            s, actor, AuditAction.LEGACY_ASSET_UPDATED, "legacyAsset", token,
            {"changed": sorted(update.model_dump(exclude_unset=True, by_alias=True))},
        )
        answer = _legacy_json(row)
    return JSONResponse(answer, status_code=202)


@router.post("/v0/legacy/assets", status_code=201)
def create_legacy_asset(
    rt: RuntimeDep,
    actor: AdminActor,
    body: Annotated[Any, Body()] = None,
) -> JSONResponse:
    """Create a legacy asset; 201 with it. No `legacyTrackToken`: 409
    ArgumentNullOrEmptyError (the reference's answer); an existing one: 409 ConflictError."""
    create = _validated(LegacyAssetCreate, body)
    token = checked_token(create.legacy_track_token)
    with rt.db.session() as s:
        if not legacy.insert_legacy_asset(
            s, token, create.legacy_asset_id, create.original_file_name
        ):
            raise ConflictError(
                f"legacy asset {token} already exists; PUT /v0/legacy/assets/trackToken:{token} "
                "changes it"
            )
        audit.record(s, actor, AuditAction.LEGACY_ASSET_CREATED, "legacyAsset", token)
        answer = _legacy_json(_legacy_row(s, token))
    return JSONResponse(answer, status_code=201)
