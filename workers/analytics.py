"""View analytics queries: counts and unique counts over any range, read from the
rollups where a bucket is rolled up and current, and from the raw views elsewhere (the
hour not yet closed, a bucket a late record made stale, the partial hours at a
range's edges). So an answer is exact for counts whatever the range, and as close as
the sketches for unique counts, and a view shows within a minute of its records.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy.orm import Session

from mediamill.pipeline.rollups import PERCENTS, ROW_FIELDS, Total, aggregate
from mediamill.schemas.errors import InvalidRequestError
from mediamill.storage import views as view_rows
from mediamill.storage.views import DAY, HOUR, LEVEL_DAY, LEVEL_HOUR, day_of, hour_of
from mediamill.workers.runtime import Runtime


class Metric(StrEnum):
    TOTAL_VIEWS = "total-views"
    UNIQUE_DEVICES = "unique-devices"
    AUTHENTICATED_VIEWERS = "authenticated-viewers"
    UNIQUE_VIEWERS = "unique-viewers"


class Dimension(StrEnum):
    SUMMARY = "summary"
    MONTH = "month"
    DAY = "day"
    HOUR = "hour"
    LOCATION = "location"
    DEVICE = "device"
    VIEW_SOURCE = "view-source"


TIME_DIMENSIONS = {Dimension.MONTH, Dimension.DAY, Dimension.HOUR}


@dataclass(frozen=True)
class Point:
    """One item of a series: `point` is a bucket's start or a dimension's value."""

    dimension: Dimension
    point: datetime | str
    value: int


_SKETCH = {
    Metric.UNIQUE_DEVICES: "devices",
    Metric.AUTHENTICATED_VIEWERS: "auth_viewers",
    Metric.UNIQUE_VIEWERS: "viewers",
}
# The most buckets one breakdown answers: each holds a sum, or for a unique count a
# sketch union of tens of kilobytes.
MAX_PIECES = 100_000
MAX_UNIQUE_PIECES = 2_500


def _value(metric: Metric, total: Total) -> int:
    if metric is Metric.TOTAL_VIEWS:
        return total.views
    return total.unique(_SKETCH[metric])


def _next_boundary(at: datetime, dimension: Dimension, zone: ZoneInfo) -> datetime:
    """The first boundary of the zone's hours, days or months after `at`, in UTC."""
    local = at.astimezone(zone)
    if dimension is Dimension.HOUR:
        floor = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        return floor + HOUR
    if dimension is Dimension.DAY:
        nxt = datetime.combine(local.date() + timedelta(days=1), time(), tzinfo=zone)
    else:
        year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
        nxt = datetime(year, month, 1, tzinfo=zone)
    return nxt.astimezone(UTC)


def _floor(at: datetime, dimension: Dimension, zone: ZoneInfo) -> datetime:
    """The start of the zone's hour, day or month that holds `at` (a point's label)."""
    local = at.astimezone(zone).replace(minute=0, second=0, microsecond=0)
    if dimension is Dimension.HOUR:
        return local
    local = local.replace(hour=0)
    return local if dimension is Dimension.DAY else local.replace(day=1)


def _pieces(
    start: datetime, end: datetime, dimension: Dimension, zone: ZoneInfo, cap: int
) -> list[tuple[datetime, datetime]]:
    """[start, end) cut at the zone's month, day or hour boundaries (at most `cap`
    pieces, else InvalidRequestError)."""
    if dimension not in TIME_DIMENSIONS:
        return [(start, end)]
    out: list[tuple[datetime, datetime]] = []
    cursor = start
    while cursor < end:
        if len(out) >= cap:
            raise InvalidRequestError(
                f"a breakdown by {dimension.value} of this range has more than {cap:,} "
                "points: narrow the range or ask for a coarser dimension"
            )
        piece_end = min(end, _next_boundary(cursor, dimension, zone))
        out.append((cursor, piece_end))
        cursor = piece_end
    return out


@dataclass
class _Plan:
    days: set[datetime]
    hours: set[datetime]
    raw: list[tuple[datetime, datetime]]


def _plan(
    start: datetime,
    end: datetime,
    known: set[datetime],
    clean_h: set[datetime],
    clean_d: set[datetime],
) -> _Plan:
    """Which rolled-up days and hours, and which raw ranges, make [start, end)."""
    plan = _Plan(set(), set(), [])
    h = hour_of(start)
    while h < end:
        h_end = h + HOUR
        if h < start or h_end > end:
            if h in known:
                plan.raw.append((max(h, start), min(h_end, end)))
            h = h_end
            continue
        d = day_of(h)
        if h == d and d + DAY <= end and d in clean_d:
            plan.days.add(d)
            h = d + DAY
            continue
        if h in clean_h:
            plan.hours.add(h)
        elif h in known:
            plan.raw.append((h, h_end))
        h = h_end
    return plan


def _merged(ranges: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def totals(
    s: Session,
    pieces: list[tuple[datetime, datetime]],
    asset_ids: list[str] | None,
    dimension: str,
    *,
    per_asset: bool = False,
    retention: bool = False,
    needs: frozenset[str] | None = None,
) -> list[dict[str, Total]]:
    """For each piece of time, value of `dimension` ("" for none) -> Total; with
    `per_asset`, asset id -> Total instead (of the whole bucket). Hour rollups hold no
    per-asset breakdown nor retention (pipeline/rollups.aggregate): for those, whole
    days come from day rollups and the other hours from the raw views."""
    if not pieces:
        return []
    start, end = pieces[0][0], pieces[-1][1]
    known = view_rows.known_buckets(s, LEVEL_HOUR, hour_of(start), end)
    clean_h = view_rows.clean_buckets(s, LEVEL_HOUR, hour_of(start), end)
    if retention or ((asset_ids or per_asset) and dimension):
        clean_h = set()
    clean_d = view_rows.clean_buckets(s, LEVEL_DAY, day_of(start), end)
    plans = [_plan(a, b, known, clean_h, clean_d) for a, b in pieces]
    out: list[dict[str, Total]] = [defaultdict(lambda: Total(needs)) for _ in pieces]
    owner: dict[tuple[str, datetime], int] = {}
    for i, plan in enumerate(plans):
        owner.update({(LEVEL_DAY, d): i for d in plan.days})
        owner.update({(LEVEL_HOUR, h): i for h in plan.hours})
    for level in (LEVEL_DAY, LEVEL_HOUR):
        buckets = [at for (lv, at) in owner if lv == level]
        rows = view_rows.rollup_rows(s, level, buckets, asset_ids, dimension, per_asset=per_asset)
        for row in rows:
            i = owner[(level, row.bucket_at.astimezone(UTC))]
            key = row.asset_id if per_asset else row.value
            out[i][key].add_row(**{name: getattr(row, name) for name in ROW_FIELDS})
    for i, plan in enumerate(plans):
        for a, b in _merged(plan.raw):
            groups = aggregate(view_rows.view_figures(s, a, b, asset_ids))
            by_asset = per_asset or (retention and bool(asset_ids))  # retention is per asset
            for (asset, dim, value), agg in groups.items():
                if dim != dimension or bool(asset) != by_asset:
                    continue
                out[i][asset if per_asset else value].add(agg)
    return out


def series(
    rt: Runtime,
    metric: Metric,
    dimension: Dimension,
    start: datetime,
    end: datetime,
    asset_ids: list[str] | None = None,
) -> list[Point]:
    """The metric over [start, end): one point for `summary`, one per bucket of a time
    dimension (in MEDIAMILL_ANALYTICS_TZ), one per value of the others (largest first)."""
    zone = rt.settings.analytics_zone
    needs = frozenset() if metric is Metric.TOTAL_VIEWS else frozenset({_SKETCH[metric]})
    cap = MAX_PIECES if not needs else MAX_UNIQUE_PIECES
    pieces = _pieces(start, end, dimension, zone, cap)
    key = "" if dimension is Dimension.SUMMARY or dimension in TIME_DIMENSIONS else dimension.value
    with rt.db.session() as s:
        found = totals(s, pieces, asset_ids, key, needs=needs)
    if dimension is Dimension.SUMMARY:
        total = found[0].get("") if found else None
        return [Point(dimension, start, _value(metric, total) if total else 0)]
    if dimension in TIME_DIMENSIONS:
        return [
            Point(
                dimension, _floor(a, dimension, zone), _value(metric, got[""]) if "" in got else 0
            )
            for (a, _), got in zip(pieces, found, strict=True)
        ]
    points = [Point(dimension, value, _value(metric, t)) for value, t in found[0].items()]
    return sorted((p for p in points if p.value), key=lambda p: (-p.value, str(p.point)))


# ---- peak concurrent viewers ----------------------------------------------------------------


class Granularity(StrEnum):
    MINUTE = "minute"
    HOUR = "hour"


MINUTE = timedelta(minutes=1)
# A minute-by-minute answer covers at most this many days (44,640 points), an hourly
# one a year; both count minute by minute, for at most MAX_PEAK_SERIES assets at once.
MAX_MINUTE_RANGE_DAYS = 31
MAX_HOUR_RANGE_DAYS = 366
MAX_PEAK_SERIES = 20


@dataclass(frozen=True)
class Peak:
    content_id: str | None
    time: datetime
    value: int


def peaks(
    rt: Runtime,
    granularity: Granularity,
    start: datetime,
    end: datetime,
    asset_ids: list[str] | None = None,
    *,
    offset: int = 0,
    limit: int | None = None,
) -> tuple[int, list[Peak]]:
    """The most views playing at once in each minute (or hour) of [start, end): a view
    plays from its start until it finished (or, unfinished, its last activity). One
    series over every asset, or one per asset of `asset_ids` (at most MAX_PEAK_SERIES);
    (how many points in all, the points of [offset, offset + limit))."""
    if asset_ids and len(asset_ids) > MAX_PEAK_SERIES:
        raise InvalidRequestError(f"peaks take at most {MAX_PEAK_SERIES} content ids at once")
    span = MAX_MINUTE_RANGE_DAYS if granularity is Granularity.MINUTE else MAX_HOUR_RANGE_DAYS
    if end - start > timedelta(days=span):
        raise InvalidRequestError(f"{granularity.value} peaks cover at most {span} days")
    first = start.astimezone(UTC).replace(second=0, microsecond=0)
    minutes = max(1, -(-int((end - first).total_seconds()) // 60))
    series_keys: list[str | None] = list(asset_ids) if asset_ids else [None]
    counts = {key: np.zeros(minutes + 1, dtype=np.int32) for key in series_keys}
    with rt.db.session() as s:
        for asset, began, last in view_rows.view_spans(s, start, end, asset_ids):
            a = max(0, int((began - first).total_seconds() // 60))
            b = min(minutes - 1, int((last - first).total_seconds() // 60))
            if b < a:
                continue
            diff = counts[asset if asset_ids else None]
            diff[a] += 1
            diff[b + 1] -= 1
    zone = rt.settings.analytics_zone
    hour0 = hour_of(first)
    lead = int((first - hour0).total_seconds() // 60)
    per_series = minutes if granularity is Granularity.MINUTE else -(-(lead + minutes) // 60)
    total = per_series * len(series_keys)
    stop = total if limit is None else min(total, offset + limit)
    out: list[Peak] = []
    for index, key in enumerate(series_keys):
        lo, hi = index * per_series, (index + 1) * per_series
        if hi <= offset or lo >= stop:
            continue  # no point of this series is on the page
        live = np.cumsum(counts.pop(key))[:minutes]
        if granularity is Granularity.HOUR:
            padded = np.zeros(per_series * 60, dtype=live.dtype)
            padded[lead : lead + minutes] = live
            live = padded.reshape(per_series, 60).max(axis=1)
            step, origin = HOUR, hour0
        else:
            step, origin = MINUTE, first
        for i in range(max(offset, lo) - lo, min(stop, hi) - lo):
            out.append(Peak(key, (origin + i * step).astimezone(zone), int(live[i])))
    return total, out


# ---- beyond IBM: retention, quality of experience, content performance ----------------------


@dataclass(frozen=True)
class Retention:
    views: int  # counted views
    shares: list[float]  # of them, watching at 0%, 1%, ..., 100%


def retention(rt: Runtime, asset_id: str, start: datetime, end: datetime) -> Retention:
    """The share of the asset's counted views of [start, end) that watched each whole
    percent of its duration."""
    with rt.db.session() as s:
        found = totals(s, [(start, end)], [asset_id], "", retention=True, needs=frozenset())[0].get(
            ""
        )
    if found is None or not found.views:
        return Retention(0, [0.0] * PERCENTS)
    return Retention(found.views, [n / found.views for n in found.retention])


class QoeDimension(StrEnum):
    SUMMARY = "summary"
    RENDITION = "rendition"
    PROTOCOL = "protocol"
    DEVICE = "device"
    LOCATION = "location"


@dataclass(frozen=True)
class Qoe:
    value: str
    plays: int
    startup_p50_ms: float | None
    startup_p95_ms: float | None
    rebuffer_ratio: float | None
    failure_rate: float | None
    avg_bitrate: int | None


def _qoe(value: str, t: Total) -> Qoe:
    watched = t.playing_ms + t.rebuffer_ms
    return Qoe(
        value=value,
        plays=t.plays,
        startup_p50_ms=t.startup_ms(0.5),
        startup_p95_ms=t.startup_ms(0.95),
        rebuffer_ratio=t.rebuffer_ms / watched if watched else None,
        failure_rate=t.failed / t.plays if t.plays else None,
        avg_bitrate=round(t.bitrate_ms / t.bitrate_weight_ms) if t.bitrate_weight_ms else None,
    )


def qoe(
    rt: Runtime,
    dimension: QoeDimension,
    start: datetime,
    end: datetime,
    asset_ids: list[str] | None = None,
) -> list[Qoe]:
    """Quality of experience of every view (counted or not) that started in [start,
    end): startup time p50/p95, rebuffer ratio = rebuffering / (playing +
    rebuffering), failure rate (views with an `error`), average bitrate; over all,
    or by rendition, protocol, device or country (most plays first)."""
    key = "" if dimension is QoeDimension.SUMMARY else dimension.value
    with rt.db.session() as s:
        found = totals(s, [(start, end)], asset_ids, key, needs=frozenset())[0]
    if dimension is QoeDimension.SUMMARY:
        return [_qoe("summary", found.get("") or Total(()))]
    rows = [_qoe(value, t) for value, t in found.items() if t.plays]
    return sorted(rows, key=lambda q: (-q.plays, q.value))


class Period(StrEnum):
    TODAY = "today"
    LAST_7D = "last_7d"
    LAST_30D = "last_30d"
    LAST_90D = "last_90d"


def period_range(period: Period, now: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """`today` is since midnight in the analytics zone; the others the last N days."""
    if period is Period.TODAY:
        local = now.astimezone(zone)
        start = datetime.combine(local.date(), time(), tzinfo=zone).astimezone(UTC)
        return start, now
    days = {Period.LAST_7D: 7, Period.LAST_30D: 30, Period.LAST_90D: 90}[period]
    return now - timedelta(days=days), now


@dataclass(frozen=True)
class ContentPerformance:
    content_id: str
    total_plays: int
    views: int
    unique_viewers: int
    completion_rate: float | None  # of counted views
    watch_hours: float


def content_performance(rt: Runtime, start: datetime, end: datetime) -> list[ContentPerformance]:
    """Every asset played in [start, end): plays, counted views, unique viewers,
    completion rate and hours watched."""
    with rt.db.session() as s:
        found = totals(s, [(start, end)], None, "", per_asset=True, needs=frozenset({"viewers"}))[0]
    return [
        ContentPerformance(
            content_id=asset,
            total_plays=t.plays,
            views=t.views,
            unique_viewers=t.unique("viewers"),
            completion_rate=t.completed / t.views if t.views else None,
            watch_hours=t.watched_ms / 3_600_000,
        )
        for asset, t in found.items()
        if t.plays
    ]
