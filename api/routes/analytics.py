"""IBM Video Analytics-compatible routes under `/analytics/v1/`: its paths, its
snake_case fields, its `pagination` links and its `{"errors": [...]}` bodies, so a
client written for it works unchanged. Authentication: a read key, in MediaMill's
headers or as `Authorization: <clientId>.<token>`.

Differences from IBM (docs/analytics.md): `content_id` is our asset ids (64 hex
characters, comma-separated); date-times without an offset are read in
MEDIAMILL_ANALYTICS_TZ (default UTC), not America/Los_Angeles; `city` is always null
(the country comes from the address's allocation); `live` content answers empty.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, StreamingResponse

from mediamill.api.deps import AdminActor, ReadKey, RuntimeDep
from mediamill.schemas.analytics import DeviceClass, Link, Page, Pagination, Resource
from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import InvalidRequestError
from mediamill.storage import views as view_rows
from mediamill.storage.models import ViewRow, ViewSectionRow
from mediamill.workers import views
from mediamill.workers.analytics import (
    MAX_HOUR_RANGE_DAYS,
    MAX_MINUTE_RANGE_DAYS,
    MAX_PEAK_SERIES,
    Dimension,
    Granularity,
    Metric,
    Period,
    Point,
    QoeDimension,
    content_performance,
    peaks,
    period_range,
    qoe,
    retention,
    series,
)
from mediamill.workers.runtime import Runtime

router = APIRouter(prefix="/analytics/v1", tags=["analytics (IBM Video Analytics)"])

MAX_LIMIT = 10_000
MAX_PAGE = 1_000_000
MAX_RANGE_DAYS = 3660
MIN_YEAR, MAX_YEAR = 1970, 2200
CONTENT_TYPES = ("recorded", "live")
_ASSET_ID = re.compile(r"^[0-9a-f]{64}$")
# The parameters a pagination link carries on (others are dropped, not echoed).
_LINKED = {
    "date_time_from",
    "date_time_to",
    "content_id",
    "viewer_identifier",
    "list_unfinished_segments",
    "inclusive_range",
    "granularity",
}
_SECTION_IDS = uuid.UUID("0d7c0b8e-3f9a-4c61-9a3e-5c1f7a2b9e44")


class QueryParams:
    """IBM's query parameters, read by hand so that each error names its parameter
    (`source.pointer`)."""

    def __init__(self, request: Request, zone: ZoneInfo) -> None:
        self.request = request
        self.zone = zone
        self.query = request.query_params

    def fail(self, name: str, detail: str) -> InvalidRequestError:
        self.request.state.error_pointer = name
        return InvalidRequestError(detail)

    def time(self, name: str) -> datetime:
        raw = self.query.get(name)
        if raw is None or not raw.strip():
            raise self.fail(
                name, f"{name} is required (ISO 8601, such as 2026-07-16T19:20:30+01:00)"
            )
        try:
            value = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise self.fail(
                name, f"{name} must be an ISO 8601 date and time, not {raw[:40]!r}"
            ) from None
        if value.tzinfo is None:
            value = value.replace(tzinfo=self.zone)
        try:
            utc = value.astimezone(UTC)
        except (OverflowError, ValueError):
            utc = None
        if utc is None or not MIN_YEAR <= utc.year <= MAX_YEAR:
            raise self.fail(name, f"{name} must fall between the years {MIN_YEAR} and {MAX_YEAR}")
        return utc

    def range(self) -> tuple[datetime, datetime]:
        start, end = self.time("date_time_from"), self.time("date_time_to")
        if end <= start:
            raise self.fail("date_time_to", "date_time_to must be after date_time_from")
        if (end - start).days > MAX_RANGE_DAYS:
            raise self.fail("date_time_to", f"a range may span at most {MAX_RANGE_DAYS} days")
        return start, end

    def number(self, name: str, default: int, low: int, high: int | None = None) -> int:
        raw = self.query.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise self.fail(name, f"{name} must be a whole number, not {raw[:40]!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"{low}..{high}" if high is not None else f"at least {low}"
            raise self.fail(name, f"{name} must be {bound}, not {value}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.query.get(name)
        if raw is None:
            return default
        lowered = raw.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise self.fail(name, f"{name} must be true or false, not {raw[:40]!r}")

    def content_ids(self) -> list[str] | None:
        raw = self.query.get("content_id")
        if raw is None or not raw.strip():
            return None
        ids = list(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
        bad = [i for i in ids if not _ASSET_ID.match(i)]
        if bad:
            raise self.fail(
                "content_id", f"content_id holds asset ids (64 hex characters), not {bad[0][:70]!r}"
            )
        if len(ids) > 1000:
            raise self.fail("content_id", "content_id takes at most 1000 ids")
        return ids

    def page(self) -> tuple[int, int]:
        return self.number("_page", 1, 1, MAX_PAGE), self.number("_limit", 10, 1, MAX_LIMIT)


def _content_type(params: QueryParams, value: str | None) -> str:
    if value is None:
        return "recorded"
    if value not in CONTENT_TYPES:
        raise params.fail("content_type", f"content_type is live or recorded, not {value[:40]!r}")
    return value


def _when(at: datetime | None, zone: ZoneInfo) -> str | None:
    return at.astimezone(zone).isoformat(timespec="seconds") if at is not None else None


def _pagination(request: Request, count: int, page: int, limit: int) -> Pagination:
    last = max(1, -(-count // limit))

    def link(number: int) -> Link:
        query = [(k, v) for k, v in request.query_params.multi_items() if k in _LINKED]
        query += [("_page", str(number)), ("_limit", str(limit))]
        return Link(href=f"{request.url.path}?{urlencode(query)}")

    return Pagination(
        count=count,
        self=link(page),
        first=link(1),
        prev=link(page - 1) if page > 1 else None,
        next=link(page + 1) if page < last else None,
        last=link(last),
    )


def _page_response(
    request: Request, count: int, page: int, limit: int, data: list[Resource]
) -> JSONResponse:
    body = Page(pagination=_pagination(request, count, page, limit), data=data)
    return JSONResponse(body.model_dump(mode="json"))


# ---- export, retention, quality, content performance, erasure ------------------------------

_EXPORT_FIELDS = (
    "view_id",
    "content_id",
    "viewer_identifier",
    "authenticated",
    "client_id",
    "country",
    "device_class",
    "browser_family",
    "os_family",
    "device_family",
    "view_source",
    "protocol",
    "rendition",
    "started_at",
    "finished_at",
    "last_activity",
    "watched_s",
    "counted",
    "completed",
    "startup_ms",
    "playing_ms",
    "rebuffer_ms",
    "rebuffer_count",
    "failed",
    "avg_bitrate",
)


def _export_record(view: ViewRow, zone: ZoneInfo) -> dict[str, Any]:
    info = view.device_info or {}
    return {
        "view_id": view.id,
        "content_id": view.asset_id,
        "viewer_identifier": view.viewer_id,
        "authenticated": view.authenticated,
        "client_id": view.device_id,
        "country": view.country,
        "device_class": view.device_class,
        "browser_family": (info.get("browser") or {}).get("family"),
        "os_family": (info.get("os") or {}).get("family"),
        "device_family": (info.get("device") or {}).get("family"),
        "view_source": view.source,
        "protocol": view.protocol,
        "rendition": view.rendition,
        "started_at": _when(view.started_at, zone),
        "finished_at": _when(view.finished_at, zone),
        "last_activity": _when(view.last_activity_at, zone),
        "watched_s": view.watched_ms / 1000,
        "counted": view.counted,
        "completed": view.completed,
        "startup_ms": view.startup_ms,
        "playing_ms": view.playing_ms,
        "rebuffer_ms": view.rebuffer_ms,
        "rebuffer_count": view.rebuffer_count,
        "failed": view.failed,
        "avg_bitrate": view.avg_bitrate,
    }


def _export_lines(
    rt: Runtime, start: datetime, end: datetime, asset_ids: list[str] | None, kind: str
) -> Iterator[bytes]:
    """The export, a batch of lines at a time: one session streams the rows, so memory
    stays bounded whatever the range holds."""
    zone = rt.settings.analytics_zone
    if kind == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=_EXPORT_FIELDS, lineterminator="\r\n")
        writer.writeheader()
        yield out.getvalue().encode()
    with rt.db.session() as s:
        batch: list[str] = []
        for view in view_rows.export_rows(s, start, end, asset_ids):
            record = _export_record(view, zone)
            if kind == "csv":
                out = io.StringIO()
                csv.DictWriter(out, fieldnames=_EXPORT_FIELDS, lineterminator="\r\n").writerow(
                    record
                )
                batch.append(out.getvalue())
            else:
                batch.append(json.dumps(record, separators=(",", ":")) + "\n")
            if len(batch) >= 500:
                yield "".join(batch).encode()
                batch = []
        if batch:
            yield "".join(batch).encode()


@router.get("/views/export")
def export_views(rt: RuntimeDep, request: Request, _: ReadKey) -> StreamingResponse:
    """Every view that started in the range, one line each: `format=ndjson` (default)
    or `csv`, streamed in bounded memory."""
    params = QueryParams(request, rt.settings.analytics_zone)
    start, end = params.range()
    asset_ids = params.content_ids()
    kind = params.query.get("format", "ndjson")
    if kind not in ("ndjson", "csv"):
        raise params.fail("format", f"format is ndjson or csv, not {kind[:40]!r}")
    media = "text/csv; charset=utf-8" if kind == "csv" else "application/x-ndjson"
    return StreamingResponse(
        _export_lines(rt, start, end, asset_ids, kind),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="views.{kind}"'},
    )


def _default_range(params: QueryParams, rt: Runtime) -> tuple[datetime, datetime]:
    """The range asked, or the raw retention up to now when neither end is given."""
    if "date_time_from" not in params.query and "date_time_to" not in params.query:
        now = utcnow()
        return now - timedelta(days=rt.settings.analytics_raw_retention_days), now
    return params.range()


@router.get("/assets/{assetId}/retention")
def asset_retention(
    rt: RuntimeDep, request: Request, _: ReadKey, asset_id: Annotated[str, Path(alias="assetId")]
) -> JSONResponse:
    """The share of the asset's counted views still watching at each 1% of its
    duration (default range: the raw retention up to now)."""
    params = QueryParams(request, rt.settings.analytics_zone)
    if not _ASSET_ID.match(asset_id):
        raise params.fail("assetId", "an asset id is 64 hex characters")
    start, end = _default_range(params, rt)
    found = retention(rt, asset_id, start, end)
    data = [
        Resource(type="RetentionPoint", attributes={"percent": p, "share": round(share, 6)})
        for p, share in enumerate(found.shares)
    ]
    return JSONResponse(
        {
            "data": [d.model_dump(mode="json") for d in data],
            "meta": {"content_id": asset_id, "views": found.views},
        }
    )


@router.get("/qoe")
def quality_of_experience(rt: RuntimeDep, request: Request, _: ReadKey) -> JSONResponse:
    """Startup time p50/p95, rebuffer ratio, failure rate and average bitrate of the
    views of the range; `dimension` summary (default), rendition, protocol, device or
    location."""
    params = QueryParams(request, rt.settings.analytics_zone)
    raw = params.query.get("dimension", QoeDimension.SUMMARY.value)
    try:
        dimension = QoeDimension(raw)
    except ValueError:
        names = ", ".join(d.value for d in QoeDimension)
        raise params.fail("dimension", f"dimension is one of {names}, not {raw[:40]!r}") from None
    start, end = _default_range(params, rt)
    found = qoe(rt, dimension, start, end, params.content_ids())
    data = [
        Resource(
            type="Qoe",
            attributes={
                "dimension_type": dimension.value,
                "point": q.value,
                "plays": q.plays,
                "startup_time_p50_ms": q.startup_p50_ms,
                "startup_time_p95_ms": q.startup_p95_ms,
                "rebuffer_ratio": q.rebuffer_ratio,
                "playback_failure_rate": q.failure_rate,
                "average_bitrate": q.avg_bitrate,
            },
        ).model_dump(mode="json")
        for q in found
    ]
    return JSONResponse({"data": data})


_SORTS = ("total_plays", "unique_viewers", "completion_rate", "views", "watch_hours")


@router.get("/content-performance")
def content_performance_of(rt: RuntimeDep, request: Request, _: ReadKey) -> JSONResponse:
    """EncoraStream's content performance: plays, unique viewers and completion rate of
    every asset played in `period` (today, last_7d, last_30d, last_90d), sorted
    (`sort`, `-` for descending; default `-total_plays`), `limit` 1..100 a page, `cursor`."""
    zone = rt.settings.analytics_zone
    params = QueryParams(request, zone)
    raw = params.query.get("period")
    try:
        period = Period(raw or "")
    except ValueError:
        names = ", ".join(p.value for p in Period)
        raise params.fail("period", f"period is one of {names}") from None
    sort = params.query.get("sort", "-total_plays")
    field = sort.removeprefix("-")
    if field not in _SORTS:
        raise params.fail("sort", f"sort is one of {', '.join(_SORTS)} (- for descending)")
    limit = params.number("limit", 20, 1, 100)
    offset = _cursor_offset(params)
    start, end = period_range(period, utcnow(), zone)
    rows = content_performance(rt, start, end)
    rows.sort(key=lambda r: r.content_id)
    descending = sort.startswith("-")

    def key(row: Any) -> tuple[bool, float]:
        value = getattr(row, field)
        # Without a value (no counted view: no completion rate) sorts last either way.
        return (value is not None, value or 0) if descending else (value is None, value or 0)

    rows.sort(key=key, reverse=descending)
    page = rows[offset : offset + limit]
    more = offset + limit < len(rows)
    return JSONResponse(
        {
            "data": [asdict(r) for r in page],
            "meta": {
                "period": period.value,
                "limit": limit,
                "total": len(rows),
                "next_cursor": _cursor_of(offset + limit) if more else None,
            },
        }
    )


def _cursor_of(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def _cursor_offset(params: QueryParams) -> int:
    raw = params.query.get("cursor")
    if not raw:
        return 0
    try:
        decoded = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        offset = int(decoded["o"])
    except (ValueError, KeyError, TypeError, OverflowError):
        raise params.fail("cursor", "cursor is not one this API gave; start over") from None
    if offset < 0:
        raise params.fail("cursor", "cursor is not one this API gave; start over")
    return offset


@router.delete("/viewers/{viewer_identifier}")
def erase_viewer(
    rt: RuntimeDep,
    actor: AdminActor,
    viewer_identifier: Annotated[str, Path(max_length=160)],
) -> JSONResponse:
    """Erase a viewer (an admin key): their views, playback and tracking sessions go;
    rollup counts stay, unique-count sketches are rebuilt without them. Audit-logged
    (under a digest of the identifier, not the identifier)."""
    done = views.erase_viewer(rt, viewer_identifier, actor)
    return JSONResponse({"erased": asdict(done)})


# ---- views ----------------------------------------------------------------------------------


def _section_attributes(section: ViewSectionRow, view: ViewRow, zone: ZoneInfo) -> dict[str, Any]:
    return {
        "view_id": str(uuid.uuid5(_SECTION_IDS, f"{view.id}:{section.idx}")),
        "content_type": "recorded",
        "content_id": view.asset_id,
        "started_at": _when(section.started_at, zone),
        "finished_at": _when(section.finished_at, zone),
        "from": int(section.from_s),
        "to": int(section.to_s),
        "viewer_identifier": view.viewer_id,
        "country": view.country,
        "city": None,
        "is_mobile_view": view.device_class in (DeviceClass.MOBILE, DeviceClass.TABLET),
        "view_type": "onsite",
        "client_id": view.device_id,
        "view_session_id": view.id,
        "device_info": view.device_info,
    }


def _views(rt: Runtime, request: Request, content_type: str | None) -> JSONResponse:
    zone = rt.settings.analytics_zone
    params = QueryParams(request, zone)
    kind = _content_type(params, content_type)
    start, end = params.range()
    asset_ids = params.content_ids() if content_type is not None else None
    inclusive = params.flag("inclusive_range", True)
    unfinished = params.flag("list_unfinished_segments", True)
    page, limit = params.page()
    if kind == "live":
        return _page_response(request, 0, page, limit, [])
    with rt.db.session() as s:
        count, rows = view_rows.section_page(
            s,
            start,
            end,
            asset_ids,
            inclusive=inclusive,
            unfinished=unfinished,
            offset=(page - 1) * limit,
            limit=limit,
        )
        data = [Resource(type="View", attributes=_section_attributes(a, b, zone)) for a, b in rows]
    return _page_response(request, count, page, limit, data)


@router.get("/views")
def list_views(rt: RuntimeDep, request: Request, _: ReadKey) -> JSONResponse:
    """Every view section of the range, by IBM's range rules (`inclusive_range`,
    `list_unfinished_segments`)."""
    return _views(rt, request, None)


@router.get("/views/{content_type}")
def list_views_of(
    rt: RuntimeDep, request: Request, _: ReadKey, content_type: Annotated[str, Path()]
) -> JSONResponse:
    """The view sections of one content type (`recorded`: assets), optionally of
    `content_id`."""
    return _views(rt, request, content_type)


# ---- viewers --------------------------------------------------------------------------------


def _viewers(rt: Runtime, request: Request, content_type: str | None) -> JSONResponse:
    zone = rt.settings.analytics_zone
    params = QueryParams(request, zone)
    kind = _content_type(params, content_type)
    start, end = params.range()
    asset_ids = params.content_ids() if content_type is not None else None
    unfinished = params.flag("list_unfinished_segments", True)
    fragment = params.query.get("viewer_identifier") or None
    if fragment is not None and len(fragment) > 160:
        raise params.fail("viewer_identifier", "viewer_identifier is at most 160 characters")
    page, limit = params.page()
    if kind == "live":
        return _page_response(request, 0, page, limit, [])
    with rt.db.session() as s:
        count, found = view_rows.viewer_page(
            s,
            start,
            end,
            asset_ids,
            fragment,
            unfinished=unfinished,
            offset=(page - 1) * limit,
            limit=limit,
        )
        data = []
        for viewer, sections in found:
            segments = []
            for section, view in sections:
                item = _section_attributes(section, view, zone)
                item["id"] = item.pop("view_id")
                item.pop("viewer_identifier")
                segments.append(item)
            data.append(
                Resource(
                    type="Viewer",
                    attributes={
                        "viewer_identifier": viewer,
                        "videos_watched": len({view.asset_id for _, view in sections}),
                        "last_activity": _when(max(v.last_activity_at for _, v in sections), zone),
                        "segments": segments,
                    },
                )
            )
    return _page_response(request, count, page, limit, data)


@router.get("/viewers")
def list_viewers(rt: RuntimeDep, request: Request, _: ReadKey) -> JSONResponse:
    """Every viewer with a view section in the range (`viewer_identifier`: those whose
    identifier contains it), with those sections."""
    return _viewers(rt, request, None)


@router.get("/viewers/{content_type}")
def list_viewers_of(
    rt: RuntimeDep, request: Request, _: ReadKey, content_type: Annotated[str, Path()]
) -> JSONResponse:
    """The viewers of one content type (`recorded`), optionally of `content_id`."""
    return _viewers(rt, request, content_type)


# ---- peak viewer numbers --------------------------------------------------------------------


def _peaks(rt: Runtime, request: Request, content_type: str | None) -> JSONResponse:
    zone = rt.settings.analytics_zone
    params = QueryParams(request, zone)
    kind = _content_type(params, content_type)
    raw = params.query.get("granularity", Granularity.MINUTE.value)
    try:
        granularity = Granularity(raw)
    except ValueError:
        raise params.fail(
            "granularity", f"granularity is minute or hour, not {raw[:40]!r}"
        ) from None
    start, end = params.range()
    span = MAX_MINUTE_RANGE_DAYS if granularity is Granularity.MINUTE else MAX_HOUR_RANGE_DAYS
    if end - start > timedelta(days=span):
        raise params.fail("date_time_to", f"{granularity.value} peaks cover at most {span} days")
    asset_ids = params.content_ids() if content_type is not None else None
    if asset_ids and len(asset_ids) > MAX_PEAK_SERIES:
        raise params.fail("content_id", f"peaks take at most {MAX_PEAK_SERIES} content ids")
    page, limit = params.page()
    count, window = (
        (0, [])
        if kind == "live"
        else peaks(rt, granularity, start, end, asset_ids, offset=(page - 1) * limit, limit=limit)
    )
    data = [
        Resource(
            type="PeakSeries",
            attributes={
                "content_type": "recorded",
                "content_id": p.content_id,
                "time": _when(p.time, zone),
                "value": p.value,
            },
        )
        for p in window
    ]
    return _page_response(request, count, page, limit, data)


@router.get("/peak-viewer-numbers")
def peak_viewer_numbers(rt: RuntimeDep, request: Request, _: ReadKey) -> JSONResponse:
    """The most views playing at once, each minute (or hour: `granularity`)."""
    return _peaks(rt, request, None)


@router.get("/peak-viewer-numbers/{content_type}")
def peak_viewer_numbers_of(
    rt: RuntimeDep, request: Request, _: ReadKey, content_type: Annotated[str, Path()]
) -> JSONResponse:
    """Peaks of one content type (`recorded`); one series per `content_id` given."""
    return _peaks(rt, request, content_type)


# ---- counts ---------------------------------------------------------------------------------


def _series_item(point: Point, zone: ZoneInfo) -> Resource:
    value = point.point
    shown = _when(value, zone) if isinstance(value, datetime) else value
    return Resource(
        type="Series",
        attributes={"dimension_type": point.dimension.value, "point": shown, "value": point.value},
    )


def _counts(
    rt: Runtime, request: Request, metric: str, content_type: str | None, dimension: str
) -> JSONResponse:
    zone = rt.settings.analytics_zone
    params = QueryParams(request, zone)
    try:
        chosen = Metric(metric)
    except ValueError:
        raise params.fail("metric", f"no such report: {metric[:40]!r}") from None
    try:
        dim = Dimension(dimension)
    except ValueError:
        names = ", ".join(d.value for d in Dimension)
        raise params.fail(
            "dimension", f"dimension is one of {names}, not {dimension[:40]!r}"
        ) from None
    kind = _content_type(params, content_type)
    start, end = params.range()
    asset_ids = params.content_ids() if content_type is not None else None
    page, limit = params.page()
    points = [] if kind == "live" else series(rt, chosen, dim, start, end, asset_ids)
    window = points[(page - 1) * limit : page * limit]
    return _page_response(
        request, len(points), page, limit, [_series_item(p, zone) for p in window]
    )


@router.get("/{metric}/{dimension}")
def counts(
    rt: RuntimeDep,
    request: Request,
    _: ReadKey,
    metric: Annotated[str, Path(description="total-views, unique-devices, authenticated-viewers")],
    dimension: Annotated[
        str, Path(description="summary, month, day, hour, location, device, view-source")
    ],
) -> JSONResponse:
    """A count over every content: `summary`, or bucketed by `dimension`."""
    return _counts(rt, request, metric, None, dimension)


@router.get("/{metric}/{content_type}/{dimension}")
def counts_of(
    rt: RuntimeDep,
    request: Request,
    _: ReadKey,
    metric: Annotated[str, Path()],
    content_type: Annotated[str, Path()],
    dimension: Annotated[str, Path()],
) -> JSONResponse:
    """A count over one content type (`recorded`), optionally of `content_id`."""
    return _counts(rt, request, metric, content_type, dimension)
