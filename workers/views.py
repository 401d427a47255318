"""Keeping views current: derive the views of the sessions something was written for,
then roll up the hours and days that closed.

`update_views` is the actor. The sweeper sends it every tick, so a view is derived
within a sweep interval of its records being flushed; a rollup of an hour is made
`MEDIAMILL_ANALYTICS_ROLLUP_DELAY_S` after the hour ends, and made again whenever a
late record changes a view in it. Everything it writes is replaced whole, so running
it twice, or two at once, changes nothing (on PostgreSQL an advisory lock lets one run
at a time anyway).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from dramatiq import Message

from mediamill.pipeline.rollups import Aggregate, aggregate
from mediamill.pipeline.views import derive_view
from mediamill.schemas.audit import AuditAction, AuditActor
from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import AnalyticsBusyError
from mediamill.storage import audit
from mediamill.storage import views as view_rows
from mediamill.storage.views import DAY, HOUR, LEVEL_DAY, LEVEL_HOUR, day_of, hour_of
from mediamill.workers import runtime
from mediamill.workers.queue import QUEUE_NAME
from mediamill.workers.runtime import Runtime

log = logging.getLogger(__name__)

VIEWS_ACTOR = "update_views"
DERIVE_BATCH = 1000
ROLL_BATCH = 200
PURGE_BATCH = 2000
# An erasure waits this long for a running update to finish (it must not run beside one).
ERASE_WAIT_S = 60.0
UPDATE_BUDGET_S = 20.0


@dataclass(frozen=True)
class UpdateResult:
    derived: int
    removed: int
    hours_rolled: int
    days_rolled: int
    purged: int = 0


def schedule_update(rt: Runtime) -> None:
    message = Message(queue_name=QUEUE_NAME, actor_name=VIEWS_ACTOR, args=(), kwargs={}, options={})
    rt.broker.enqueue(message)


def update(
    rt: Runtime, *, now: datetime | None = None, budget_s: float = UPDATE_BUDGET_S
) -> UpdateResult:
    """Derive the marked sessions' views, then roll up the stale buckets that closed,
    for at most about `budget_s` (what is left waits for the next run)."""
    with view_rows.exclusive_update(rt.db.engine) as mine:
        if not mine:
            return UpdateResult(0, 0, 0, 0)
        deadline = time.monotonic() + budget_s
        now = now or utcnow()
        try:
            keep_partitions(rt, now)
        except Exception:  # the default partition takes the rows meanwhile
            log.warning("keeping the view partitions failed; tried again tomorrow", exc_info=True)
        purged = purge(rt, now, deadline)  # first, so a busy update cannot starve it
        derived, removed = derive_marked(rt, deadline)
        hours, days = roll_up(rt, now, deadline)
    if derived or removed or hours or days or purged:
        log.info(
            "views: %d derived, %d removed; rolled up %d hours, %d days; %d raw views purged",
            derived,
            removed,
            hours,
            days,
            purged,
        )
    return UpdateResult(derived, removed, hours, days, purged)


_partitions_checked: dict[str, str] = {}


def keep_partitions(rt: Runtime, now: datetime) -> None:
    """The monthly partitions on PostgreSQL, checked once a day per database."""
    day = now.date().isoformat()
    if _partitions_checked.get(rt.db.url) == day:
        return
    with rt.db.session() as s:
        made, dropped = view_rows.ensure_partitions(
            s, now, rt.settings.analytics_raw_retention_days
        )
    if made or dropped:
        log.info("view partitions: made %s, dropped %s", made, dropped)
    _partitions_checked[rt.db.url] = day


def purge(rt: Runtime, now: datetime, deadline: float) -> int:
    """Raw views and ended sessions past MEDIAMILL_ANALYTICS_RAW_RETENTION_DAYS go (a
    batch at a time, within the budget); rollups stay. How many views went."""
    cutoff = now - timedelta(days=rt.settings.analytics_raw_retention_days)
    purged = 0
    share = time.monotonic() + (deadline - time.monotonic()) / 4  # a quarter of the budget
    while True:
        with rt.db.session() as s:
            counts = view_rows.purge_before(s, cutoff, PURGE_BATCH)
        purged += counts["views"]
        done = counts["views"] < PURGE_BATCH and counts["playback_sessions"] < PURGE_BATCH
        if done or time.monotonic() >= share:  # at least one batch each run
            break
    return purged


def derive_marked(rt: Runtime, deadline: float) -> tuple[int, int]:
    """(views written, views removed) for the marked sessions."""
    settings = rt.settings
    oldest = utcnow() - timedelta(days=settings.analytics_raw_retention_days)
    derived = removed = ignored = 0
    while time.monotonic() < deadline:
        with rt.db.session() as s:
            marks = view_rows.marked_sessions(s, DERIVE_BATCH)
            if not marks:
                break
            facts = view_rows.session_facts(s, [sid for sid, _ in marks])
            views, gone = [], []
            found = {f.session_id for f in facts}
            gone += [sid for sid, _ in marks if sid not in found]  # the session is gone
            for f in facts:
                view = derive_view(f, min_watch_s=settings.view_min_watch_s)
                if view is None:
                    gone.append(f.session_id)
                elif view.started_at >= oldest:
                    views.append(view)
                else:  # past the raw retention: its buckets are never rolled again
                    ignored += 1
            view_rows.replace_views(s, views, gone, bump_from=oldest)
            view_rows.unmark(s, marks)
        derived += len(views)
        removed += len(gone)
    return derived, removed


def roll_up(rt: Runtime, now: datetime, deadline: float) -> tuple[int, int]:
    """(hours, days) rolled up: each stale bucket that ended `analytics_rollup_delay_s`
    ago and is inside the raw retention, rebuilt from its views."""
    settings = rt.settings
    closed = now - timedelta(seconds=settings.analytics_rollup_delay_s)
    oldest = now - timedelta(days=settings.analytics_raw_retention_days)
    done = {LEVEL_HOUR: 0, LEVEL_DAY: 0}
    for level, size in ((LEVEL_HOUR, HOUR), (LEVEL_DAY, DAY)):
        while time.monotonic() < deadline:
            with rt.db.session() as s:
                # Only buckets wholly inside the raw retention: one that began before it
                # may have lost raw views to the purge, so its rollup stands.
                stale = view_rows.stale_buckets(s, level, oldest, closed - size, ROLL_BATCH)
            if not stale:
                break
            for bucket_at, version in stale:
                if time.monotonic() >= deadline:
                    break
                with rt.db.session() as s:
                    groups = aggregate(
                        view_rows.view_figures(s, bucket_at, bucket_at + size),
                        per_asset_breakdowns=level == LEVEL_DAY,
                    )
                    rows = [
                        {
                            "level": level,
                            "bucket_at": bucket_at,
                            "asset_id": asset,
                            "dimension": dimension,
                            "value": value,
                            **agg.as_row(),
                        }
                        for (asset, dimension, value), agg in groups.items()
                    ]
                    if view_rows.replace_rollups(s, level, bucket_at, version, rows):
                        done[level] += 1
            if len(stale) < ROLL_BATCH:
                break
    return done[LEVEL_HOUR], done[LEVEL_DAY]


def update_views() -> None:
    """The actor: one update in this worker's runtime."""
    update(runtime.current())


def has_work(rt: Runtime, now: datetime | None = None) -> bool:
    """Whether a session is marked, or a stale bucket has closed."""
    now = now or utcnow()
    settings = rt.settings
    closed = now - timedelta(seconds=settings.analytics_rollup_delay_s)
    oldest = now - timedelta(days=settings.analytics_raw_retention_days)
    with rt.db.session() as s:
        if view_rows.marked_sessions(s, 1):
            return True
        return any(
            view_rows.stale_buckets(s, level, oldest, closed - size, 1)
            for level, size in ((LEVEL_HOUR, HOUR), (LEVEL_DAY, DAY))
        )


def sweep_views(rt: Runtime) -> None:
    """The sweeper's part: an update, when there is something to update."""
    if has_work(rt):
        schedule_update(rt)


# ---- erasure --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Erasure:
    views: int
    playback_sessions: int
    tracking_sessions: int
    buckets_rebuilt: int


def viewer_reference(viewer_id: str) -> str:
    """What the audit log keeps of an erased viewer: not the identifier (it may be an
    e-mail address), a digest that matches it if it is presented again."""
    return "sha256:" + hashlib.sha256(viewer_id.encode()).hexdigest()


def erase_viewer(rt: Runtime, viewer_id: str, actor: AuditActor) -> Erasure:
    """Erase a viewer's views and sessions (audit-logged in the same transaction), then
    rebuild the unique-count sketches of the rolled-up buckets their views were in
    from what remains, keeping those buckets' counts."""
    with view_rows.exclusive_update(rt.db.engine, wait_s=ERASE_WAIT_S) as mine:
        if not mine:  # a running update could write the viewer's views back
            raise AnalyticsBusyError(
                "a views update is running; try the erasure again", retry_after_s=10
            )
        with rt.db.session() as s:
            counts, started = view_rows.erase_viewer(s, viewer_id)
            audit.record(
                s, actor, AuditAction.VIEWER_ERASED, "viewer", viewer_reference(viewer_id), counts
            )
        buckets = {(LEVEL_HOUR, hour_of(at)) for at in started}
        buckets |= {(LEVEL_DAY, day_of(at)) for at in started}
        rebuilt = 0
        empty = Aggregate().as_row()
        for level, bucket_at in sorted(buckets):
            size = HOUR if level == LEVEL_HOUR else DAY
            with rt.db.session() as s:
                groups = aggregate(
                    view_rows.view_figures(s, bucket_at, bucket_at + size),
                    per_asset_breakdowns=level == LEVEL_DAY,
                )
                sketches = {key: agg.as_row() for key, agg in groups.items()}
                rebuilt += bool(view_rows.replace_sketches(s, level, bucket_at, sketches, empty))
    return Erasure(
        counts["views"], counts["playback_sessions"], counts["tracking_sessions"], rebuilt
    )
