"""Item 8 of issue 18: sessions played by scripts/play_sessions.py through the real
HTTP routes (uvicorn, X-Forwarded-For addresses, user agents, pauses, seeks,
rebuffering, rendition changes, errors, closed pages, batches sent late and twice)
give, at every analytics endpoint, the answer computed here from the plans alone:
exact for counts, within the sketches' bounds for unique counts and quantiles."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from playback_support import packaged_asset
from support import _load_script, serving, wait_until

from mediamill.api.app import create_app
from mediamill.config.settings import Settings
from mediamill.schemas.base import utcnow
from mediamill.storage import views as view_rows
from mediamill.storage.api_keys import create_api_key
from mediamill.workers import views

pytestmark = pytest.mark.integration

play_sessions = _load_script("play_sessions")
SESSIONS = 160
SECONDS_PER_S = 0.01  # a minute of watching is played in 0.6 s
MIN_WATCH_S = 30.0


class Truth:
    """What the plans say each endpoint must answer."""

    def __init__(self, plans: list[Any]) -> None:
        self.views = [p for p in plans if p.plays and p.sections]

    @staticmethod
    def viewer(p: Any) -> str:
        if p.user_id:
            return p.user_id
        return f"anonymous-{p.index}" if p.tracked else f"device:{p.device_id}"

    @staticmethod
    def counted(p: Any) -> bool:
        return p.watched_s >= min(MIN_WATCH_S, p.duration_s / 2)

    @staticmethod
    def completed(p: Any) -> bool:
        return p.ending == "ended" or max(b for _, b in p.sections) >= p.duration_s - 2

    @staticmethod
    def sections(p: Any) -> int:
        return len(p.sections) + sum(1 for s in p.rebuffer_s if s)

    def counted_views(self, asset: str | None = None) -> list[Any]:
        return [p for p in self.views if self.counted(p) and asset in (None, p.asset_id)]


def close(estimate: float, exact: float, share: float = 0.01) -> bool:
    return abs(estimate - exact) <= max(1, exact * share)


@pytest.fixture
def played(embedded_env) -> Iterator[tuple[httpx.Client, Truth, dict[str, float]]]:
    settings = Settings(
        _env_file=None,
        data_dir=embedded_env,
        playback_flush_interval_s=0.2,
        playback_rate_per_s=100_000,
        view_min_watch_s=MIN_WATCH_S,
    )
    app = create_app(settings)
    with serving(app) as base:
        rt = app.state.runtime
        assets = {packaged_asset(rt, duration_ms=int(d * 1000)): d for d in (50.0, 120.0, 600.0)}
        with rt.db.session() as s:
            player = create_api_key(s, "playback", "generator").api_key
            reader = create_api_key(s, "read", "analyst").api_key
        plans = play_sessions.plan_sessions(SESSIONS, assets, seed=18)
        with httpx.Client(base_url=base, timeout=30) as client:
            play_sessions.play_all(client, plans, player, seconds_per_s=SECONDS_PER_S)
        truth = Truth(plans)

        def derived() -> bool:
            views.update(rt)
            with rt.db.session() as s:
                return view_rows.count_views(s) == len(truth.views) and not view_rows.count_marks(s)

        wait_until(derived, "every played session's view")
        with httpx.Client(base_url=base, timeout=30, headers={"Authorization": reader}) as client:
            yield client, truth, assets


def test_every_endpoint_equals_the_truth(played) -> None:
    client, truth, assets = played
    now = utcnow()
    window = {
        "date_time_from": (now - timedelta(hours=2)).isoformat(),
        "date_time_to": (now + timedelta(hours=1)).isoformat(),
    }

    def get(path: str, **query: Any) -> Any:
        r = client.get(f"/analytics/v1/{path}", params={**window, **query})
        assert r.status_code == 200, (path, r.text)
        return r.json()

    def summary(metric: str) -> int:
        return get(f"{metric}/summary")["data"][0]["attributes"]["value"]

    def by(metric: str, dimension: str) -> dict[str, int]:
        data = get(f"{metric}/{dimension}", _limit=10_000)["data"]
        return {d["attributes"]["point"]: d["attributes"]["value"] for d in data}

    counted = truth.counted_views()
    assert len(counted) > 40 and len(truth.views) - len(counted) > 10  # both kinds occur
    assert summary("total-views") == len(counted)
    assert close(summary("unique-devices"), len({p.device_id for p in counted}))
    assert close(summary("unique-viewers"), len({truth.viewer(p) for p in counted}))
    assert close(summary("authenticated-viewers"), len({p.user_id for p in counted if p.user_id}))
    assert by("total-views", "location") == dict(Counter(p.country or "unknown" for p in counted))
    assert by("total-views", "device") == dict(Counter(p.device_class for p in counted))
    assert by("total-views", "view-source") == dict(
        Counter(p.playout if p.tracked else "unknown" for p in counted)
    )
    devices_by_country = defaultdict(set)
    for p in counted:
        devices_by_country[p.country or "unknown"].add(p.device_id)
    for country, n in by("unique-devices", "location").items():
        assert close(n, len(devices_by_country[country]))
    assert sum(by("total-views", "hour").values()) == len(counted)
    for asset in assets:
        mine = get("total-views/recorded/summary", content_id=asset)["data"][0]["attributes"]
        assert mine["value"] == len(truth.counted_views(asset))

    listed = get("views", _limit=1)
    assert listed["pagination"]["count"] == sum(truth.sections(p) for p in truth.views)
    viewers = get("viewers", _limit=1)
    assert viewers["pagination"]["count"] == len({truth.viewer(p) for p in truth.views})

    # Quality of experience: every view, counted or not.
    qoe = get("qoe")["data"][0]["attributes"]
    assert qoe["plays"] == len(truth.views)
    failed = sum(1 for p in truth.views if p.ending == "error")
    assert qoe["playback_failure_rate"] == pytest.approx(failed / len(truth.views))
    stalled = sum(sum(p.rebuffer_s) for p in truth.views)
    played = {p.index: p.played_s(SECONDS_PER_S) for p in truth.views}
    playing = sum(sum(spans) for spans in played.values())
    assert qoe["rebuffer_ratio"] == pytest.approx(stalled / (playing + stalled), abs=0.005)
    startups = sorted(p.startup_ms for p in truth.views)
    for key, rank in (("startup_time_p50_ms", 0.5), ("startup_time_p95_ms", 0.95)):
        found = sum(1 for s in startups if s <= qoe[key]) / len(startups)
        assert abs(found - rank) <= 0.03, (key, found)
    weighted = sum(
        rate * span
        for p in truth.views
        for span, rate in zip(played[p.index], p.bitrates, strict=True)
    )
    assert qoe["average_bitrate"] == pytest.approx(weighted / playing, rel=0.01)
    by_protocol = {
        d["attributes"]["point"]: d["attributes"]["plays"]
        for d in get("qoe", dimension="protocol")["data"]
    }
    assert by_protocol == dict(Counter(p.protocol for p in truth.views))

    # Retention of the longest asset, percent by percent.
    longest = max(assets, key=assets.get)
    mine = truth.counted_views(longest)
    shares = [d["attributes"]["share"] for d in get(f"assets/{longest}/retention")["data"]]
    duration = assets[longest]
    for percent in range(101):

        def at(a: float, b: float, percent: int = percent) -> bool:
            first = math.ceil(a / duration * 100 - 1e-9)
            return first <= percent <= math.floor(b / duration * 100 + 1e-9)

        watching = sum(1 for p in mine if any(at(a, b) for a, b in p.sections))
        assert shares[percent] == pytest.approx(watching / len(mine), abs=1e-6), percent

    # Content performance, per asset.
    perf = client.get("/analytics/v1/content-performance", params={"period": "today"}).json()
    rows = {r["content_id"]: r for r in perf["data"]}
    for asset in assets:
        plays = [p for p in truth.views if p.asset_id == asset]
        mine = truth.counted_views(asset)
        row = rows[asset]
        assert (row["total_plays"], row["views"]) == (len(plays), len(mine))
        assert row["completion_rate"] == pytest.approx(
            sum(1 for p in mine if truth.completed(p)) / len(mine)
        )
        assert close(row["unique_viewers"], len({truth.viewer(p) for p in mine}))
        assert row["watch_hours"] == pytest.approx(sum(p.watched_s for p in mine) / 3600, rel=1e-3)
