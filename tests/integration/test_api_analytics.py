"""The IBM Video Analytics-compatible routes through HTTP on the embedded API: sessions
played through the playback routes show up as views, counted by the rules; answers in
IBM's shapes (snake_case attributes, pagination links, `{"errors": [...]}` naming the
parameter); a read key in `Authorization`; a playback key refused."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from api_support import Api, running_api
from playback_support import packaged_asset
from support import wait_until

from mediamill.config.settings import Settings
from mediamill.schemas.base import utcnow
from mediamill.storage import views as view_rows
from mediamill.storage.api_keys import create_api_key
from mediamill.workers import views

pytestmark = pytest.mark.integration


class Site:
    def __init__(self, api: Api, player_key: str) -> None:
        self.api, self.client, self.rt = api, api.client, api.rt
        self.player = {"X-API-Key": player_key}
        self.auth = {"Authorization": api.read["X-API-Key"]}

    def play(self, asset_id: str, device: str, watch_s: float, user: str | None = None) -> str:
        query = f"?userId={user}" if user else ""
        tracking = self.client.post(
            f"/v0/playouts/site/tracking/session{query}", headers=self.player
        )
        token = tracking.headers["x-mediamill-tracking"]
        made = self.client.post(
            f"/v0/assets/{asset_id}/playback-sessions",
            headers={**self.player, "X-Device-Id": device, "X-MediaMill-Tracking": token},
        )
        assert made.status_code == 201, made.text
        sid = made.json()["sessionId"]
        now = utcnow()
        events = [
            {"seq": 0, "type": "viewStart", "timestamp": now.isoformat(), "startupMs": 250},
            {"seq": 1, "type": "playing", "timestamp": now.isoformat(), "positionSeconds": 0},
            {
                "seq": 2,
                "type": "pause",
                "timestamp": (now + timedelta(seconds=watch_s)).isoformat(),
                "positionSeconds": watch_s,
            },
        ]
        r = self.client.post(
            f"/v0/playback-sessions/{sid}/events", headers=self.player, json={"events": events}
        )
        assert r.status_code == 202 or r.status_code == 200, r.text
        return sid

    def get(self, path: str, **query: Any) -> Any:
        return self.client.get(f"/analytics/v1/{path}?{urlencode(query)}", headers=self.auth)


@pytest.fixture
def site(embedded_env) -> Iterator[Site]:
    settings = Settings(
        _env_file=None,
        data_dir=embedded_env,
        playback_flush_interval_s=0.2,
        playback_rate_per_s=1000,
    )
    with running_api(settings) as api:
        with api.rt.db.session() as s:
            key = create_api_key(s, "playback", "web player")
        yield Site(api, key.api_key)


def _derived(site: Site, count: int) -> None:
    def done() -> bool:
        views.update(site.rt)
        with site.rt.db.session() as s:
            return view_rows.count_views(s) == count

    wait_until(done, "the views derived")


def test_played_sessions_are_counted_views_in_ibm_shapes(site: Site) -> None:
    asset = packaged_asset(site.rt, duration_ms=600_000)
    site.play(asset, "tv-1", 45, user="alice@example.com")
    site.play(asset, "phone-1", 40, user="alice@example.com")
    site.play(asset, "phone-2", 10)  # under 30 s: a view, not a counted one
    _derived(site, 3)
    now = utcnow()
    window = {
        "date_time_from": (now - timedelta(hours=1)).isoformat(),
        "date_time_to": (now + timedelta(hours=1)).isoformat(),
    }
    summary = site.get("total-views/summary", **window)
    assert summary.status_code == 200, summary.text
    body = summary.json()
    assert body["data"] == [
        {
            "type": "Series",
            "attributes": {
                "dimension_type": "summary",
                "point": body["data"][0]["attributes"]["point"],
                "value": 2,
            },
        }
    ]
    assert body["pagination"]["count"] == 1 and body["pagination"]["prev"] is None
    assert (
        site.get("unique-devices/summary", **window).json()["data"][0]["attributes"]["value"] == 2
    )
    assert (
        site.get("authenticated-viewers/summary", **window).json()["data"][0]["attributes"]["value"]
        == 1
    )
    recorded = site.get("total-views/recorded/hour", content_id=asset, **window).json()
    assert sum(d["attributes"]["value"] for d in recorded["data"]) == 2
    assert site.get("total-views/live/summary", **window).json()["data"] == []
    listed = site.get("views", **window).json()
    assert listed["pagination"]["count"] == 3
    attributes = listed["data"][0]["attributes"]
    assert {
        "view_id",
        "content_id",
        "from",
        "to",
        "started_at",
        "finished_at",
        "viewer_identifier",
        "country",
        "device_info",
        "is_mobile_view",
        "view_session_id",
        "client_id",
    } <= set(attributes)
    assert sorted(d["attributes"]["to"] for d in listed["data"]) == [10, 40, 45]


def test_pagination_links_walk_every_page(site: Site) -> None:
    asset = packaged_asset(site.rt, duration_ms=600_000)
    for i in range(3):
        site.play(asset, f"dev-{i}", 31)
    _derived(site, 3)
    now = utcnow()
    query = {
        "date_time_from": (now - timedelta(minutes=30)).isoformat(),
        "date_time_to": (now + timedelta(minutes=30)).isoformat(),
        "_limit": 1,
    }
    page = site.get("views", **query).json()
    seen = []
    while True:
        seen += [d["attributes"]["view_id"] for d in page["data"]]
        assert page["pagination"]["count"] == 3
        assert page["pagination"]["last"]["href"].endswith("_page=3&_limit=1")
        if page["pagination"]["next"] is None:
            break
        page = site.client.get(page["pagination"]["next"]["href"], headers=site.auth).json()
    assert len(set(seen)) == 3


@pytest.mark.parametrize(
    ("path", "query", "pointer"),
    [
        ("total-views/summary", {"date_time_to": "2026-01-02T00:00:00Z"}, "date_time_from"),
        (
            "total-views/summary",
            {"date_time_from": "yesterday", "date_time_to": "2026-01-02"},
            "date_time_from",
        ),
        (
            "total-views/summary",
            {"date_time_from": "2026-01-02", "date_time_to": "2026-01-01"},
            "date_time_to",
        ),
        (
            "total-views/weekday",
            {"date_time_from": "2026-01-01", "date_time_to": "2026-01-02"},
            "dimension",
        ),
        (
            "total-views/vod/summary",
            {"date_time_from": "2026-01-01", "date_time_to": "2026-01-02"},
            "content_type",
        ),
        (
            "views",
            {"date_time_from": "2026-01-01", "date_time_to": "2026-01-02", "_limit": 10_001},
            "_limit",
        ),
        (
            "total-views/summary",
            {"date_time_from": "2026-01-01", "date_time_to": "9999-12-31T23:59:59-12:00"},
            "date_time_to",
        ),
        (
            "views",
            {"date_time_from": "2026-01-01", "date_time_to": "2026-01-02", "_page": 10**19},
            "_page",
        ),
        (
            "peak-viewer-numbers",
            {"date_time_from": "2025-01-01", "date_time_to": "2026-06-01", "granularity": "hour"},
            "date_time_to",
        ),
        (
            "peak-viewer-numbers/recorded",
            {
                "date_time_from": "2026-01-01",
                "date_time_to": "2026-01-02",
                "content_id": ",".join(f"{i:064x}" for i in range(21)),
            },
            "content_id",
        ),
        (
            "content-performance",
            {"period": "today", "cursor": "eyJvIjpJbmZpbml0eX0"},
            "cursor",
        ),
        (
            "views",
            {"date_time_from": "0001-01-01T00:00:00+14:00", "date_time_to": "2026-01-02"},
            "date_time_from",
        ),
        (
            "views",
            {"date_time_from": "2026-01-01", "date_time_to": "2026-01-02", "_page": 0},
            "_page",
        ),
        (
            "views",
            {
                "date_time_from": "2026-01-01",
                "date_time_to": "2026-01-02",
                "inclusive_range": "maybe",
            },
            "inclusive_range",
        ),
        (
            "views/recorded",
            {"date_time_from": "2026-01-01", "date_time_to": "2026-01-02", "content_id": "1,2"},
            "content_id",
        ),
    ],
)
def test_bad_parameters_are_ibm_errors_naming_the_parameter(
    site: Site, path, query, pointer
) -> None:
    r = site.get(path, **query)
    assert r.status_code == 400, r.text
    (error,) = r.json()["errors"]
    assert error["status"] == 400 and error["title"] == "InvalidRequestError" and error["detail"]
    assert error["source"] == {"pointer": pointer}


def test_keys_other_than_read_or_admin_are_refused(site: Site) -> None:
    query = {"date_time_from": "2026-01-01", "date_time_to": "2026-01-02"}
    r = site.client.get(
        f"/analytics/v1/total-views/summary?{urlencode(query)}", headers=site.player
    )
    assert r.status_code == 403 and r.json()["errors"][0]["status"] == 403
    r = site.client.get(f"/analytics/v1/total-views/summary?{urlencode(query)}")
    assert r.status_code == 401 and r.json()["errors"][0]["title"] == "AuthenticationError"
    bearer = {"Authorization": f"Bearer {site.api.read['X-API-Key']}"}
    assert (
        site.client.get(f"/analytics/v1/views?{urlencode(query)}", headers=bearer).status_code
        == 200
    )


def test_date_times_without_an_offset_read_in_the_analytics_zone(embedded_env) -> None:
    settings = Settings(_env_file=None, data_dir=embedded_env, analytics_tz="Europe/Budapest")
    with running_api(settings) as api:
        r = api.client.get(
            "/analytics/v1/total-views/day?date_time_from=2026-07-01T00:00:00"
            "&date_time_to=2026-07-03T00:00:00",
            headers=api.read,
        )
        assert r.status_code == 200, r.text
        points = [d["attributes"]["point"] for d in r.json()["data"]]
        assert points == ["2026-07-01T00:00:00+02:00", "2026-07-02T00:00:00+02:00"]


def test_viewers_and_peaks_in_ibm_shapes(site: Site) -> None:
    asset = packaged_asset(site.rt, duration_ms=600_000)
    site.play(asset, "tv-1", 45, user="alice@example.com")
    site.play(asset, "phone-1", 40, user="alice@example.com")
    site.play(asset, "phone-2", 35, user="bob@example.com")
    _derived(site, 3)
    now = utcnow()
    window = {
        "date_time_from": (now - timedelta(minutes=30)).isoformat(),
        "date_time_to": (now + timedelta(minutes=30)).isoformat(),
    }
    viewers = site.get("viewers", **window).json()
    assert viewers["pagination"]["count"] == 2
    alice = viewers["data"][0]
    assert alice["type"] == "Viewer"
    assert alice["attributes"]["viewer_identifier"] == "alice@example.com"
    assert alice["attributes"]["videos_watched"] == 1
    assert len(alice["attributes"]["segments"]) == 2 and "id" in alice["attributes"]["segments"][0]
    only_bob = site.get("viewers/recorded", viewer_identifier="BOB", content_id=asset, **window)
    assert [v["attributes"]["viewer_identifier"] for v in only_bob.json()["data"]] == [
        "bob@example.com"
    ]
    assert site.get("viewers", viewer_identifier="%", **window).json()["data"] == []
    peaks = site.get("peak-viewer-numbers", granularity="hour", **window).json()
    assert peaks["data"][0]["type"] == "PeakSeries"
    assert max(p["attributes"]["value"] for p in peaks["data"]) == 3
    too_long = site.get(
        "peak-viewer-numbers",
        date_time_from="2026-01-01T00:00:00Z",
        date_time_to="2026-03-01T00:00:00Z",
    )
    assert too_long.status_code == 400
    assert too_long.json()["errors"][0]["source"] == {"pointer": "date_time_to"}


def test_export_streams_every_view_as_ndjson_and_csv(site: Site) -> None:
    import csv
    import io
    import json

    asset = packaged_asset(site.rt, duration_ms=600_000)
    played = {site.play(asset, f"dev-{i}", 31 + i) for i in range(4)}
    _derived(site, 4)
    now = utcnow()
    window = {
        "date_time_from": (now - timedelta(minutes=30)).isoformat(),
        "date_time_to": (now + timedelta(minutes=30)).isoformat(),
    }
    r = site.get("views/export", **window)
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert {x["view_id"] for x in lines} == played
    assert sorted(x["watched_s"] for x in lines) == [31, 32, 33, 34]
    r = site.get("views/export", format="csv", **window)
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert {row["view_id"] for row in rows} == played and rows[0]["counted"] == "True"
    assert site.get("views/export", format="xml", **window).json()["errors"][0]["source"] == {
        "pointer": "format"
    }


def test_retention_qoe_and_content_performance_shapes(site: Site) -> None:
    asset = packaged_asset(site.rt, duration_ms=100_000)
    site.play(asset, "dev-1", 100)  # the whole asset
    site.play(asset, "dev-2", 50)  # half
    _derived(site, 2)
    points = site.get(f"assets/{asset}/retention").json()
    assert points["meta"] == {"content_id": asset, "views": 2}
    shares = [p["attributes"]["share"] for p in points["data"]]
    assert len(shares) == 101 and shares[0] == 1.0 and shares[50] == 1.0 and shares[51] == 0.5
    assert shares[100] == 0.5
    summary = site.get("qoe").json()["data"][0]["attributes"]
    assert summary["plays"] == 2 and summary["startup_time_p50_ms"] == 250
    assert summary["rebuffer_ratio"] == 0 and summary["playback_failure_rate"] == 0
    by_device = site.get("qoe", dimension="device").json()["data"]
    assert [d["attributes"]["point"] for d in by_device] == ["other"]
    assert site.get("qoe", dimension="weather").status_code == 400
    perf = site.get("content-performance", period="today").json()
    assert perf["data"] == [
        {
            "content_id": asset,
            "total_plays": 2,
            "views": 2,
            "unique_viewers": 2,
            "completion_rate": 0.5,
            "watch_hours": perf["data"][0]["watch_hours"],
        }
    ]
    assert perf["meta"]["next_cursor"] is None
    assert site.get("content-performance").status_code == 400  # period is required
    assert site.get("content-performance", period="today", sort="title").status_code == 400
    assert site.get("content-performance", period="today", cursor="junk").status_code == 400


def test_erasure_needs_an_admin_key_and_is_audit_logged(site: Site) -> None:
    asset = packaged_asset(site.rt, duration_ms=600_000)
    site.play(asset, "dev-1", 40, user="carol@example.com")
    _derived(site, 1)
    path = "/analytics/v1/viewers/carol@example.com"
    assert site.client.delete(path, headers=site.auth).status_code == 403
    r = site.client.delete(path, headers=site.api.admin)
    assert r.status_code == 200, r.text
    assert r.json()["erased"]["views"] == 1 and r.json()["erased"]["playback_sessions"] == 1
    now = utcnow()
    window = {
        "date_time_from": (now - timedelta(minutes=30)).isoformat(),
        "date_time_to": (now + timedelta(minutes=30)).isoformat(),
    }
    assert site.get("viewers", **window).json()["data"] == []
    logged = site.client.get(
        "/v0/audit-logs", params={"action": "viewer."}, headers=site.api.admin
    ).json()["data"]
    assert len(logged) == 1 and logged[0]["resourceType"] == "viewer"
    assert "carol" not in logged[0]["resourceId"]
