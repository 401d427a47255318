"""The view rules of pipeline/views.py, on hand-made sessions whose answer is known."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mediamill.pipeline.views import derive_view
from mediamill.schemas.analytics import (
    Audience,
    FactEvent,
    FactHeartbeat,
    FactSegment,
    SessionFacts,
)

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def facts(events=(), heartbeats=(), segments=(), *, duration_s=600, ended_s=None) -> SessionFacts:
    """A session made at T0; events as (seq, type, t_s, position_s, data)."""
    return SessionFacts(
        session_id="s1",
        asset_id="a" * 64,
        duration_ms=int(duration_s * 1000) if duration_s else None,
        created_at=T0,
        ended_at=at(ended_s) if ended_s is not None else None,
        viewer_id="viewer",
        authenticated=False,
        device_id="d1",
        audience=Audience(),
        events=[
            FactEvent(
                seq=seq,
                type=kind,
                occurred_at=at(t),
                received_at=at(t + 1),
                position_s=pos,
                data=data,
            )
            for seq, kind, t, pos, data in events
        ],
        heartbeats=[
            FactHeartbeat(received_at=at(t), position_s=pos, is_paused=paused)
            for t, pos, paused in heartbeats
        ],
        segments=[FactSegment(requested_at=at(t), from_s=a, to_s=b) for t, a, b in segments],
    )


def spans(view) -> list[tuple[float, float]]:
    return [(s.from_s, s.to_s) for s in view.sections]


def test_nothing_played_is_no_view() -> None:
    assert derive_view(facts([(0, "viewStart", 1, 0, {"startupMs": 300})]), min_watch_s=30) is None
    assert derive_view(facts(heartbeats=[(30, 0, False)]), min_watch_s=30) is None


def test_play_pause_seek_and_end_make_sections() -> None:
    view = derive_view(
        facts(
            [
                (0, "viewStart", 1, 0, {"startupMs": 420, "protocol": "hls"}),
                (1, "playing", 1, 0, {}),
                (2, "pause", 41, 40, {}),
                (3, "playing", 50, 40, {}),
                (4, "seek", 60, None, {"from": 50, "to": 300}),
                (5, "ended", 360, 600, {}),
            ]
        ),
        min_watch_s=30,
    )
    assert view is not None
    assert spans(view) == [(0, 40), (40, 50), (300, 600)]
    assert view.watched_ms == 350_000
    assert view.counted and view.completed
    assert view.started_at == at(1) and view.finished_at == at(360)
    assert view.startup_ms == 420 and view.protocol == "hls"
    assert view.playing_ms == (40 + 10 + 300) * 1000


def test_events_count_in_seq_order_whatever_order_they_came() -> None:
    ordered = [(0, "playing", 0, 0, {}), (1, "pause", 45, 45, {})]
    late_first = list(reversed(ordered))
    a = derive_view(facts(ordered), min_watch_s=30)
    b = derive_view(facts(late_first), min_watch_s=30)
    assert a is not None and b is not None and spans(a) == spans(b) == [(0, 45)]


def test_a_view_counts_at_min_watch_or_half_a_short_asset() -> None:
    short = [(0, "playing", 0, 0, {}), (1, "pause", 29, 29, {})]
    assert not derive_view(facts(short), min_watch_s=30).counted
    assert derive_view(facts(short, duration_s=50), min_watch_s=30).counted  # 29 >= 25
    assert not derive_view(facts(short, duration_s=60), min_watch_s=30).counted  # 29 < 30


def test_rebuffering_closes_the_section_and_counts_its_time() -> None:
    view = derive_view(
        facts(
            [
                (0, "playing", 0, 0, {}),
                (1, "rebufferStart", 20, 20, {}),
                (2, "rebufferEnd", 24, 20, {}),
                (3, "renditionChange", 24, 20, {"bitrate": 800_000, "height": 360}),
                (4, "pause", 64, 60, {}),
            ]
        ),
        min_watch_s=30,
    )
    assert spans(view) == [(0, 20), (20, 60)]
    assert view.rebuffer_ms == 4000 and view.rebuffer_count == 1
    assert view.playing_ms == 60_000
    assert view.rendition == "360p" and view.avg_bitrate == 800_000


def test_an_open_section_ends_at_the_last_heartbeat_and_the_session_end() -> None:
    view = derive_view(
        facts(
            [(0, "playing", 0, 0, {})],
            heartbeats=[(30, 30, False), (60, 60, False)],
            ended_s=150,
        ),
        min_watch_s=30,
    )
    assert spans(view) == [(0, 60)]
    assert view.sections[0].finished_at == at(60)
    assert view.finished_at == at(150)  # when the session ended
    unfinished = derive_view(
        facts([(0, "playing", 0, 0, {})], heartbeats=[(30, 30, False)]), min_watch_s=30
    )
    assert unfinished.finished_at is None and spans(unfinished) == [(0, 30)]


def test_error_marks_the_view_failed() -> None:
    view = derive_view(
        facts([(0, "playing", 0, 0, {}), (1, "error", 5, 5, {"code": "NETWORK"})]),
        min_watch_s=30,
    )
    assert view.failed and not view.counted and spans(view) == [(0, 5)]


def test_times_are_held_inside_what_the_server_saw() -> None:
    """A player clock an hour behind cannot put the view before its session."""
    early = facts([(0, "playing", -3600, 0, {}), (1, "pause", -3560, 40, {})])
    view = derive_view(early, min_watch_s=30)
    assert view.started_at == T0


def test_heartbeat_only_players_make_sections_from_progress() -> None:
    view = derive_view(
        facts(
            heartbeats=[
                (0, 0, False),
                (30, 30, False),
                (60, 60, True),
                (90, 60, False),
                (120, 400, False),  # a jump: a seek, not 340 s watched in 30 s
                (150, 430, False),
            ]
        ),
        min_watch_s=30,
    )
    assert spans(view) == [(0, 60), (400, 430)]
    assert view.counted  # 90 s


def test_edge_only_sessions_take_their_segments() -> None:
    view = derive_view(
        facts(segments=[(0, 0, 4), (4, 4, 8), (8, 8, 12), (20, 100, 104)]),
        min_watch_s=10,
    )
    assert spans(view) == [(0, 12), (100, 104)]
    assert view.started_at == at(0) and view.counted


@pytest.mark.parametrize("duration_s", [None, 0])
def test_an_asset_of_unknown_duration_counts_at_min_watch(duration_s) -> None:
    view = derive_view(
        facts([(0, "playing", 0, 0, {}), (1, "pause", 31, 31, {})], duration_s=duration_s),
        min_watch_s=30,
    )
    assert view.counted and not view.completed


def test_coverage_holds_the_whole_percents_the_sections_covered() -> None:
    from mediamill.pipeline.views import coverage_of
    from mediamill.schemas.analytics import ViewSection

    def section(a: float, b: float) -> ViewSection:
        return ViewSection(from_s=a, to_s=b, started_at=T0, finished_at=T0)

    bits = int(coverage_of([section(0, 10), section(50, 100)], 100_000), 16)
    assert [p for p in range(101) if bits >> p & 1] == [*range(0, 11), *range(50, 101)]
    assert coverage_of([section(0.5, 0.9)], 100_000) == "0"  # no whole percent inside
    assert coverage_of([section(0, 10)], None) is None
