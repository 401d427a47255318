#!/usr/bin/env python3
"""Plays synthetic viewers through the real playback routes, for analytics tests with
a known truth (tests/integration/test_analytics_truth.py) and for demos.

`plan_sessions` draws N sessions (device, viewer, consent, country by address, user
agent, asset, what they watch: sections, pauses, seeks, rebuffering, rendition
changes, an end, an error or a closed page), `events_of` turns one into the player
events a real player would send, and `play` sends them over HTTP: tracking session,
playback session (with `X-Forwarded-For` and `User-Agent`), event batches (some sent
late, out of order, or twice), a heartbeat, and the end. Each plan says what it
watched; the test computes the answers from the plans, not from the API.

    python scripts/play_sessions.py --api http://127.0.0.1:8000 --key <playback key> \\
        --asset <id>:<duration_s> [--asset ...] --sessions 200 --seed 1 > plans.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

# Addresses whose allocation is known (iptocc's RIR data); the last is documentation-only.
ADDRESSES = {
    "8.8.8.8": "US",
    "81.2.69.142": "GB",
    "1.0.16.1": "JP",
    "193.0.6.139": "NL",
    "200.160.2.3": "BR",
    "2001:4860:4860::8888": "US",
    "203.0.113.5": None,
}
USER_AGENTS = {
    "mobile": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "desktop": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_14_1) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/70.0.3538.102 Safari/537.36",
    "tablet": "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like "
    "Gecko) Chrome/120.0.0.0 Safari/537.36",
    "tv": "Mozilla/5.0 (SMART-TV; LINUX; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) "
    "76.0.3809.146/6.0 TV Safari/537.36",
    "other": "curl/8.5.0",
}
RENDITIONS = ((800_000, 360), (2_500_000, 720), (5_000_000, 1080))


@dataclass
class Plan:
    """One synthetic session and what it watched."""

    index: int
    asset_id: str
    duration_s: float
    device_id: str
    user_id: str | None  # sent with consent: the viewer
    tracked: bool  # has a tracking session (else the device is the viewer)
    playout: str
    address: str
    device_class: str
    protocol: str
    startup_ms: int
    sections: list[tuple[float, float]] = field(default_factory=list)
    seek_between: list[bool] = field(default_factory=list)  # per gap: a seek, else a pause
    rebuffer_s: list[float] = field(default_factory=list)  # per section: stall in its middle
    bitrates: list[int] = field(default_factory=list)  # per section
    ending: str = "pause"  # pause | ended | error | closed (no last event; a heartbeat)
    plays: bool = True  # False: viewStart only, never playing
    late: bool = False
    duplicate: bool = False
    # Set by events_of: when (plan seconds) and where the last run of playing began.
    final_run_t: float = 0.0
    final_run_from: float = 0.0
    # Set by send: when the session opened, and (a closed page) when it went silent.
    opened_at: str | None = None
    closed_at: str | None = None

    @property
    def country(self) -> str | None:
        return ADDRESSES[self.address]

    @property
    def watched_s(self) -> float:
        return sum(b - a for a, b in self.sections) if self.plays else 0.0

    def played_s(self, seconds_per_s: float) -> list[float]:
        """Seconds of the plan's clock spent playing each section: its length, except
        for a closed page's last run, which played on until the page went silent."""
        spans = [b - a for a, b in self.sections]
        if self.ending == "closed" and spans and self.opened_at and self.closed_at:
            silent_s = (
                datetime.fromisoformat(self.closed_at) - datetime.fromisoformat(self.opened_at)
            ).total_seconds() / seconds_per_s - self.final_run_t
            last_a = self.sections[-1][0]
            spans[-1] = (self.final_run_from - last_a) + max(0.0, silent_s)
        return spans


def plan_sessions(n: int, assets: dict[str, float], seed: int = 1) -> list[Plan]:
    """`n` sessions over `assets` (id -> duration in seconds), drawn from `seed`."""
    rng = random.Random(seed)
    users = [f"viewer{i}@example.com" for i in range(max(2, n // 4))]
    devices = [f"device-{i}" for i in range(max(2, n // 2))]
    plans = []
    for i in range(n):
        asset_id = rng.choice(sorted(assets))
        duration = assets[asset_id]
        consent = rng.random() < 0.5
        plan = Plan(
            index=i,
            asset_id=asset_id,
            duration_s=duration,
            device_id=rng.choice(devices),
            user_id=rng.choice(users) if consent else None,
            tracked=consent or rng.random() < 0.7,
            playout=rng.choice(["site", "app"]),
            address=rng.choice(sorted(ADDRESSES)),
            device_class=rng.choice(sorted(USER_AGENTS)),
            protocol=rng.choice(["hls", "dash"]),
            startup_ms=rng.randrange(80, 4000),
            plays=rng.random() > 0.05,
            late=rng.random() < 0.2,
            duplicate=rng.random() < 0.2,
        )
        position = 0.0 if rng.random() < 0.8 else round(rng.uniform(0, duration / 2))
        for _ in range(rng.randrange(1, 4)):
            length = round(rng.uniform(3, duration / 2))
            end = min(duration, position + length)
            if end <= position:
                break
            plan.sections.append((position, end))
            plan.rebuffer_s.append(round(rng.uniform(0.5, 6), 1) if rng.random() < 0.3 else 0)
            plan.bitrates.append(rng.choice(RENDITIONS)[0])
            seek = rng.random() < 0.5
            plan.seek_between.append(seek)
            position = round(rng.uniform(0, duration - 1)) if seek else end
        plan.seek_between = plan.seek_between[: max(0, len(plan.sections) - 1)]
        if plan.sections and plan.sections[-1][1] >= duration:
            plan.ending = "ended"
        else:
            plan.ending = rng.choice(["pause", "pause", "error", "closed"])
        plans.append(plan)
    return plans


def events_of(plan: Plan, start: datetime, seconds_per_s: float) -> list[dict[str, Any]]:
    """The events a player would send for `plan`, its clock starting at `start` and
    running `seconds_per_s` real seconds per second of the plan (a test compresses
    minutes of watching into moments)."""
    t = 0.0
    seq = 0
    out: list[dict[str, Any]] = []

    def emit(kind: str, position: float | None, **data: Any) -> None:
        nonlocal seq
        at = start + timedelta(seconds=t * seconds_per_s)
        event = {"seq": seq, "type": kind, "timestamp": at.isoformat(), **data}
        if position is not None:
            event["positionSeconds"] = position
        out.append(event)
        seq += 1

    emit("viewStart", 0, startupMs=plan.startup_ms, protocol=plan.protocol)
    if not plan.plays:
        return out
    heights = dict(RENDITIONS)
    for i, (a, b) in enumerate(plan.sections):
        if i == 0:
            if a:
                emit("seek", None, **{"from": 0, "to": a})
            emit("playing", a)
        elif plan.seek_between[i - 1]:
            emit("seek", None, **{"from": plan.sections[i - 1][1], "to": a})
        else:
            t += 2
            emit("playing", a)
        plan.final_run_t, plan.final_run_from = t, a
        emit("renditionChange", a, bitrate=plan.bitrates[i], height=heights[plan.bitrates[i]])
        stall = plan.rebuffer_s[i]
        if stall:
            middle = (a + b) / 2
            t += middle - a
            emit("rebufferStart", middle)
            t += stall
            emit("rebufferEnd", middle)
            plan.final_run_t, plan.final_run_from = t, middle
            t += b - middle
        else:
            t += b - a
        last = i == len(plan.sections) - 1
        if not last and not plan.seek_between[i]:
            emit("pause", b)
    end = plan.sections[-1][1] if plan.sections else 0.0
    if plan.ending == "ended":
        emit("ended", end)
    elif plan.ending == "error":
        emit("error", end, code="MEDIA_ERR_DECODE", message="synthetic")
    elif plan.ending == "pause":
        emit("pause", end)
    return out  # "closed": no last event; the heartbeat after it closes the section


def open_session(client: Any, plan: Plan, key: str) -> tuple[str, datetime]:
    """The plan's tracking session (when it has one) and playback session, over HTTP
    (`client`: an httpx.Client on the API's base URL); (session id, when it opened)."""
    common = _headers(plan, key)
    headers = dict(common, **{"X-Device-Id": plan.device_id})
    if plan.tracked:
        query = {"userId": plan.user_id} if plan.user_id else {}
        r = client.post(
            f"/v0/playouts/{plan.playout}/tracking/session", params=query, headers=common
        )
        r.raise_for_status()
        headers["X-MediaMill-Tracking"] = r.headers["x-mediamill-tracking"]
    r = client.post(f"/v0/assets/{plan.asset_id}/playback-sessions", headers=headers)
    r.raise_for_status()
    return r.json()["sessionId"], datetime.now(UTC)


def _headers(plan: Plan, key: str) -> dict[str, str]:
    return {
        "X-API-Key": key,
        "User-Agent": USER_AGENTS[plan.device_class],
        "X-Forwarded-For": plan.address,
    }


def send(
    client: Any, plan: Plan, key: str, sid: str, opened: datetime, seconds_per_s: float
) -> None:
    """The plan's events (some batches late or twice), a heartbeat, and the end."""
    common = _headers(plan, key)
    plan.opened_at = opened.isoformat()
    events = events_of(plan, opened, seconds_per_s)
    batches = [b for b in (events[: len(events) // 2], events[len(events) // 2 :]) if b]
    if plan.late:
        batches.reverse()  # the later batch arrives first
    if plan.duplicate:
        batches.append(batches[0])  # a retry of a batch already taken
    for batch in batches:
        r = client.post(
            f"/v0/playback-sessions/{sid}/events", json={"events": batch}, headers=common
        )
        r.raise_for_status()
    last = plan.sections[-1][1] if plan.sections and plan.plays else 0.0
    if plan.ending == "closed":
        plan.closed_at = datetime.now(UTC).isoformat()
    r = client.post(
        f"/v0/playback-sessions/{sid}/heartbeat",
        json={"positionSeconds": last, "isPaused": plan.ending != "closed"},
        headers=common,
    )
    r.raise_for_status()
    client.delete(f"/v0/playback-sessions/{sid}", headers=common).raise_for_status()


def play_all(client: Any, plans: list[Plan], key: str, seconds_per_s: float) -> list[str]:
    """Open every plan's session, wait until each one's compressed timeline has passed
    (a player cannot report what has not happened yet), then send them all."""
    opened = [open_session(client, plan, key) for plan in plans]
    last = max(
        (
            at + timedelta(seconds=_timeline_s(p) * seconds_per_s)
            for p, (_, at) in zip(plans, opened, strict=True)
        ),
        default=datetime.now(UTC),
    )
    time.sleep(max(0.0, (last - datetime.now(UTC)).total_seconds()) + 0.05)
    for plan, (sid, at) in zip(plans, opened, strict=True):
        send(client, plan, key, sid, at, seconds_per_s)
    return [sid for sid, _ in opened]


def _timeline_s(plan: Plan) -> float:
    return plan.watched_s + sum(plan.rebuffer_s) + 2 * len(plan.sections) + 1


def main(argv: list[str] | None = None) -> int:
    import httpx

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", required=True, help="the API's base URL")
    parser.add_argument("--key", required=True, help="a playback key")
    parser.add_argument("--asset", action="append", required=True, help="<asset id>:<duration s>")
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    assets = {a.split(":")[0]: float(a.split(":")[1]) for a in args.asset}
    plans = plan_sessions(args.sessions, assets, args.seed)
    with httpx.Client(base_url=args.api, timeout=30) as client:
        play_all(client, plans, args.key, seconds_per_s=0.01)
    json.dump([asdict(p) for p in plans], sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
