"""A playback session's raw records made into one view: when it started and finished,
the sections of the asset it watched, whether it counts, and its quality of experience.

The rules (docs/analytics.md, "What a view is"):
- A view starts at the first `playing` event. A session without events starts one at
  its first heartbeat that is followed by playback (a heartbeat-only player), and a
  session the edge alone saw at its first media segment (init segments never count).
- Sections are positions: `playing` opens one, `pause`, `rebufferStart`, `error` and
  `ended` close it, a `seek` closes it at `from` and, while playing, opens the next at
  `to`. A section left open is closed at the last heartbeat's position.
- A view finishes at `ended`, or when its session ends (the player said so, or no
  heartbeat came for the TTL); until then it is unfinished.
- A view counts once it watched `min_watch_s`, or half of a shorter asset.
- Times come from the player's clock, held inside what the server saw: an event
  cannot have happened before its session was made, nor after it was received.
Events are taken in `seq` order, so late and out-of-order batches change nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise

from mediamill.schemas.analytics import (
    FactEvent,
    FactHeartbeat,
    FactSegment,
    SessionFacts,
    View,
    ViewSection,
)

# A player's position may run this far past the measured duration and still be "the end".
POSITION_SLACK_S = 2.0
# Contiguous edge segments may leave this much of a gap between them (timestamp rounding).
SEGMENT_GAP_S = 0.5
# A heartbeat-only player "played" between two heartbeats when its position moved
# forward by no more than this many times the time between them.
HEARTBEAT_SPEED_MAX = 2.0


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


@dataclass
class _Sections:
    sections: list[ViewSection] = field(default_factory=list)
    open_from: float | None = None
    open_at: datetime | None = None

    @property
    def is_open(self) -> bool:
        return self.open_from is not None

    def open(self, position_s: float, at: datetime) -> None:
        if self.open_from is None:
            self.open_from, self.open_at = position_s, at

    def close(self, position_s: float, at: datetime) -> None:
        if self.open_from is None or self.open_at is None:
            return
        if position_s > self.open_from:
            self.sections.append(
                ViewSection(
                    from_s=self.open_from,
                    to_s=position_s,
                    started_at=self.open_at,
                    finished_at=max(at, self.open_at),
                )
            )
        self.open_from = self.open_at = None


@dataclass
class _Playback:
    """The event-driven state: what plays, since when, and what it cost to get there."""

    sections: _Sections = field(default_factory=_Sections)
    position_s: float = 0.0
    playing: bool = False
    stalled: bool = False
    run_at: datetime | None = None  # playing and not stalled since
    stall_at: datetime | None = None
    playing_ms: int = 0
    rebuffer_ms: int = 0
    rebuffer_count: int = 0
    rendition: str | None = None
    bitrate: int | None = None
    ms_by_rendition: dict[str, int] = field(default_factory=dict)
    bitrate_ms: int = 0
    bitrate_weight_ms: int = 0

    def credit(self, until: datetime) -> None:
        """Count the playing time of the current run up to `until`."""
        if self.run_at is None:
            return
        spent = _ms((until - self.run_at).total_seconds())
        self.playing_ms += spent
        if self.rendition is not None:
            known = self.ms_by_rendition.get(self.rendition, 0)
            self.ms_by_rendition[self.rendition] = known + spent
        if self.bitrate is not None:
            self.bitrate_ms += self.bitrate * spent
            self.bitrate_weight_ms += spent
        self.run_at = until

    def stop(self, at: datetime) -> None:
        self.credit(at)
        self.run_at = None
        self.sections.close(self.position_s, at)


def _clamped(event: FactEvent, made_at: datetime) -> datetime:
    return min(max(event.occurred_at, made_at), max(event.received_at, made_at))


def _number(data: dict, key: str) -> float | None:
    value = data.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def derive_view(facts: SessionFacts, *, min_watch_s: float) -> View | None:
    """The session's view, or None when nothing played."""
    if any(e.type == "playing" for e in facts.events):
        return _from_events(facts, min_watch_s)
    sections = _heartbeat_sections(facts.heartbeats) or _segment_sections(facts.segments)
    if not sections:
        return None
    return _view(facts, min_watch_s, sections, ended_at=None, playback=None)


def _from_events(facts: SessionFacts, min_watch_s: float) -> View:
    state = _Playback()
    started_at: datetime | None = None
    ended_at: datetime | None = None
    startup_ms: int | None = None
    protocol: str | None = None
    failed = False
    last = facts.created_at
    for event in sorted(facts.events, key=lambda e: e.seq):
        at = max(_clamped(event, facts.created_at), last)
        last = at
        if event.position_s is not None:
            state.position_s = event.position_s
        kind, data = event.type, event.data
        if kind == "viewStart":
            if startup_ms is None and (value := _number(data, "startupMs")) is not None:
                startup_ms = int(value)
            if protocol is None and data.get("protocol") in ("hls", "dash"):
                protocol = data["protocol"]
        elif kind == "playing":
            started_at = started_at or at
            ended_at = None  # played again after the end: the view goes on
            if state.stalled:
                _unstall(state, at)
            if not state.playing:
                state.playing = True
                state.sections.open(state.position_s, at)
                state.run_at = at
        elif kind == "seek":
            to_s = _number(data, "to")
            from_s = _number(data, "from")
            if state.playing and not state.stalled:
                state.credit(at)
                state.sections.close(from_s if from_s is not None else state.position_s, at)
            if to_s is not None:
                state.position_s = to_s
            if state.playing and not state.stalled:
                state.sections.open(state.position_s, at)
        elif kind == "rebufferStart":
            if state.playing and not state.stalled:
                state.stop(at)
                state.stalled, state.stall_at = True, at
                state.rebuffer_count += 1
        elif kind == "rebufferEnd":
            if state.stalled:
                _unstall(state, at)
        elif kind == "renditionChange":
            state.credit(at)
            if (bitrate := _number(data, "bitrate")) is not None:
                state.bitrate = int(bitrate)
                height = _number(data, "height")
                state.rendition = f"{int(height)}p" if height else f"{int(bitrate) // 1000}k"
        elif kind in ("pause", "error", "ended"):
            if state.stalled:
                _unstall(state, at, resume=False)
            state.stop(at)
            state.playing = False
            failed = failed or kind == "error"
            if kind == "ended":
                ended_at = at
    if state.sections.is_open or state.stalled:
        end_s, end_at = _last_seen(facts, state, last)
        if state.stalled:
            _unstall(state, end_at, resume=False)
        state.position_s = end_s
        state.stop(end_at)
    assert started_at is not None  # derive_view checked there is a `playing`
    view = _view(facts, min_watch_s, state.sections.sections, ended_at, state)
    return view.model_copy(
        update={
            "started_at": min(started_at, view.started_at),
            "startup_ms": startup_ms,
            "protocol": protocol,
            "failed": failed,
        }
    )


def _unstall(state: _Playback, at: datetime, *, resume: bool = True) -> None:
    if state.stall_at is not None:
        state.rebuffer_ms += _ms((at - state.stall_at).total_seconds())
    state.stalled, state.stall_at = False, None
    if resume and state.playing:
        state.sections.open(state.position_s, at)
        state.run_at = at


def _last_seen(facts: SessionFacts, state: _Playback, last: datetime) -> tuple[float, datetime]:
    """Where and when a section left open ends: the last heartbeat after it opened,
    else the session's end, else the last event."""
    opened = state.sections.open_at or last
    later = [h for h in facts.heartbeats if h.received_at >= opened]
    end_at = max([last, *(h.received_at for h in later)])
    if facts.ended_at is not None:
        end_at = max(min(facts.ended_at, end_at) if later else facts.ended_at, opened)
    position_s = state.position_s
    if later:
        newest = max(later, key=lambda h: h.received_at)
        position_s = max(position_s, newest.position_s)
    return position_s, end_at


def _heartbeat_sections(heartbeats: list[FactHeartbeat]) -> list[ViewSection]:
    sections = _Sections()
    end: tuple[float, datetime] | None = None
    for prev, cur in pairwise(sorted(heartbeats, key=lambda h: h.received_at)):
        elapsed_s = (cur.received_at - prev.received_at).total_seconds()
        advance_s = cur.position_s - prev.position_s
        if not prev.is_paused and 0 < advance_s <= elapsed_s * HEARTBEAT_SPEED_MAX + 1:
            sections.open(prev.position_s, prev.received_at)
            end = (cur.position_s, cur.received_at)
        elif end is not None:
            sections.close(*end)
            end = None
    if end is not None:
        sections.close(*end)
    return sections.sections


def _segment_sections(segments: list[FactSegment]) -> list[ViewSection]:
    sections: list[ViewSection] = []
    for seg in sorted(segments, key=lambda s: s.requested_at):
        if seg.to_s <= seg.from_s:
            continue
        if sections:
            last = sections[-1]
            if last.to_s - SEGMENT_GAP_S <= seg.from_s <= last.to_s + SEGMENT_GAP_S:
                sections[-1] = last.model_copy(
                    update={"to_s": max(last.to_s, seg.to_s), "finished_at": seg.requested_at}
                )
                continue
        sections.append(
            ViewSection(
                from_s=seg.from_s,
                to_s=seg.to_s,
                started_at=seg.requested_at,
                finished_at=seg.requested_at,
            )
        )
    return sections


PERCENTS = 101  # retention points: 0%, 1%, ..., 100% of the duration


def coverage_of(sections: list[ViewSection], duration_ms: int | None) -> str | None:
    """The percents of the duration (0..100) some section covered, as the bits of a
    hex number (bit p: p%), or None when the duration is unknown."""
    if not duration_ms:
        return None
    duration_s = duration_ms / 1000
    bits = 0
    for s in sections:
        first = max(0, math.ceil(s.from_s / duration_s * 100 - 1e-9))
        last = min(PERCENTS - 1, math.floor(s.to_s / duration_s * 100 + 1e-9))
        if last >= first:
            bits |= ((1 << (last - first + 1)) - 1) << first
    return format(bits, "x")


def _view(
    facts: SessionFacts,
    min_watch_s: float,
    sections: list[ViewSection],
    ended_at: datetime | None,
    playback: _Playback | None,
) -> View:
    watched_s = sum(s.to_s - s.from_s for s in sections)
    duration_s = facts.duration_ms / 1000 if facts.duration_ms else None
    threshold_s = min(min_watch_s, duration_s / 2) if duration_s else min_watch_s
    furthest_s = max((s.to_s for s in sections), default=0.0)
    reached_end = duration_s is not None and furthest_s >= duration_s - POSITION_SLACK_S
    started_at = min((s.started_at for s in sections), default=facts.created_at)
    times = [s.finished_at for s in sections]
    times += [e.received_at for e in facts.events]
    times += [h.received_at for h in facts.heartbeats] + [s.requested_at for s in facts.segments]
    finished_at = ended_at or facts.ended_at
    if finished_at is not None:
        finished_at = max(finished_at, started_at)
    playing_ms = playback.playing_ms if playback else _ms(watched_s)
    rendition = avg_bitrate = None
    if playback is not None:
        if playback.ms_by_rendition:
            rendition = max(playback.ms_by_rendition, key=playback.ms_by_rendition.__getitem__)
        if playback.bitrate_weight_ms:
            avg_bitrate = round(playback.bitrate_ms / playback.bitrate_weight_ms)
    return View(
        view_id=facts.session_id,
        session_id=facts.session_id,
        asset_id=facts.asset_id,
        viewer_id=facts.viewer_id,
        authenticated=facts.authenticated,
        device_id=facts.device_id,
        audience=facts.audience,
        duration_ms=facts.duration_ms,
        started_at=started_at,
        finished_at=finished_at,
        last_activity_at=max([started_at, *times, *([finished_at] if finished_at else [])]),
        watched_ms=_ms(watched_s),
        counted=watched_s >= threshold_s,
        completed=ended_at is not None or reached_end,
        playing_ms=playing_ms,
        rebuffer_ms=playback.rebuffer_ms if playback else 0,
        rebuffer_count=playback.rebuffer_count if playback else 0,
        rendition=rendition,
        avg_bitrate=avg_bitrate,
        sections=sections,
        coverage=coverage_of(sections, facts.duration_ms),
    )
