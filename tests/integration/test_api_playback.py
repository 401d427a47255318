"""Playback routes through HTTP on the embedded API: the publishable `playback` key and
what it may not do, its rate limit and CORS; tracking sessions in the body, a cookie and
a header; playback sessions, heartbeats, events and the beacon, stored by the
in-process worker's flush; bad input answered with named 4xx errors."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from api_support import Api, running_api
from playback_support import packaged_asset, session_row, stored_events, stored_heartbeats

from mediamill.config.settings import Settings
from mediamill.schemas.base import utcnow
from mediamill.storage.api_keys import create_api_key

pytestmark = pytest.mark.integration

COOKIE = "__Secure-mediamill_tracking"
ORIGIN = "https://player.example.com"


def _settings(data_dir, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "playback_allowed_origins": ORIGIN,
        "playback_flush_interval_s": 0.2,
        "playback_rate_per_s": 1000,
    }
    return Settings(_env_file=None, **{**values, **overrides})


class Player:
    """An API plus a playback key's headers."""

    def __init__(self, api: Api, key: str) -> None:
        self.api, self.client, self.rt = api, api.client, api.rt
        self.key = key
        self.headers = {"X-API-Key": key}

    def session(self, asset_id: str, device_id: str = "device-1", **headers: str) -> dict:
        r = self.client.post(
            f"/v0/assets/{asset_id}/playback-sessions",
            headers={**self.headers, "X-Device-Id": device_id, **headers},
        )
        assert r.status_code == 201, r.text
        return r.json()


@pytest.fixture
def player(embedded_env) -> Iterator[Player]:
    with running_api(_settings(embedded_env)) as api:
        with api.rt.db.session() as s:
            key = create_api_key(s, "playback", "web player")
        yield Player(api, key.api_key)


def assert_error(response: httpx.Response, status: int, name: str) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert body["name"] == name and body["statusCode"] == status, body
    return body


def wait_until(check: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")


# ---- the playback key -----------------------------------------------------------------------


def test_a_playback_key_is_refused_everywhere_else(player: Player) -> None:
    asset_id = packaged_asset(player.rt)
    refused = [
        ("GET", "/v0/jobs"),
        ("GET", "/v0/assets"),
        ("GET", f"/v0/assets/{asset_id}/metadata"),
        ("GET", f"/v0/assets/{asset_id}/streams"),
        ("POST", "/v0/jobs"),
        ("GET", "/v0/webhooks/endpoints"),
        ("GET", "/v0/playback-sessions"),  # listing needs a read key
        ("DELETE", f"/v0/assets/{asset_id}"),
    ]
    for method, path in refused:
        r = player.client.request(method, path, headers=player.headers, json={})
        body = assert_error(r, 403, "PermissionDeniedError")
        assert "playback key" in body["message"], (path, body)
    r = player.client.get("/v0/playback-sessions", headers=player.api.read)
    assert r.status_code == 200


def test_a_playback_key_is_rate_limited_per_address_with_retry_after(embedded_env) -> None:
    with running_api(_settings(embedded_env, playback_rate_per_s=1)) as api:
        with api.rt.db.session() as s:
            key = create_api_key(s, "playback").api_key
        path = "/v0/playouts/site/tracking/session"
        statuses = [api.client.post(path, headers={"X-API-Key": key}).status_code for _ in range(3)]
        assert statuses == [201, 201, 429]
        r = api.client.post(path, headers={"X-API-Key": key})
        assert_error(r, 429, "RateLimitedError")
        assert int(r.headers["Retry-After"]) >= 1
        # Admin keys are not limited; read keys may only read.
        assert api.client.post(path, headers=api.admin).status_code == 201
        assert_error(api.client.post(path, headers=api.read), 403, "PermissionDeniedError")


def test_cors_names_allowed_origins_with_credentials_only(player: Player) -> None:
    path = "/v0/playouts/site/tracking/session"
    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-api-key, content-type",
    }
    r = player.client.options(path, headers=preflight)
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert r.headers["access-control-allow-credentials"] == "true"
    assert "x-api-key" in r.headers["access-control-allow-headers"]
    assert "Origin" in r.headers["vary"]
    r = player.client.options(path, headers={**preflight, "Origin": "https://evil.example"})
    assert_error(r, 403, "PermissionDeniedError")
    assert "access-control-allow-origin" not in r.headers
    r = player.client.post(path, headers={**player.headers, "Origin": ORIGIN})
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "x-mediamill-tracking" in r.headers["access-control-expose-headers"]
    r = player.client.get("/v0/jobs", headers={**player.api.read, "Origin": ORIGIN})
    assert "access-control-allow-origin" not in r.headers  # not a playback route


# ---- tracking sessions ----------------------------------------------------------------------


def test_a_tracking_session_comes_in_the_body_a_cookie_and_a_header(player: Player) -> None:
    r = player.client.post("/v0/playouts/radio-1/tracking/session", headers=player.headers)
    assert r.status_code == 201
    data = r.json()["data"]
    assert set(data) == {"sessionId", "startTime", "source", "playoutId"}  # no userId
    token = r.headers["x-mediamill-tracking"]
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={token};")
    attributes = {a.strip() for a in cookie.split(";")[1:]}
    assert attributes == {"HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=86400"}
    player.client.cookies.clear()
    by_header = player.client.get(
        "/v0/playouts/radio-1/tracking/session",
        headers={**player.headers, "X-MediaMill-Tracking": token},
    )
    assert by_header.status_code == 200 and by_header.json()["data"] == data
    by_cookie = player.client.get(
        "/v0/playouts/radio-1/tracking/session",
        headers={**player.headers, "Cookie": f"{COOKIE}={token}"},
    )
    assert by_cookie.json()["data"] == data
    # The cookie is read first: a good cookie wins over a bad header, and the other way.
    mixed = {**player.headers, "Cookie": f"{COOKIE}={token}", "X-MediaMill-Tracking": "x"}
    assert (
        player.client.get("/v0/playouts/radio-1/tracking/session", headers=mixed).status_code == 200
    )
    mixed = {**player.headers, "Cookie": f"{COOKIE}=x", "X-MediaMill-Tracking": token}
    assert_error(
        player.client.get("/v0/playouts/radio-1/tracking/session", headers=mixed),
        400,
        "TrackingSessionInvalidError",
    )


def test_a_user_id_only_when_sent_and_a_forged_token_is_a_named_400(player: Player) -> None:
    r = player.client.post(
        "/v0/playouts/app/tracking/session?userId=user-123456", headers=player.headers
    )
    assert r.json()["data"]["userId"] == "user-123456"
    r = player.client.post(
        "/v0/playouts/app/tracking/session", headers=player.headers, json={"userId": "u-2"}
    )
    assert r.json()["data"]["userId"] == "u-2"
    token = r.headers["x-mediamill-tracking"]
    import base64

    fields = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    fields["userId"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(fields).encode()).decode()
    player.client.cookies.clear()
    r = player.client.get(
        "/v0/playouts/app/tracking/session",
        headers={**player.headers, "X-MediaMill-Tracking": forged},
    )
    assert_error(r, 400, "TrackingSessionInvalidError")
    r = player.client.get("/v0/playouts/app/tracking/session", headers=player.headers)
    assert_error(r, 400, "TrackingSessionInvalidError")  # none sent
    for bad in (
        "/v0/playouts/a%20b/tracking/session",
        f"/v0/playouts/{'p' * 129}/tracking/session",
    ):
        assert_error(player.client.post(bad, headers=player.headers), 400, "InvalidRequestError")
    r = player.client.post(
        "/v0/playouts/app/tracking/session?userId=has%20space", headers=player.headers
    )
    assert_error(r, 400, "InvalidRequestError")


def test_delete_clears_the_cookie_and_ends_the_session(player: Player) -> None:
    r = player.client.post("/v0/playouts/site/tracking/session", headers=player.headers)
    token = r.headers["x-mediamill-tracking"]
    headers = {**player.headers, "X-MediaMill-Tracking": token}
    player.client.cookies.clear()
    r = player.client.delete("/v0/playouts/site/tracking/session", headers=headers)
    assert r.status_code == 200
    assert r.json() == {"data": {"message": "Tracking session deleted"}}
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=;") and "expires=Thu, 01 Jan 1970 00:00:00 GMT" in cookie
    r = player.client.get("/v0/playouts/site/tracking/session", headers=headers)
    body = assert_error(r, 400, "TrackingSessionInvalidError")
    assert "ended" in body["message"]


# ---- playback sessions ----------------------------------------------------------------------


def test_a_session_heartbeats_and_events_reach_the_database(player: Player) -> None:
    asset_id = packaged_asset(player.rt)
    tracking = player.client.post(
        "/v0/playouts/site/tracking/session?userId=viewer-1", headers=player.headers
    )
    # The cookie is Secure (not sent to http://testserver), so as a native client would:
    created = player.session(
        asset_id, **{"X-MediaMill-Tracking": tracking.headers["x-mediamill-tracking"]}
    )
    assert set(created) == {
        "sessionId",
        "hlsUrl",
        "dashUrl",
        "expiresAt",
        "tokenRefreshBefore",
        "heartbeatIntervalS",
    }
    sid = created["sessionId"]
    assert "/s/" in created["hlsUrl"] and f"/{sid}/packages/{asset_id}/" in created["hlsUrl"]
    row = session_row(player.rt, sid)
    assert row.tracking_session_id == tracking.json()["data"]["sessionId"]
    assert row.user_id == "viewer-1"
    r = player.client.post(
        f"/v0/playback-sessions/{sid}/heartbeat",
        headers=player.headers,
        json={"positionSeconds": 2, "isPaused": False},
    )
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"refreshedUrls", "sessionExpiresAt"}
    assert r.json()["refreshedUrls"] is None
    now = utcnow().isoformat()
    events = [
        {"seq": 0, "type": "viewStart", "timestamp": now, "startupMs": 310},
        {"seq": 1, "type": "playing", "timestamp": now, "positionSeconds": 0.1},
    ]
    for _ in range(2):  # a retried batch
        r = player.client.post(
            f"/v0/playback-sessions/{sid}/events", headers=player.headers, json={"events": events}
        )
        assert r.json() == {"accepted": 2}
    wait_until(
        lambda: stored_heartbeats(player.rt, sid) and len(stored_events(player.rt, sid)) == 2
    )
    assert stored_heartbeats(player.rt, sid)[0].position_s == 2.0
    r = player.client.get(f"/v0/playback-sessions/{sid}", headers=player.headers)
    assert r.json()["positionSeconds"] == 2.0 and r.json()["status"] == "active"
    listed = player.client.get(
        f"/v0/playback-sessions?status=active&assetId={asset_id}&deviceId=device-1",
        headers=player.api.read,
    ).json()
    assert [x["sessionId"] for x in listed["data"]] == [sid] and listed["nextCursor"] is None
    assert (
        player.client.delete(f"/v0/playback-sessions/{sid}", headers=player.headers).status_code
        == 204
    )
    r = player.client.post(
        f"/v0/playback-sessions/{sid}/heartbeat",
        headers=player.headers,
        json={"positionSeconds": 3},
    )
    assert_error(r, 409, "PlaybackSessionEndedError")
    listed = player.client.get("/v0/playback-sessions?status=active", headers=player.api.read)
    assert listed.json()["data"] == []


def test_the_beacon_sends_last_events_and_ends_the_session_without_headers(player: Player) -> None:
    sid = player.session(packaged_asset(player.rt))["sessionId"]
    body = json.dumps(
        {
            "events": [{"seq": 5, "type": "pause", "timestamp": utcnow().isoformat()}],
            "positionSeconds": 4.5,
            "isPaused": True,
            "end": True,
        }
    )
    r = player.client.post(
        f"/v0/playback-sessions/{sid}/beacon?apiKey={player.key}",
        content=body,
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    )
    assert r.status_code == 204, r.text
    wait_until(lambda: stored_events(player.rt, sid) and stored_heartbeats(player.rt, sid))
    assert session_row(player.rt, sid).end_reason == "client"
    r = player.client.post(f"/v0/playback-sessions/{sid}/beacon", content=body)
    assert_error(r, 401, "AuthenticationError")
    r = player.client.post(f"/v0/playback-sessions/{sid}/beacon?apiKey={player.key}", content="{")
    assert_error(r, 400, "InvalidRequestError")


def test_bad_input_is_a_named_4xx(player: Player) -> None:
    asset_id = packaged_asset(player.rt)
    post = player.client.post
    create = f"/v0/assets/{asset_id}/playback-sessions"
    assert_error(post(create, headers=player.headers), 400, "InvalidRequestError")  # no device
    long_device = {**player.headers, "X-Device-Id": "d" * 129}
    assert_error(post(create, headers=long_device), 400, "InvalidRequestError")
    assert post(create, headers={**player.headers, "X-Device-Id": "d" * 128}).status_code == 201
    unknown = f"/v0/assets/{'0' * 64}/playback-sessions"
    assert_error(
        post(unknown, headers={**player.headers, "X-Device-Id": "d"}), 404, "ModelNotFoundError"
    )
    forged = {**player.headers, "X-Device-Id": "d", "X-MediaMill-Tracking": "Zm9yZ2Vk"}
    assert_error(post(create, headers=forged), 400, "TrackingSessionInvalidError")
    sid = player.session(asset_id)["sessionId"]
    beat = f"/v0/playback-sessions/{sid}/heartbeat"
    for body in ({"positionSeconds": -1}, {"positionSeconds": "x"}, {}, {"positionSeconds": 1e9}):
        r = post(beat, headers=player.headers, json=body)
        assert_error(r, 400, "InvalidRequestError")
    r = post(
        beat, headers={**player.headers, "Content-Type": "application/json"}, content=b"not json"
    )
    assert_error(r, 400, "InvalidRequestError")
    unknown_beat = "/v0/playback-sessions/00000000-0000-0000-0000-000000000000/heartbeat"
    assert_error(
        post(unknown_beat, headers=player.headers, json={"positionSeconds": 1}),
        404,
        "ModelNotFoundError",
    )
    assert_error(
        post(
            "/v0/playback-sessions/a%20b/heartbeat",
            headers=player.headers,
            json={"positionSeconds": 1},
        ),
        400,
        "InvalidRequestError",
    )
    events = f"/v0/playback-sessions/{sid}/events"
    now = utcnow().isoformat()
    many = [{"seq": i, "type": "playing", "timestamp": now} for i in range(10_000)]
    r = post(events, headers=player.headers, json={"events": many})
    assert r.status_code in {400, 413}, r.text
    assert r.json()["name"] in {"InvalidRequestError", "PayloadTooLargeError"}
    r = post(events, headers=player.headers, json={"events": many[:101]})
    body = assert_error(r, 400, "InvalidRequestError")
    assert "at most 100 events" in body["message"]
    bad = [
        {"seq": 0, "type": "playing", "timestamp": now},
        {"seq": 1, "type": "teleport", "timestamp": now},
    ]
    body = assert_error(
        post(events, headers=player.headers, json={"events": bad}), 400, "InvalidRequestError"
    )
    assert body["message"].startswith("events.1"), body
    bad = [{"seq": 0, "type": "viewStart", "timestamp": now}]  # no startupMs
    body = assert_error(
        post(events, headers=player.headers, json={"events": bad}), 400, "InvalidRequestError"
    )
    assert "events.0" in body["message"]
    assert_error(
        post(events, headers=player.headers, json={"events": []}), 400, "InvalidRequestError"
    )
    wait_until(lambda: player.rt.playback_buffer().backlog() == 0)
    assert stored_events(player.rt, sid) == []  # nothing of the refused batches


def test_an_asset_without_a_package_is_409_not_ready(player: Player, samples) -> None:
    from mediamill.pipeline.analysis import analyse_file
    from mediamill.storage import repo

    path = samples["music.flac"]
    with path.open("rb") as f:
        blob, _ = player.rt.store.put_content_addressed("originals", f)
    with player.rt.db.session() as s:
        repo.insert_asset_if_absent(s, blob.sha256, blob.key, blob.size_bytes, path.name)
        repo.record_analysis(repo.get_asset_row(s, blob.sha256), analyse_file(path))
    asset_id = blob.sha256
    r = player.client.post(
        f"/v0/assets/{asset_id}/playback-sessions",
        headers={**player.headers, "X-Device-Id": "d"},
    )
    assert_error(r, 409, "ModelNotReadyError")
    assert int(r.headers["Retry-After"]) >= 1


def test_concurrent_streams_over_the_limit_are_a_named_409(embedded_env) -> None:
    with running_api(_settings(embedded_env, max_concurrent_streams=2)) as api:
        asset_id = packaged_asset(api.rt)
        path = f"/v0/assets/{asset_id}/playback-sessions"
        headers = {**api.admin, "X-Device-Id": "tv-1"}
        assert [api.client.post(path, headers=headers).status_code for _ in range(2)] == [201, 201]
        assert_error(api.client.post(path, headers=headers), 409, "ConcurrentStreamsExceededError")


# ---- the beacon script ----------------------------------------------------------------------


def test_the_beacon_script_is_served_without_a_key_and_cached(player: Player) -> None:
    r = player.client.get("/v0/player/beacon.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/javascript")
    assert "max-age=" in r.headers["cache-control"] and "public" in r.headers["cache-control"]
    assert "MediaMillBeacon" in r.text
    again = player.client.get("/v0/player/beacon.js", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304


def test_an_expired_tracking_token_is_its_own_named_400(player: Player) -> None:
    from mediamill.pipeline.tracking_token import make_token
    from mediamill.schemas.playback import TrackingSession

    session = TrackingSession(
        session_id="550e8400-e29b-41d4-a716-446655440000",
        start_time=utcnow(),
        source="mediamill.api.playout.test",
        playout_id="site",
    )
    secret = player.rt.settings.resolved_signing_secret()
    expired = make_token(session, int(time.time()) - 1, secret)
    headers = {**player.headers, "X-MediaMill-Tracking": expired}
    r = player.client.get("/v0/playouts/site/tracking/session", headers=headers)
    assert_error(r, 400, "TrackingSessionExpiredError")
    asset_id = packaged_asset(player.rt)
    r = player.client.post(
        f"/v0/assets/{asset_id}/playback-sessions", headers={**headers, "X-Device-Id": "d"}
    )
    assert_error(r, 400, "TrackingSessionExpiredError")


def test_values_nested_too_deep_are_a_400_on_every_playback_route(player: Player) -> None:
    import base64

    sid = player.session(packaged_asset(player.rt))["sessionId"]
    json_headers = {**player.headers, "Content-Type": "application/json"}
    for depth in (500, 100_000):
        body = ("[" * depth + "]" * depth).encode()
        wrapped = b'{"events": ' + body + b"}"
        for path, content in (
            (f"/v0/playback-sessions/{sid}/events", wrapped),
            (f"/v0/playback-sessions/{sid}/heartbeat", wrapped),
            (f"/v0/playback-sessions/{sid}/beacon?apiKey={player.key}", wrapped),
            ("/v0/playouts/site/tracking/session", b'{"userId": ' + body + b"}"),
        ):
            r = player.client.post(path, headers=json_headers, content=content)
            assert r.status_code in {400, 413}, (path, depth, r.status_code, r.text[:200])
    deep_token = base64.urlsafe_b64encode(b"[" * 1530).decode()
    r = player.client.get(
        "/v0/playouts/site/tracking/session",
        headers={**player.headers, "X-MediaMill-Tracking": deep_token},
    )
    assert_error(r, 400, "TrackingSessionInvalidError")


def test_a_publishable_key_reaches_its_own_sessions_only(player: Player) -> None:
    sid = player.session(packaged_asset(player.rt))["sessionId"]
    with player.rt.db.session() as s:
        other = {"X-API-Key": create_api_key(s, "playback", "another site").api_key}
    beat = {"positionSeconds": 1}
    for method, path, body in (
        ("POST", f"/v0/playback-sessions/{sid}/heartbeat", beat),
        (
            "POST",
            f"/v0/playback-sessions/{sid}/events",
            {"events": [{"seq": 0, "type": "playing", "timestamp": utcnow().isoformat()}]},
        ),
        ("GET", f"/v0/playback-sessions/{sid}", None),
        ("DELETE", f"/v0/playback-sessions/{sid}", None),
    ):
        r = player.client.request(method, path, headers=other, json=body)
        assert_error(r, 404, "ModelNotFoundError")
    r = player.client.post(
        f"/v0/playback-sessions/{sid}/beacon?apiKey={other['X-API-Key']}", content='{"end": true}'
    )
    assert_error(r, 404, "ModelNotFoundError")
    assert session_row(player.rt, sid).status == "active"
    # Its own key, and read or admin keys, may.
    assert (
        player.client.get(f"/v0/playback-sessions/{sid}", headers=player.headers).status_code == 200
    )
    assert (
        player.client.get(f"/v0/playback-sessions/{sid}", headers=player.api.read).status_code
        == 200
    )
    # Only a playback key may ride in a URL.
    admin_key = f"{player.api.admin['x-client-id']}.{player.api.admin['x-authentication-token']}"
    r = player.client.post(f"/v0/playback-sessions/{sid}/beacon?apiKey={admin_key}", content="{}")
    assert_error(r, 403, "PermissionDeniedError")


def test_a_stale_cookie_neither_blocks_playback_nor_stays(player: Player) -> None:
    asset_id = packaged_asset(player.rt)
    stale = {**player.headers, "Cookie": f"{COOKIE}=Zm9yZ2Vk", "X-Device-Id": "d"}
    r = player.client.post(f"/v0/assets/{asset_id}/playback-sessions", headers=stale)
    assert r.status_code == 201, r.text  # tracking is optional: a stale cookie is passed over
    assert session_row(player.rt, r.json()["sessionId"]).tracking_session_id is None
    r = player.client.delete("/v0/playouts/site/tracking/session", headers=stale)
    assert_error(r, 400, "TrackingSessionInvalidError")
    assert r.headers["set-cookie"].startswith(f"{COOKIE}=;")  # cleared all the same


def test_a_retried_heartbeat_with_its_seq_counts_once(player: Player) -> None:
    sid = player.session(packaged_asset(player.rt))["sessionId"]
    path = f"/v0/playback-sessions/{sid}/heartbeat"
    for _ in range(3):
        r = player.client.post(path, headers=player.headers, json={"positionSeconds": 2, "seq": 7})
        assert r.status_code == 200
    player.client.post(path, headers=player.headers, json={"positionSeconds": 3, "seq": 8})
    wait_until(lambda: len(stored_heartbeats(player.rt, sid)) == 2)
    time.sleep(0.5)
    assert [h.position_s for h in stored_heartbeats(player.rt, sid)] == [2.0, 3.0]


def test_docs_behind_a_key_refuse_a_playback_key(embedded_env) -> None:
    with running_api(_settings(embedded_env, public_docs=False)) as api:
        with api.rt.db.session() as s:
            key = create_api_key(s, "playback").api_key
        r = api.client.get("/openapi.json", headers={"X-API-Key": key})
        assert_error(r, 403, "PermissionDeniedError")
        assert api.client.get("/openapi.json", headers=api.read).status_code == 200


def test_ready_names_a_playback_redis_that_does_not_answer(embedded_env) -> None:
    from support import free_port

    down = f"redis://127.0.0.1:{free_port()}/0"
    with running_api(_settings(embedded_env, playback_buffer_url=down)) as api:
        r = api.client.get("/ready")
        assert r.status_code == 503 and r.json()["checks"]["playback"] == "failed", r.text
        asset_id = packaged_asset(api.rt)
        created = api.client.post(
            f"/v0/assets/{asset_id}/playback-sessions", headers={**api.admin, "X-Device-Id": "d"}
        )
        sid = created.json()["sessionId"]
        r = api.client.post(
            f"/v0/playback-sessions/{sid}/heartbeat", headers=api.admin, json={"positionSeconds": 1}
        )
        assert_error(r, 503, "BufferUnavailableError")
