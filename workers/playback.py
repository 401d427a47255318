"""Playback use cases: tracking sessions, playback sessions, heartbeats and events.

Creating and ending sessions writes the database (a few times per viewing). The hot
path, heartbeats and events, reads and writes the buffer only
(workers/playback_buffer.py): the session's state is there while it is live, and a
miss (the first heartbeat, or a buffer that lost it) reads the database once and puts
it back.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from mediamill import __version__
from mediamill.pipeline.audience import country_of, device_info_of
from mediamill.pipeline.tracking_token import make_token, read_token
from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import (
    ConcurrentStreamsExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    PlaybackSessionEndedError,
    TrackingSessionInvalidError,
)
from mediamill.schemas.playback import (
    BeaconRequest,
    ClientFacts,
    EndReason,
    EventBatch,
    EventBatchRecord,
    EventRecord,
    EventsAccepted,
    HeartbeatRecord,
    HeartbeatRequest,
    HeartbeatResponse,
    PlaybackSession,
    PlaybackSessionCreated,
    PlaybackStatus,
    PlaybackUrls,
    Seek,
    SessionState,
    TrackingSession,
)
from mediamill.storage import playback as playback_rows
from mediamill.storage.models import PlaybackSessionRow, TrackingSessionRow
from mediamill.workers.assets import ready_package
from mediamill.workers.delivery import PackageUrls, sign_session_urls
from mediamill.workers.playback_flush import schedule_flush
from mediamill.workers.runtime import Runtime

log = logging.getLogger(__name__)

TRACKING_SOURCE = f"mediamill.api.playout.{__version__}"
# A player's position may run a little past the duration the analysis measured (the
# last segment's rounding, a clock); further than this is not a position in the asset.
POSITION_SLACK_S = 2.0
_HEARTBEAT_IDS = uuid.UUID("5b1f6f0e-6d1c-4f43-9a55-2f7f3c1d8e01")


def _epoch(when: datetime) -> int:
    return int(when.timestamp())


def _at(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


# ---- tracking sessions ----------------------------------------------------------------------


def create_tracking_session(
    rt: Runtime, playout_id: str, user_id: str | None
) -> tuple[TrackingSession, str]:
    """A new tracking session for `playout_id` and its signed token. `user_id` is kept
    only when given: without it the session holds no personal data."""
    now = utcnow()
    session = TrackingSession(
        session_id=str(uuid.uuid4()),
        start_time=now,
        source=TRACKING_SOURCE,
        playout_id=playout_id,
        user_id=user_id,
    )
    expires_at = now + timedelta(seconds=rt.settings.tracking_session_ttl_s)
    with rt.db.session() as s:
        playback_rows.add_tracking_session(
            s,
            TrackingSessionRow(
                id=session.session_id,
                playout_id=playout_id,
                source=TRACKING_SOURCE,
                user_id=user_id,
                created_at=now,
                expires_at=expires_at,
            ),
        )
    token = make_token(session, _epoch(expires_at), rt.settings.resolved_signing_secret())
    return session, token


def read_tracking_session(
    rt: Runtime, token: str | None, playout_id: str | None = None
) -> TrackingSession:
    """The live tracking session `token` names (of `playout_id`, when given), or a
    named 400: missing, forged or edited, expired, ended, or of another playout."""
    if not token:
        raise TrackingSessionInvalidError(
            "no tracking session: send its cookie or the X-MediaMill-Tracking header"
        )
    claims = read_token(token, rt.settings.resolved_signing_secret())
    session = claims.session
    if playout_id is not None and session.playout_id != playout_id:
        raise TrackingSessionInvalidError(
            f"this tracking session belongs to another playout, not {playout_id!r}"
        )
    with rt.db.session() as s:
        row = playback_rows.tracking_session_row(s, session.session_id)
        ended = row is None or row.ended_at is not None
    if ended:
        raise TrackingSessionInvalidError("this tracking session has ended")
    return session


def end_tracking_session(rt: Runtime, token: str | None, playout_id: str) -> TrackingSession:
    """End the tracking session `token` names (a named 400 as `read_tracking_session`)."""
    session = read_tracking_session(rt, token, playout_id)
    with rt.db.session() as s:
        playback_rows.end_tracking_session(s, session.session_id, utcnow())
    return session


# ---- playback sessions ----------------------------------------------------------------------


def _urls(signed: PackageUrls, margin_s: int) -> PlaybackUrls:
    expires_s = signed.hls.expires_at_epoch_s
    lifetime_s = max(1, expires_s - int(time.time()))
    refresh_s = expires_s - (margin_s if margin_s < lifetime_s else lifetime_s // 2)
    return PlaybackUrls(
        hls_url=signed.hls.url,
        dash_url=signed.dash.url,
        expires_at=_at(expires_s),
        token_refresh_before=_at(refresh_s),
        cookies=signed.cookies.cookies if signed.cookies else None,
        cookie_path=signed.cookies.path if signed.cookies else None,
    )


def create_playback_session(
    rt: Runtime,
    asset_id: str,
    device_id: str,
    tracking: TrackingSession | None,
    client_id: str,
    client: ClientFacts | None = None,
) -> PlaybackSessionCreated:
    """A playback session of the asset's newest ready package, with URLs signed for it.
    404 for an unknown asset, 409 ModelNotReadyError without a package, 409
    ConcurrentStreamsExceededError past `MEDIAMILL_MAX_CONCURRENT_STREAMS`. Of the
    client, only its country and parsed user agent are kept (`client` itself is not)."""
    asset, package = ready_package(rt, asset_id)
    session_id = str(uuid.uuid4())
    urls = _urls(
        sign_session_urls(rt, asset_id, package.package_id, session_id),
        rt.settings.playback_url_refresh_margin_s,
    )
    user_id = tracking.user_id if tracking is not None else None
    client = client or ClientFacts()
    device_info, device_class = device_info_of(client.user_agent)
    now = utcnow()
    with rt.db.session() as s:
        _check_concurrency(rt, s, device_id, user_id, now)
        playback_rows.add_playback_session(
            s,
            PlaybackSessionRow(
                id=session_id,
                asset_id=asset_id,
                package_id=package.package_id,
                device_id=device_id,
                tracking_session_id=tracking.session_id if tracking is not None else None,
                user_id=user_id,
                client_id=client_id,
                duration_ms=asset.duration_ms,
                status=PlaybackStatus.ACTIVE.value,
                created_at=now,
                is_paused=False,
                expires_at=urls.expires_at,
                refresh_before=urls.token_refresh_before,
                country=country_of(client.address),
                device_class=device_class.value,
                device_info=device_info.model_dump(mode="json"),
                source=tracking.playout_id if tracking is not None else None,
            ),
        )
    return PlaybackSessionCreated(
        session_id=session_id,
        hls_url=urls.hls_url,
        dash_url=urls.dash_url,
        expires_at=urls.expires_at,
        token_refresh_before=urls.token_refresh_before,
        heartbeat_interval_s=rt.settings.playback_heartbeat_interval_s,
        cookies=urls.cookies,
        cookie_path=urls.cookie_path,
    )


def _check_concurrency(
    rt: Runtime, s: Session, device_id: str, user_id: str | None, now: datetime
) -> None:
    limit = rt.settings.max_concurrent_streams
    if limit is None:
        return
    playback_rows.lock_streams_of(s, device_id, user_id)
    live_after = now - timedelta(seconds=rt.settings.playback_session_ttl_s)
    by_device, by_user = playback_rows.count_live_streams(
        s, live_after, device_id=device_id, user_id=user_id
    )
    if by_device >= limit:
        raise ConcurrentStreamsExceededError(
            f"this device already plays {by_device} stream(s), the most allowed "
            f"(MEDIAMILL_MAX_CONCURRENT_STREAMS={limit}); end one first"
        )
    if by_user >= limit:
        raise ConcurrentStreamsExceededError(
            f"this user already plays {by_user} stream(s), the most allowed "
            f"(MEDIAMILL_MAX_CONCURRENT_STREAMS={limit}); end one first"
        )


def _state_from_db(rt: Runtime, session_id: str) -> SessionState:
    """The session's state from its row: 404 when unknown, 409 when it ended (one idle
    past its TTL is ended here and now)."""
    now = utcnow()
    with rt.db.session() as s:
        row = playback_rows.playback_session_row(s, session_id)
        if row is None:
            raise ModelNotFoundError(f"no playback session {session_id}")
        seen = row.last_heartbeat_at or row.created_at
        idle_before = now - timedelta(seconds=rt.settings.playback_session_ttl_s)
        active = row.status == PlaybackStatus.ACTIVE.value
        if active and seen < idle_before:
            playback_rows.end_idle_sessions(s, [session_id], idle_before)
            active = False
        if not active:
            raise PlaybackSessionEndedError(
                f"playback session {session_id} has ended; start a new one"
            )
        return SessionState(
            session_id=row.id,
            asset_id=row.asset_id,
            package_id=row.package_id,
            duration_ms=row.duration_ms,
            expires_at_s=_epoch(row.expires_at),
            refresh_before_s=_epoch(row.refresh_before),
            client_id=row.client_id,
        )


async def _live_state(rt: Runtime, session_id: str, owner: str | None) -> SessionState:
    """The session's state: the buffer's, else the database's (put into the buffer).
    With `owner` (a publishable key's client id), another key's session is not found."""
    buffer = rt.playback_buffer()
    state = await buffer.state(session_id)
    if state is None:
        state = await asyncio.to_thread(_state_from_db, rt, session_id)
        await buffer.put_state(state, rt.settings.playback_session_ttl_s)
    if owner is not None and state.client_id and state.client_id != owner:
        raise ModelNotFoundError(f"no playback session {session_id}")
    return state


def heartbeat_id(session_id: str, seq: int | None) -> str:
    """A heartbeat's id: from the player's `seq` when it sent one (a retry is the same
    heartbeat), else new."""
    if seq is None:
        return str(uuid.uuid4())
    return str(uuid.uuid5(_HEARTBEAT_IDS, f"{session_id}/{seq}"))


def _check_position(state: SessionState, position_s: float | None, what: str) -> None:
    if position_s is None or state.duration_ms is None:
        return
    duration_s = state.duration_ms / 1000
    if position_s > duration_s + POSITION_SLACK_S:
        raise InvalidRequestError(
            f"{what} {position_s:g} s is past the end of the asset ({duration_s:g} s)"
        )


async def _accept(
    rt: Runtime,
    records: list[HeartbeatRecord | EventBatchRecord],
    state: SessionState,
    *,
    state_changed: bool = False,
) -> None:
    """Buffer `records`; a session whose state left the buffer meanwhile is read from
    the database again (PlaybackSessionEndedError when it ended) and tried once more."""
    settings = rt.settings
    buffer = rt.playback_buffer()
    ttl_s, flush_s = settings.playback_session_ttl_s, settings.playback_flush_interval_s
    schedule = await buffer.accept(records, state, ttl_s, flush_s, state_changed=state_changed)
    if schedule is None:
        fresh = await asyncio.to_thread(_state_from_db, rt, state.session_id)
        await buffer.put_state(state if state_changed else fresh, ttl_s)
        schedule = await buffer.accept(records, fresh, ttl_s, flush_s)
        if schedule is None:
            raise PlaybackSessionEndedError(
                f"playback session {state.session_id} has ended; start a new one"
            )
    if schedule:
        try:
            await asyncio.to_thread(schedule_flush, rt)
        except Exception:  # taken all the same: the sweeper schedules a flush for it
            log.warning("could not schedule a playback flush", exc_info=True)


async def heartbeat(
    rt: Runtime, session_id: str, beat: HeartbeatRequest, owner: str | None = None
) -> HeartbeatResponse:
    """Take a heartbeat: buffered, never waiting for the database. Fresh URLs once
    `tokenRefreshBefore` has passed."""
    state = await _live_state(rt, session_id, owner)
    _check_position(state, beat.position_seconds, "positionSeconds")
    now_s = time.time()
    record = HeartbeatRecord(
        id=heartbeat_id(session_id, beat.seq),
        session_id=session_id,
        received_at=_at(now_s),
        position_seconds=beat.position_seconds,
        is_paused=beat.is_paused,
    )
    refreshed = None
    if now_s >= state.refresh_before_s:
        signed = sign_session_urls(rt, state.asset_id, state.package_id, session_id, now_s)
        refreshed = _urls(signed, rt.settings.playback_url_refresh_margin_s)
        state = state.model_copy(
            update={
                "expires_at_s": _epoch(refreshed.expires_at),
                "refresh_before_s": _epoch(refreshed.token_refresh_before),
            }
        )
        record.urls_expire_at = refreshed.expires_at
        record.urls_refresh_before = refreshed.token_refresh_before
    await _accept(rt, [record], state, state_changed=refreshed is not None)
    return HeartbeatResponse(
        refreshed_urls=refreshed,
        session_expires_at=_at(now_s + rt.settings.playback_session_ttl_s),
    )


async def record_events(
    rt: Runtime, session_id: str, batch: EventBatch, owner: str | None = None
) -> EventsAccepted:
    """Take a batch of player events, all or none: a position past the asset's end or
    a sequence number used twice with other contents refuses the batch, naming the
    first bad event."""
    state = await _live_state(rt, session_id, owner)
    records = _event_records(state, session_id, batch)
    await _accept(rt, [records], state)
    return EventsAccepted(accepted=len(records.events))


def _event_records(
    state: SessionState, session_id: str, batch: EventBatch | BeaconRequest
) -> EventBatchRecord:
    received_at = utcnow()
    seen: dict[int, int] = {}
    records = []
    for index, event in enumerate(batch.events):
        where = f"events[{index}] ({event.type})"
        _check_position(state, event.position_seconds, f"{where}: positionSeconds")
        if isinstance(event, Seek):
            _check_position(state, event.from_seconds, f"{where}: from")
            _check_position(state, event.to_seconds, f"{where}: to")
        if event.seq in seen and batch.events[seen[event.seq]] != event:
            raise InvalidRequestError(
                f"{where}: seq {event.seq} is already events[{seen[event.seq]}]'s"
            )
        seen.setdefault(event.seq, index)
        records.append(
            EventRecord(
                session_id=session_id,
                seq=event.seq,
                type=event.type,
                occurred_at=event.timestamp,
                received_at=received_at,
                position_seconds=event.position_seconds,
                data=event.data(),
            )
        )
    return EventBatchRecord(session_id=session_id, events=records)


async def beacon(
    rt: Runtime, session_id: str, sent: BeaconRequest, owner: str | None = None
) -> None:
    """What the beacon script sends as its page goes away: its last events and
    position, buffered as any others, then the session ended when it asks."""
    state = await _live_state(rt, session_id, owner)
    records: list[HeartbeatRecord | EventBatchRecord] = []
    if sent.events:
        records.append(_event_records(state, session_id, sent))
    if sent.position_seconds is not None:
        _check_position(state, sent.position_seconds, "positionSeconds")
        records.append(
            HeartbeatRecord(
                id=heartbeat_id(session_id, None),
                session_id=session_id,
                received_at=utcnow(),
                position_seconds=sent.position_seconds,
                is_paused=sent.is_paused,
            )
        )
    if records:
        await _accept(rt, records, state)
    if sent.end:
        await end_playback_session(rt, session_id, owner)


async def end_playback_session(rt: Runtime, session_id: str, owner: str | None = None) -> None:
    """End the session (reason `client`): 404 when unknown (or, with `owner`, another
    key's); ending one that has ended is not an error (the beacon's pagehide and a
    DELETE may both come)."""

    def end() -> None:
        with rt.db.session() as s:
            row = playback_rows.playback_session_row(s, session_id)
            if row is None or (owner is not None and row.client_id != owner):
                raise ModelNotFoundError(f"no playback session {session_id}")
            playback_rows.end_playback_session(s, session_id, EndReason.CLIENT, utcnow())

    await asyncio.to_thread(end)
    await rt.playback_buffer().drop_state(session_id)


def list_playback_sessions(
    rt: Runtime,
    *,
    status: PlaybackStatus | None,
    asset_id: str | None,
    device_id: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[PlaybackSession], str | None]:
    """Sessions newest first; `active` ones are those heard from within their TTL."""
    live_after = utcnow() - timedelta(seconds=rt.settings.playback_session_ttl_s)
    with rt.db.session() as s:
        return playback_rows.list_playback_sessions_page(
            s,
            live_after=live_after,
            status=status,
            asset_id=asset_id,
            device_id=device_id,
            limit=limit,
            cursor=cursor,
        )


def get_playback_session(rt: Runtime, session_id: str, owner: str | None = None) -> PlaybackSession:
    """One session as stored (its position as of the last flush); 404 when unknown (or,
    with `owner`, another key's)."""
    with rt.db.session() as s:
        row = playback_rows.playback_session_row(s, session_id)
        if row is None or (owner is not None and row.client_id != owner):
            raise ModelNotFoundError(f"no playback session {session_id}")
        return playback_rows.playback_session_of(row)
