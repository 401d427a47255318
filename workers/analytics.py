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

from mediamill.pipeline.rollups import Total, aggregate
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


def _value(metric: Metric, total: Total) -> int:
    if metric is Metric.TOTAL_VIEWS:
        return total.views
    if metric is Metric.UNIQUE_DEVICES:
        return total.unique("devices")
    if metric is Metric.AUTHENTICATED_VIEWERS:
        return total.unique("auth_viewers")
    return total.unique("viewers")


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
    start: datetime, end: datetime, dimension: Dimension, zone: ZoneInfo
) -> list[tuple[datetime, datetime]]:
    """[start, end) cut at the zone's month, day or hour boundaries."""
    if dimension not in TIME_DIMENSIONS:
        return [(start, end)]
    out = []
    cursor = start
    while cursor < end:
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
) -> list[dict[str, Total]]:
    """For each piece of time, value of `dimension` ("" for none) -> Total."""
    if not pieces:
        return []
    start, end = pieces[0][0], pieces[-1][1]
    known = view_rows.known_buckets(s, LEVEL_HOUR, hour_of(start), end)
    clean_h = view_rows.clean_buckets(s, LEVEL_HOUR, hour_of(start), end)
    clean_d = view_rows.clean_buckets(s, LEVEL_DAY, day_of(start), end)
    plans = [_plan(a, b, known, clean_h, clean_d) for a, b in pieces]
    out: list[dict[str, Total]] = [defaultdict(Total) for _ in pieces]
    owner: dict[tuple[str, datetime], int] = {}
    for i, plan in enumerate(plans):
        owner.update({(LEVEL_DAY, d): i for d in plan.days})
        owner.update({(LEVEL_HOUR, h): i for h in plan.hours})
    for level in (LEVEL_DAY, LEVEL_HOUR):
        buckets = [at for (lv, at) in owner if lv == level]
        for row in view_rows.rollup_rows(s, level, buckets, asset_ids, dimension):
            i = owner[(level, row.bucket_at.astimezone(UTC))]
            out[i][row.value].add_row(
                row.plays,
                row.views,
                row.watched_ms,
                row.completed,
                viewers=row.viewers,
                devices=row.devices,
                auth_viewers=row.auth_viewers,
            )
    for i, plan in enumerate(plans):
        for a, b in _merged(plan.raw):
            groups = aggregate(view_rows.view_figures(s, a, b, asset_ids))
            for (asset, dim, value), agg in groups.items():
                if asset == "" and dim == dimension:
                    out[i][value].add(agg)
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
    pieces = _pieces(start, end, dimension, zone)
    key = "" if dimension is Dimension.SUMMARY or dimension in TIME_DIMENSIONS else dimension.value
    with rt.db.session() as s:
        found = totals(s, pieces, asset_ids, key)
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
# A minute-by-minute answer covers at most this many days (44,640 points).
MAX_MINUTE_RANGE_DAYS = 31


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
) -> list[Peak]:
    """The most views playing at once in each minute (or hour) of [start, end): a view
    plays from its start until it finished (or, unfinished, its last activity). One
    series over every asset, or one per asset of `asset_ids`."""
    first = start.astimezone(UTC).replace(second=0, microsecond=0)
    minutes = max(1, -(-int((end - first).total_seconds()) // 60))
    series_keys: list[str | None] = list(asset_ids) if asset_ids else [None]
    counts = {key: np.zeros(minutes + 1, dtype=np.int64) for key in series_keys}
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
    out: list[Peak] = []
    for key in series_keys:
        live = np.cumsum(counts[key])[:minutes]
        if granularity is Granularity.MINUTE:
            out += [
                Peak(key, (first + i * MINUTE).astimezone(zone), int(v)) for i, v in enumerate(live)
            ]
            continue
        hour0 = hour_of(first)
        offset = int((first - hour0).total_seconds() // 60)
        padded = np.concatenate([np.zeros(offset, dtype=np.int64), live])
        hours = -(-len(padded) // 60)
        padded = np.concatenate([padded, np.zeros(hours * 60 - len(padded), dtype=np.int64)])
        top = padded.reshape(hours, 60).max(axis=1)
        out += [Peak(key, (hour0 + i * HOUR).astimezone(zone), int(v)) for i, v in enumerate(top)]
    return out
