"""workers/analytics.py on SQLite and PostgreSQL: every count over any range equals the
truth computed here from the generated views, whether the range's buckets are rolled
up, stale (a late view landed), not closed yet, or cut at a range's edge; unique
counts are within the sketches' bounds."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from mediamill.schemas.analytics import Audience, DeviceClass, View, ViewSection
from mediamill.storage import views as view_rows
from mediamill.workers import views
from mediamill.workers.analytics import Dimension, Granularity, Metric, peaks, series
from mediamill.workers.runtime import Runtime

pytestmark = pytest.mark.integration

ASSETS = ["a" * 64, "b" * 64, "c" * 64]
COUNTRIES = ["HU", "US", "GB", None]
CLASSES = [DeviceClass.DESKTOP, DeviceClass.MOBILE, DeviceClass.TV]


@pytest.fixture
def rt(analytics_rt: Runtime) -> Runtime:
    return analytics_rt


def generated(
    rng: random.Random, count: int, start: datetime, span_s: int, prefix: str
) -> list[View]:
    out = []
    for i in range(count):
        at = start + timedelta(seconds=rng.randrange(span_s))
        viewer = rng.randrange(800)
        authenticated = viewer % 4 == 0
        counted = rng.random() < 0.8
        out.append(
            View(
                view_id=f"{prefix}{i}",
                session_id=f"{prefix}{i}",
                asset_id=rng.choice(ASSETS),
                viewer_id=f"user-{viewer}" if authenticated else f"ts-{viewer}",
                authenticated=authenticated,
                device_id=f"dev-{rng.randrange(1200)}",
                audience=Audience(
                    country=rng.choice(COUNTRIES),
                    device_class=rng.choice(CLASSES),
                    source=rng.choice(["site", "app"]),
                ),
                duration_ms=600_000,
                started_at=at,
                finished_at=at + timedelta(seconds=60),
                last_activity_at=at + timedelta(seconds=60),
                watched_ms=60_000 if counted else 5_000,
                counted=counted,
                completed=False,
                sections=[
                    ViewSection(
                        from_s=0, to_s=60, started_at=at, finished_at=at + timedelta(seconds=60)
                    )
                ],
            )
        )
    return out


def write(rt: Runtime, made: list[View]) -> None:
    for i in range(0, len(made), 500):
        with rt.db.session() as s:
            view_rows.replace_views(s, made[i : i + 500])


def truth(made: list[View], a: datetime, b: datetime, key, assets=None) -> dict:
    groups: dict = defaultdict(
        lambda: {"views": 0, "devices": set(), "viewers": set(), "auth": set()}
    )
    for v in made:
        if not (a <= v.started_at < b) or not v.counted or (assets and v.asset_id not in assets):
            continue
        g = groups[key(v)]
        g["views"] += 1
        g["devices"].add(v.device_id)
        g["viewers"].add(v.viewer_id)
        if v.authenticated:
            g["auth"].add(v.viewer_id)
    return groups


def close(estimate: int, exact: int, share: float) -> bool:
    return abs(estimate - exact) <= max(1, exact * share)


def check(rt: Runtime, made: list[View], a: datetime, b: datetime, assets=None) -> None:
    whole = truth(made, a, b, lambda v: "", assets).get("")
    got = {m: series(rt, m, Dimension.SUMMARY, a, b, assets)[0].value for m in Metric}
    exact = whole or {"views": 0, "devices": set(), "viewers": set(), "auth": set()}
    assert got[Metric.TOTAL_VIEWS] == exact["views"], (a, b)
    assert close(got[Metric.UNIQUE_DEVICES], len(exact["devices"]), 0.01)
    assert close(got[Metric.UNIQUE_VIEWERS], len(exact["viewers"]), 0.01)
    assert close(got[Metric.AUTHENTICATED_VIEWERS], len(exact["auth"]), 0.01)
    by_country = truth(made, a, b, lambda v: v.audience.country or "unknown", assets)
    points = series(rt, Metric.TOTAL_VIEWS, Dimension.LOCATION, a, b, assets)
    assert {p.point: p.value for p in points} == {k: g["views"] for k, g in by_country.items()}
    by_device = truth(made, a, b, lambda v: v.audience.device_class.value, assets)
    points = series(rt, Metric.UNIQUE_DEVICES, Dimension.DEVICE, a, b, assets)
    for p in points:
        assert close(p.value, len(by_device[p.point]["devices"]), 0.01)
    day = lambda v: v.started_at.replace(hour=0, minute=0, second=0, microsecond=0)  # noqa: E731
    by_day = truth(made, a, b, day, assets)
    points = series(rt, Metric.TOTAL_VIEWS, Dimension.DAY, a, b, assets)
    assert {p.point: p.value for p in points if p.value} == {
        k: g["views"] for k, g in by_day.items()
    }


def test_every_count_equals_the_truth_rolled_up_stale_raw_or_cut(rt: Runtime) -> None:
    rng = random.Random(18)
    now = datetime.now(UTC).replace(minute=40, second=0, microsecond=0)
    start = now.replace(minute=0) - timedelta(days=10)
    made = generated(rng, 3000, start, 10 * 86400, "v")
    made += generated(rng, 40, now.replace(minute=0), 40 * 60, "tail")  # the open hour
    write(rt, made)
    while views.update(rt, now=now).hours_rolled:
        pass
    rolled_hour = start + timedelta(days=3, hours=5)
    late = generated(rng, 30, rolled_hour, 3600, "late")
    write(rt, late)  # not rolled again yet: its hour and day read raw
    made += late
    with rt.db.session() as s:
        assert rolled_hour not in view_rows.clean_buckets(s, "h", start, now)
        assert len(view_rows.clean_buckets(s, "d", start, now)) >= 8
    end = now + timedelta(hours=1)
    ranges = [
        (start, end),  # everything: days, hours, stale, the open hour
        (start + timedelta(hours=7, minutes=13), end - timedelta(hours=30, minutes=7)),  # cut edges
        (rolled_hour, rolled_hour + timedelta(hours=1)),  # the stale hour alone
        (start + timedelta(days=2), start + timedelta(days=3)),  # one whole day
        (now - timedelta(minutes=10), end),  # the raw tail
    ]
    for a, b in ranges:
        check(rt, made, a, b)
    check(rt, made, start, end, assets=ASSETS[:2])
    while views.update(rt, now=now).hours_rolled:
        pass
    check(rt, made, start, end)  # rolled again: the same answers


def test_unique_counts_at_ten_thousand_viewers_within_one_percent(rt: Runtime) -> None:
    """Item 3 on the database: 10,000 distinct viewers over 89 days, every 6th hour."""
    rng = random.Random(3)
    now = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
    start = now.replace(minute=0) - timedelta(days=89)  # inside the raw retention
    made = []
    for i in range(20_000):
        hour = start + timedelta(hours=6 * rng.randrange(90 * 4))
        at = hour + timedelta(seconds=rng.randrange(3600))
        viewer = i % 10_000
        made.append(
            View(
                view_id=f"u{i}",
                session_id=f"u{i}",
                asset_id=ASSETS[0],
                viewer_id=f"viewer-{viewer}",
                authenticated=True,
                device_id=f"device-{viewer}",
                audience=Audience(),
                duration_ms=None,
                started_at=at,
                finished_at=None,
                last_activity_at=at,
                watched_ms=60_000,
                counted=True,
                completed=False,
            )
        )
    write(rt, made)
    while views.update(rt, now=now, budget_s=120).hours_rolled:
        pass
    for a, b in (
        (start, now),
        (start + timedelta(days=30), start + timedelta(days=31)),
        (
            made[0].started_at.replace(minute=0, second=0),
            made[0].started_at.replace(minute=0, second=0) + timedelta(hours=1),
        ),
    ):
        exact = truth(made, a, b, lambda v: "").get("")
        got = series(rt, Metric.UNIQUE_VIEWERS, Dimension.SUMMARY, a, b)[0].value
        assert close(got, len(exact["viewers"]), 0.01), (a, b, got, len(exact["viewers"]))
        assert series(rt, Metric.TOTAL_VIEWS, Dimension.SUMMARY, a, b)[0].value == exact["views"]


def test_peaks_count_views_playing_at_once(rt: Runtime) -> None:
    base = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)

    def span(vid: str, asset: str, a_min: float, b_min: float | None, last_min: float) -> View:
        at = base + timedelta(minutes=a_min)
        return View(
            view_id=vid,
            session_id=vid,
            asset_id=asset,
            viewer_id=vid,
            authenticated=False,
            device_id=vid,
            audience=Audience(),
            duration_ms=None,
            started_at=at,
            finished_at=base + timedelta(minutes=b_min) if b_min is not None else None,
            last_activity_at=base + timedelta(minutes=last_min),
            watched_ms=1,
            counted=True,
            completed=False,
        )

    write(
        rt,
        [
            span("p1", ASSETS[0], 0.5, 3.2, 3.2),  # minutes 0..3
            span("p2", ASSETS[0], 2.0, 2.5, 2.5),  # minute 2
            span("p3", ASSETS[1], 1.0, None, 4.9),  # unfinished: until its last activity
            span("p4", ASSETS[1], 70, 75, 75),  # the next hour
        ],
    )
    count, got = peaks(rt, Granularity.MINUTE, base, base + timedelta(minutes=6))
    assert count == 6 and [p.value for p in got] == [1, 2, 3, 2, 1, 0]
    count, per_asset = peaks(rt, Granularity.MINUTE, base, base + timedelta(minutes=6), ASSETS[:2])
    assert count == 12
    assert [p.value for p in per_asset if p.content_id == ASSETS[0]] == [1, 1, 2, 1, 0, 0]
    assert [p.value for p in per_asset if p.content_id == ASSETS[1]] == [0, 1, 1, 1, 1, 0]
    _, page = peaks(
        rt, Granularity.MINUTE, base, base + timedelta(minutes=6), ASSETS[:2], offset=4, limit=4
    )
    assert [(p.content_id, p.value) for p in page] == [
        (ASSETS[0], 0),
        (ASSETS[0], 0),
        (ASSETS[1], 0),
        (ASSETS[1], 1),
    ]
    count, hourly = peaks(rt, Granularity.HOUR, base, base + timedelta(hours=2))
    assert count == 2 and [p.value for p in hourly] == [3, 1]


def qoe_views(rng: random.Random, count: int, start: datetime) -> list[View]:
    out = []
    for i in range(count):
        at = start + timedelta(seconds=rng.randrange(6 * 3600))
        playing = rng.randrange(10_000, 300_000)
        coverage_to = rng.randrange(0, 101)
        out.append(
            View(
                view_id=f"q{i}",
                session_id=f"q{i}",
                asset_id=rng.choice(ASSETS[:2]),
                viewer_id=f"viewer-{rng.randrange(300)}",
                authenticated=False,
                device_id=f"dev-{i}",
                audience=Audience(device_class=rng.choice(CLASSES)),
                duration_ms=600_000,
                started_at=at,
                finished_at=at,
                last_activity_at=at,
                watched_ms=playing,
                counted=rng.random() < 0.7,
                completed=rng.random() < 0.3,
                startup_ms=rng.randrange(100, 5000),
                playing_ms=playing,
                rebuffer_ms=rng.choice([0, 0, rng.randrange(100, 20_000)]),
                failed=rng.random() < 0.05,
                protocol=rng.choice(["hls", "dash", None]),
                rendition=rng.choice(["360p", "720p", "1080p"]),
                avg_bitrate=rng.choice([800_000, 2_500_000, 5_000_000]),
                coverage=format((1 << (coverage_to + 1)) - 1, "x"),
            )
        )
    return out


def test_quality_retention_and_performance_equal_the_truth(rt: Runtime) -> None:
    from mediamill.workers.analytics import QoeDimension, content_performance, qoe, retention

    rng = random.Random(44)
    now = datetime.now(UTC).replace(minute=20, second=0, microsecond=0)
    start = now.replace(minute=0) - timedelta(hours=5)
    made = qoe_views(rng, 1500, start)
    write(rt, made)
    while views.update(rt, now=now).hours_rolled:  # some hours rolled, the last one raw
        pass
    end = now + timedelta(hours=2)
    for dimension, key in (
        (QoeDimension.SUMMARY, lambda v: "summary"),
        (QoeDimension.PROTOCOL, lambda v: v.protocol or "unknown"),
        (QoeDimension.RENDITION, lambda v: v.rendition),
        (QoeDimension.DEVICE, lambda v: v.audience.device_class.value),
    ):
        got = {q.value: q for q in qoe(rt, dimension, start, end)}
        groups = defaultdict(list)
        for v in made:
            groups[key(v)].append(v)
        assert set(got) == set(groups)
        for value, members in groups.items():
            q = got[value]
            assert q.plays == len(members)
            playing = sum(v.playing_ms for v in members)
            rebuffer = sum(v.rebuffer_ms for v in members)
            assert q.rebuffer_ratio == pytest.approx(rebuffer / (playing + rebuffer))
            assert q.failure_rate == pytest.approx(sum(v.failed for v in members) / len(members))
            weighted = sum(v.avg_bitrate * v.playing_ms for v in members)
            assert q.avg_bitrate == round(weighted / playing)
            startups = sorted(v.startup_ms for v in members)
            for rank, found in ((0.5, q.startup_p50_ms), (0.95, q.startup_p95_ms)):
                exact_rank = sum(1 for s in startups if s <= found) / len(startups)
                assert abs(exact_rank - rank) <= 0.02, (value, rank, exact_rank)
    counted = [v for v in made if v.counted and v.asset_id == ASSETS[0]]
    got = retention(rt, ASSETS[0], start, end)
    assert got.views == len(counted)
    for p in (0, 1, 37, 99, 100):
        watching = sum(1 for v in counted if int(v.coverage, 16) >> p & 1)
        assert got.shares[p] == pytest.approx(watching / len(counted))
    performance = {c.content_id: c for c in content_performance(rt, start, end)}
    for asset in ASSETS[:2]:
        mine = [v for v in made if v.asset_id == asset]
        mine_counted = [v for v in mine if v.counted]
        c = performance[asset]
        assert (c.total_plays, c.views) == (len(mine), len(mine_counted))
        assert c.completion_rate == pytest.approx(
            sum(v.completed for v in mine_counted) / len(mine_counted)
        )
        assert c.unique_viewers == len({v.viewer_id for v in mine_counted})
    assert ASSETS[2] not in performance


def test_erasing_a_viewer_keeps_counts_and_rebuilds_sketches(rt: Runtime) -> None:
    from mediamill.schemas.audit import AuditActor
    from mediamill.storage import audit

    now = datetime.now(UTC).replace(minute=20, second=0, microsecond=0)
    hour = now.replace(minute=0) - timedelta(days=1)  # its day has closed: rolled up too
    made = [
        View(
            view_id=f"e{i}",
            session_id=f"e{i}",
            asset_id=ASSETS[0],
            viewer_id="alice@example.com" if i < 3 else f"other-{i}",
            authenticated=i < 3,
            device_id=f"dev-{i}",
            audience=Audience(country="HU"),
            duration_ms=None,
            started_at=hour + timedelta(minutes=i),
            finished_at=None,
            last_activity_at=hour + timedelta(minutes=i),
            watched_ms=60_000,
            counted=True,
            completed=False,
        )
        for i in range(10)
    ]
    write(rt, made)
    while views.update(rt, now=now).hours_rolled:
        pass
    a, b = hour, hour + timedelta(hours=1)

    def figures() -> tuple[int, int, int]:
        return (
            series(rt, Metric.TOTAL_VIEWS, Dimension.SUMMARY, a, b)[0].value,
            series(rt, Metric.UNIQUE_VIEWERS, Dimension.SUMMARY, a, b)[0].value,
            series(rt, Metric.AUTHENTICATED_VIEWERS, Dimension.SUMMARY, a, b)[0].value,
        )

    assert figures() == (10, 8, 1)
    actor = AuditActor(actor_id="admin-1", actor_role="admin")
    done = views.erase_viewer(rt, "alice@example.com", actor)
    assert (done.views, done.buckets_rebuilt) == (3, 2)  # its hour and its day
    assert figures() == (10, 7, 0)  # counts stay; she is in no sketch
    with rt.db.session() as s:
        assert view_rows.count_views(s) == 7
        entries, _ = audit.list_entries(s, action="viewer.erased")
    assert len(entries) == 1 and "alice" not in entries[0].resource_id
    assert entries[0].resource_id == views.viewer_reference("alice@example.com")
    assert entries[0].metadata["views"] == 3


def test_an_erasure_waits_for_a_running_update_and_never_runs_beside_one(
    rt: Runtime, database_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mediamill.schemas.audit import AuditActor
    from mediamill.schemas.errors import AnalyticsBusyError

    actor = AuditActor(actor_id="admin-1", actor_role="admin")
    monkeypatch.setattr(views, "ERASE_WAIT_S", 0.5)
    with view_rows.exclusive_update(rt.db.engine) as mine:
        assert mine
        if database_url is None:  # SQLite: one process owns the file, no lock to wait on
            assert views.erase_viewer(rt, "nobody", actor).views == 0
            return
        with pytest.raises(AnalyticsBusyError):
            views.erase_viewer(rt, "nobody", actor)
    assert views.erase_viewer(rt, "nobody", actor).views == 0  # the lock is free again
