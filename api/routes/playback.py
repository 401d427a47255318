"""Playback routes: tracking sessions (Media Jay's shapes), playback sessions with
heartbeats and player events (EncoraStream's), and the beacon script for players.

Each route parses, checks the key (a publishable `playback` key may use these and
nothing else, rate-limited per address), calls one use case (workers/playback.py)
and answers. Heartbeats and events are `async`: they wait for the buffer only.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Annotated, TypeVar

from fastapi import APIRouter, Body, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from mediamill.api.auth import Principal, authenticate, authenticate_query_key, limit_player
from mediamill.api.deps import PlayerKey, ReadKey, RuntimeDep
from mediamill.api.errors import error_response, status_for
from mediamill.api.state import app_runtime
from mediamill.schemas.base import CamelModel, RequestModel
from mediamill.schemas.errors import (
    InvalidRequestError,
    MediaMillError,
    TrackingSessionExpiredError,
    TrackingSessionInvalidError,
    describe_validation,
)
from mediamill.schemas.playback import (
    MAX_DEVICE_ID_CHARS,
    PLAYOUT_ID_PATTERN,
    USER_ID_PATTERN,
    BeaconRequest,
    ClientFacts,
    EventBatch,
    EventsAccepted,
    HeartbeatRequest,
    HeartbeatResponse,
    PlaybackSession,
    PlaybackSessionCreated,
    PlaybackStatus,
    TrackingSession,
    TrackingSessionRequest,
)
from mediamill.storage.playback import MAX_PAGE_SIZE
from mediamill.workers import playback
from mediamill.workers.runtime import Runtime

router = APIRouter(tags=["playback"])
Body_ = TypeVar("Body_", bound=RequestModel)

TRACKING_HEADER = "X-MediaMill-Tracking"
_SESSION_ID = r"^[A-Za-z0-9-]{1,64}$"
_DEVICE_ID = rf"^[\x20-\x7e]{{1,{MAX_DEVICE_ID_CHARS}}}$"
_SHA256 = r"^[0-9a-f]{64}$"
COOKIE_CLEARED = "expires=Thu, 01 Jan 1970 00:00:00 GMT"
BEACON_MAX_AGE_S = 3600

PlayoutId = Annotated[str, Path(alias="playoutId", pattern=PLAYOUT_ID_PATTERN)]
SessionId = Annotated[str, Path(alias="sessionId", pattern=_SESSION_ID)]


class TrackingSessionBody(CamelModel):
    """Media Jay's ResultResponse: the session under `data`."""

    data: TrackingSession


class PlaybackSessionPage(CamelModel):
    data: list[PlaybackSession]
    next_cursor: str | None = None


def _has_key_headers(request: Request) -> bool:
    headers = request.headers
    return any(h in headers for h in ("x-api-key", "x-client-id", "x-authentication-token"))


def _owner(principal: Principal) -> str | None:
    """The client id a publishable key may act for: its own sessions only (read and
    admin keys act for any)."""
    return principal.client_id if principal.scope == "playback" else None


def _tracking_token(rt: Runtime, request: Request) -> str | None:
    """The tracking token from the cookie first, then the header (the API reference's
    order)."""
    return request.cookies.get(rt.settings.tracking_cookie) or request.headers.get(TRACKING_HEADER)


def _tracking_for_playback(rt: Runtime, request: Request) -> TrackingSession | None:
    """The tracking session a playback session belongs to: the cookie's, else the
    header's, else none. A cookie that no longer reads (expired, ended, a rotated
    secret) is passed over, since page code cannot remove an HttpOnly cookie and
    tracking is optional; a header is sent on purpose, so its faults are the caller's."""
    cookie = request.cookies.get(rt.settings.tracking_cookie)
    header = request.headers.get(TRACKING_HEADER)
    if cookie:
        try:
            return playback.read_tracking_session(rt, cookie)
        except (TrackingSessionInvalidError, TrackingSessionExpiredError):
            if not header:
                return None
    return playback.read_tracking_session(rt, header) if header else None


def _cookie(rt: Runtime, value: str, lifetime: str) -> str:
    return (
        f"{rt.settings.tracking_cookie}={value}; HttpOnly; Secure; SameSite=Lax; Path=/; {lifetime}"
    )


def _tracking_response(
    session: TrackingSession, status_code: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"data": session.to_json_dict()}
    return JSONResponse(
        body, status_code=status_code, headers={"Cache-Control": "no-store", **(headers or {})}
    )


@router.post(
    "/v0/playouts/{playoutId}/tracking/session",
    status_code=201,
    response_model=TrackingSessionBody,
)
def create_tracking_session(
    rt: RuntimeDep,
    playout_id: PlayoutId,
    _: PlayerKey,
    user_id: Annotated[str | None, Query(alias="userId", pattern=USER_ID_PATTERN)] = None,
    body: Annotated[TrackingSessionRequest | None, Body()] = None,
) -> JSONResponse:
    """A new tracking session for the playout (a site, an app, a station), in the body,
    a `Set-Cookie` and the X-MediaMill-Tracking header. `userId` (query, or the body's)
    only with the user's consent: without it nothing personal is stored."""
    given = user_id or (body.user_id if body is not None else None)
    session, token = playback.create_tracking_session(rt, playout_id, given)
    headers = {
        "Set-Cookie": _cookie(rt, token, f"Max-Age={rt.settings.tracking_session_ttl_s}"),
        TRACKING_HEADER: token,
    }
    return _tracking_response(session, 201, headers)


@router.get("/v0/playouts/{playoutId}/tracking/session", response_model=TrackingSessionBody)
def get_tracking_session(
    rt: RuntimeDep, request: Request, playout_id: PlayoutId, _: PlayerKey
) -> JSONResponse:
    """The tracking session the cookie (first) or the header names; a named 400 when
    there is none, or it is forged, edited, expired or ended."""
    session = playback.read_tracking_session(rt, _tracking_token(rt, request), playout_id)
    return _tracking_response(session)


@router.delete("/v0/playouts/{playoutId}/tracking/session")
def delete_tracking_session(
    rt: RuntimeDep, request: Request, playout_id: PlayoutId, _: PlayerKey
) -> JSONResponse:
    """End the tracking session and clear its cookie (clients sending the header should
    stop sending it). The cookie is cleared even when the session no longer reads
    (expired, ended, forged): page code cannot clear an HttpOnly cookie itself."""
    cleared = {"Set-Cookie": _cookie(rt, "", COOKIE_CLEARED), "Cache-Control": "no-store"}
    try:
        playback.end_tracking_session(rt, _tracking_token(rt, request), playout_id)
    except MediaMillError as exc:
        return error_response(request, status_for(exc), exc.name, exc.message, cleared)
    return JSONResponse({"data": {"message": "Tracking session deleted"}}, headers=cleared)


@router.post(
    "/v0/assets/{assetId}/playback-sessions",
    status_code=201,
    response_model=PlaybackSessionCreated,
)
def create_playback_session(
    rt: RuntimeDep,
    request: Request,
    asset_id: Annotated[str, Path(alias="assetId")],
    principal: PlayerKey,
    device_id: Annotated[
        str, Header(alias="X-Device-Id", max_length=MAX_DEVICE_ID_CHARS, pattern=_DEVICE_ID)
    ],
) -> JSONResponse:
    """A playback session: HLS and DASH URLs signed for it, and how often to send a
    heartbeat. 404 for an unknown asset, 409 ModelNotReadyError while it has no
    package, 409 ConcurrentStreamsExceededError past the limit."""
    tracking = _tracking_for_playback(rt, request)
    client = ClientFacts(
        address=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )
    created = playback.create_playback_session(
        rt, asset_id, device_id, tracking, principal.client_id, client
    )
    return JSONResponse(
        created.to_json_dict(), status_code=201, headers={"Cache-Control": "no-store"}
    )


def _json_body(model: type[Body_], raw: bytes, empty: bytes = b"null") -> Body_:
    """`raw` (`empty` when there is none) validated as `model` straight from its JSON by
    pydantic's parser, which also refuses nesting too deep; a named 400 otherwise."""
    try:
        return model.model_validate_json(raw or empty)
    except ValidationError as exc:
        raise InvalidRequestError(describe_validation(exc.errors()) or "invalid body") from None


@router.post(
    "/v0/playback-sessions/{sessionId}/heartbeat",
    response_model=HeartbeatResponse,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": HeartbeatRequest.model_json_schema(by_alias=True)}
            },
        }
    },
)
async def heartbeat(request: Request, session_id: SessionId) -> Response:
    """Where the player is: answered once buffered. `refreshedUrls` carries fresh URLs
    once `tokenRefreshBefore` has passed; `sessionExpiresAt` is when the session ends
    without another heartbeat.

    The hot path: the key, the rate limit and the body are handled here rather than by
    FastAPI's dependency injection, which cost a third of a heartbeat's CPU (measured
    by scripts/bench_playback.py)."""
    principal = await authenticate(request)
    limit_player(request, principal)
    beat = _json_body(HeartbeatRequest, await request.body())
    answer = await playback.heartbeat(app_runtime(request), session_id, beat, _owner(principal))
    return Response(
        answer.model_dump_json(by_alias=True),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


@router.post("/v0/playback-sessions/{sessionId}/events", response_model=EventsAccepted)
async def events(
    rt: RuntimeDep, session_id: SessionId, batch: EventBatch, principal: PlayerKey
) -> JSONResponse:
    """A batch of 1 to 100 player events, all taken or (400, naming the first bad one)
    none; each is stored once by its `seq`, however often the batch is sent."""
    answer = await playback.record_events(rt, session_id, batch, _owner(principal))
    return JSONResponse(answer.to_json_dict())


def _beacon_body_schema() -> dict:
    """The beacon's body as OpenAPI describes it (read by hand: sendBeacon's bodies are
    text/plain, which FastAPI does not parse); its events are the events route's."""
    schema = BeaconRequest.model_json_schema(
        by_alias=True, ref_template="#/components/schemas/{model}"
    )
    schema.pop("$defs", None)
    return {
        "required": False,
        "content": {"application/json": {"schema": schema}, "text/plain": {"schema": schema}},
    }


@router.post(
    "/v0/playback-sessions/{sessionId}/beacon",
    status_code=204,
    openapi_extra={"requestBody": _beacon_body_schema()},
)
async def beacon(
    rt: RuntimeDep,
    request: Request,
    session_id: SessionId,
    api_key: Annotated[str | None, Query(alias="apiKey", max_length=200)] = None,
) -> Response:
    """What `navigator.sendBeacon` sends as a page goes away (no headers possible: the
    publishable key rides in `apiKey`, the JSON body in any content type): the last
    events and position, and `end` to end the session."""
    if api_key is None and _has_key_headers(request):  # a client that can send headers
        principal = await authenticate(request)
    else:
        principal = await authenticate_query_key(request, api_key)
    limit_player(request, principal)
    sent = _json_body(BeaconRequest, await request.body(), empty=b"{}")
    await playback.beacon(rt, session_id, sent, _owner(principal))
    return Response(status_code=204)


@router.get("/v0/playback-sessions/{sessionId}", response_model=PlaybackSession)
def get_playback_session(
    rt: RuntimeDep, session_id: SessionId, principal: PlayerKey
) -> JSONResponse:
    """One session: its status, and its position as of the last flush."""
    found = playback.get_playback_session(rt, session_id, _owner(principal))
    return JSONResponse(found.to_json_dict())


@router.delete("/v0/playback-sessions/{sessionId}", status_code=204)
async def end_playback_session(
    rt: RuntimeDep, session_id: SessionId, principal: PlayerKey
) -> Response:
    """End the session (and free its stream); ending an ended one is not an error."""
    await playback.end_playback_session(rt, session_id, _owner(principal))
    return Response(status_code=204)


@router.get("/v0/playback-sessions", response_model=PlaybackSessionPage)
def list_playback_sessions(
    rt: RuntimeDep,
    _: ReadKey,
    status: PlaybackStatus | None = None,
    asset_id: Annotated[str | None, Query(alias="assetId", pattern=_SHA256)] = None,
    device_id: Annotated[
        str | None, Query(alias="deviceId", max_length=MAX_DEVICE_ID_CHARS, pattern=_DEVICE_ID)
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    cursor: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> JSONResponse:
    """Playback sessions newest first (a read key); `status=active`: those heard from
    within MEDIAMILL_PLAYBACK_SESSION_TTL_S. `nextCursor` fetches the next page."""
    sessions, next_cursor = playback.list_playback_sessions(
        rt, status=status, asset_id=asset_id, device_id=device_id, limit=limit, cursor=cursor
    )
    return JSONResponse({"data": [x.to_json_dict() for x in sessions], "nextCursor": next_cursor})


def _beacon_script() -> bytes:
    return resources.files("mediamill.api").joinpath("player/beacon.js").read_bytes()


@router.get("/v0/player/beacon.js", include_in_schema=False)
def beacon_script(request: Request) -> Response:
    """The beacon script for players, without a key (a `<script>` tag sends none)."""
    script = _beacon_script()
    etag = f'"{hashlib.sha256(script).hexdigest()[:32]}"'
    headers = {
        "ETag": etag,
        "Cache-Control": f"public, max-age={BEACON_MAX_AGE_S}",
        "Access-Control-Allow-Origin": "*",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(script, media_type="text/javascript; charset=utf-8", headers=headers)
