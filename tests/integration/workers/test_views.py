"""workers/views.py on SQLite and PostgreSQL: sessions made and fed as the playback
routes do become views once marked; rollups of closed hours and days are idempotent,
re-made when a late record changes a view in them, and never made past the raw
retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from playback_support import packaged_asset
from sqlalchemy import select

from mediamill.schemas.analytics import Audience, View, ViewSection
from mediamill.schemas.base import utcnow
from mediamill.schemas.playback import ClientFacts, EventBatchRecord, EventRecord, EventType
from mediamill.storage import playback as playback_rows
from mediamill.storage import views as view_rows
from mediamill.storage.models import RollupBucketRow, ViewRollupRow, ViewRow
from mediamill.workers import playback, views
from mediamill.workers.runtime import Runtime

pytestmark = pytest.mark.integration

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)


@pytest.fixture
def rt(analytics_rt: Runtime) -> Runtime:
    return analytics_rt


def _events(sid: str, *spec: tuple[int, str, float, float]) -> EventBatchRecord:
    now = utcnow()
    return EventBatchRecord(
        session_id=sid,
        events=[
            EventRecord(
                session_id=sid,
                seq=seq,
                type=EventType(kind),
                occurred_at=now + timedelta(seconds=t),
                received_at=now + timedelta(seconds=t + 0.5),
                position_seconds=pos,
                data={},
            )
            for seq, kind, t, pos in spec
        ],
    )


def test_a_fed_session_becomes_a_view_with_its_audience(rt: Runtime) -> None:
    asset_id = packaged_asset(rt, duration_ms=600_000)
    created = playback.create_playback_session(
        rt,
        asset_id,
        "phone-1",
        None,
        "client",
        ClientFacts(address="81.2.69.142", user_agent=IPHONE),
    )
    sid = created.session_id
    with rt.db.session() as s:
        playback_rows.write_buffered(s, [_events(sid, (0, "playing", 0, 0), (1, "pause", 40, 40))])
    result = views.update(rt)
    assert result.derived == 1
    with rt.db.session() as s:
        view = s.scalars(select(ViewRow).where(ViewRow.id == sid)).one_or_none()
        assert view is not None
        assert (view.country, view.device_class, view.watched_ms, view.counted) == (
            "GB",
            "mobile",
            40_000,
            True,
        )
        assert view.device_info["os"]["family"] == "iOS"
        assert view.viewer_id == "device:phone-1" and not view.authenticated
        # Privacy: neither the address nor the user-agent string is stored anywhere.
        session_row = playback_rows.playback_session_row(s, sid)
        stored = " ".join(
            str(getattr(row, c.key))
            for row in (session_row, view)
            for c in type(row).__table__.columns
        )
        assert "81.2.69.142" not in stored and "AppleWebKit" not in stored
        assert view_rows.count_marks(s) == 0
    # A late event (a seek back and more watching) re-derives it.
    with rt.db.session() as s:
        playback_rows.write_buffered(
            s, [_events(sid, (2, "playing", 50, 40), (3, "pause", 70, 60))]
        )
    assert views.update(rt).derived == 1
    with rt.db.session() as s:
        assert s.scalars(select(ViewRow).where(ViewRow.id == sid)).one().watched_ms == 60_000


def _view(
    vid: str, at: datetime, *, viewer: str = "v", device: str = "d", counted: bool = True
) -> View:
    return View(
        view_id=vid,
        session_id=vid,
        asset_id="a" * 64,
        viewer_id=viewer,
        authenticated=False,
        device_id=device,
        audience=Audience(country="HU"),
        duration_ms=600_000,
        started_at=at,
        finished_at=at + timedelta(minutes=1),
        last_activity_at=at + timedelta(minutes=1),
        watched_ms=60_000 if counted else 1000,
        counted=counted,
        completed=False,
        sections=[
            ViewSection(from_s=0, to_s=60, started_at=at, finished_at=at + timedelta(minutes=1))
        ],
    )


def _rollups(rt: Runtime) -> list[tuple]:
    with rt.db.session() as s:
        rows = s.scalars(select(ViewRollupRow)).all()
        return sorted(
            (
                r.level,
                r.bucket_at.astimezone(UTC),
                r.asset_id,
                r.dimension,
                r.value,
                r.views,
                r.plays,
                bytes(r.viewers),
            )
            for r in rows
        )


def test_rollups_are_idempotent_and_a_late_view_re_rolls_its_hour(rt: Runtime) -> None:
    now = datetime.now(UTC).replace(minute=30, second=0, microsecond=0)
    hour = now.replace(minute=0) - timedelta(hours=3)
    with rt.db.session() as s:
        view_rows.replace_views(
            s,
            [
                _view(f"v{i}", hour + timedelta(minutes=i), viewer=f"viewer{i % 3}")
                for i in range(6)
            ],
        )
    first = views.update(rt, now=now)
    assert first.hours_rolled == 1
    rolled = _rollups(rt)
    whole = [r for r in rolled if r[0] == "h" and r[2] == "" and r[3] == ""]
    assert [(r[5], r[6]) for r in whole] == [(6, 6)]
    assert views.update(rt, now=now).hours_rolled == 0  # nothing stale: nothing done
    with rt.db.session() as s:  # rolling again from scratch makes the same rows
        s.execute(RollupBucketRow.__table__.update().values(rolled_version=0))
    assert views.update(rt, now=now).hours_rolled == 1
    assert _rollups(rt) == rolled
    with rt.db.session() as s:  # a late view lands in the rolled hour
        view_rows.replace_views(s, [_view("late", hour + timedelta(minutes=59))])
        assert view_rows.clean_buckets(s, "h", hour, hour + timedelta(hours=1)) == set()
    assert views.update(rt, now=now).hours_rolled == 1
    whole = [r for r in _rollups(rt) if r[0] == "h" and r[2] == "" and r[3] == ""]
    assert [(r[5], r[6]) for r in whole] == [(7, 7)]


def test_the_current_hour_and_days_not_closed_stay_raw(rt: Runtime) -> None:
    now = datetime.now(UTC).replace(minute=30)
    with rt.db.session() as s:
        view_rows.replace_views(s, [_view("now", now - timedelta(seconds=5))])
    result = views.update(rt, now=now)
    assert (result.hours_rolled, result.days_rolled) == (0, 0)
    assert views.has_work(rt, now=now) is False
    later = now + timedelta(days=1, hours=1)
    assert views.has_work(rt, now=later) is True
    result = views.update(rt, now=later)
    assert (result.hours_rolled, result.days_rolled) == (1, 1)


def test_buckets_past_the_raw_retention_are_never_rolled(rt: Runtime) -> None:
    now = datetime.now(UTC)
    old = now - timedelta(days=rt.settings.analytics_raw_retention_days + 3)
    with rt.db.session() as s:
        view_rows.replace_views(s, [_view("old", old), _view("new", now - timedelta(days=1))])
    result = views.update(rt, now=now)
    assert (result.purged, result.days_rolled) == (1, 1)  # the old one gone, not rolled
    assert [r for r in _rollups(rt) if r[1] < now - timedelta(days=80)] == []
    with rt.db.session() as s:
        assert view_rows.count_views(s) == 1


def test_ended_sessions_past_the_retention_are_purged_with_their_records(rt: Runtime) -> None:
    asset_id = packaged_asset(rt)
    old = utcnow() - timedelta(days=rt.settings.analytics_raw_retention_days + 1)
    kept = playback.create_playback_session(rt, asset_id, "dev-new", None, "client")
    gone = playback.create_playback_session(rt, asset_id, "dev-old", None, "client")
    with rt.db.session() as s:
        playback_rows.write_buffered(s, [_events(gone.session_id, (0, "playing", 0, 0))])
        row = playback_rows.playback_session_row(s, gone.session_id)
        row.created_at, row.ended_at, row.status = old, old, "ended"
    views.update(rt)
    with rt.db.session() as s:
        assert playback_rows.playback_session_row(s, gone.session_id) is None
        assert playback_rows.playback_session_row(s, kept.session_id) is not None
        assert playback_rows.count_stored(s, [gone.session_id]).events == 0


def test_a_session_that_never_played_is_no_view(rt: Runtime) -> None:
    asset_id = packaged_asset(rt)
    created = playback.create_playback_session(rt, asset_id, "dev", None, "client")
    with rt.db.session() as s:
        playback_rows.end_playback_session(
            s, created.session_id, playback.EndReason.CLIENT, utcnow()
        )
    result = views.update(rt)
    assert (result.derived, result.removed) == (0, 1)
    with rt.db.session() as s:
        assert view_rows.count_views(s) == 0 and view_rows.count_marks(s) == 0


def test_postgresql_keeps_monthly_partitions(rt: Runtime, database_url: str | None) -> None:
    from sqlalchemy import text

    now = datetime.now(UTC)
    stale = now - timedelta(days=rt.settings.analytics_raw_retention_days + 70)
    if database_url is None:
        with rt.db.session() as s:
            assert view_rows.ensure_partitions(s, now, 90) == ([], [])
        return
    with rt.db.session() as s:  # a partition of a month long past the retention
        name = f"views_y{stale.year:04d}m{stale.month:02d}"
        first = stale.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (first + timedelta(days=32)).replace(day=1)
        s.execute(
            text(
                f"CREATE TABLE {name} PARTITION OF views FOR VALUES FROM "
                f"('{first.isoformat()}') TO ('{end.isoformat()}')"
            )
        )
        made, dropped = view_rows.ensure_partitions(
            s, now, rt.settings.analytics_raw_retention_days
        )
    assert dropped == [name]
    assert f"views_y{now.year:04d}m{now.month:02d}" in made
    cutoff = now - timedelta(days=rt.settings.analytics_raw_retention_days)
    ahead = (now.replace(day=1) + timedelta(days=62)).replace(day=1)
    for month in (cutoff, now, ahead):  # the retention's first month to two months ahead
        for table in ("views", "view_sections"):
            assert f"{table}_y{month.year:04d}m{month.month:02d}" in made
    with rt.db.session() as s:
        view_rows.replace_views(s, [_view("p1", now)])
        where = s.execute(text("SELECT tableoid::regclass::text FROM views")).scalar()
        assert where == f"views_y{now.year:04d}m{now.month:02d}"
        assert view_rows.ensure_partitions(s, now, rt.settings.analytics_raw_retention_days) == (
            [],
            [],
        )


def test_a_view_past_the_retention_never_makes_its_bucket_stale(rt: Runtime) -> None:
    """Its raw views may be purged: a rollup of such a bucket stands as it is."""
    now = datetime.now(UTC)
    cutoff = now - timedelta(days=rt.settings.analytics_raw_retention_days)
    old = cutoff - timedelta(days=2)
    with rt.db.session() as s:
        view_rows.replace_views(s, [_view("old", old)])
        s.execute(RollupBucketRow.__table__.update().values(rolled_version=RollupBucketRow.version))
    with rt.db.session() as s:
        view_rows.replace_views(s, [], ["old"], bump_from=cutoff)
        hour = old.replace(minute=0, second=0, microsecond=0)
        assert view_rows.clean_buckets(s, "h", hour, hour + timedelta(hours=1)) == {hour}
