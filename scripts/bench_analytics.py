#!/usr/bin/env python3
"""Benchmark view analytics on PostgreSQL: load --views views (10 events each) spread
over 90 days through the playback flush's writer and the `update_views` actor's
derivation and rollups, then time the analytics routes of one `mediamill serve`
process: p50/p99 of `total-views/summary`, `total-views/day` over 90 days,
`unique-devices/location`, an asset's `retention` and `qoe` (targets p99 < 200 ms
each), with peak RSS of the loading (worker) and API processes.

The load runs in a child process (the worker's part: storage.playback.write_buffered,
then workers.views.update until nothing is left) and reports events/s for the flush
writes, for the derivation and rollups, and for the whole. The reference, in the same
run: `GET /health` on the same server (same app, key check skipped, no query).

    python scripts/bench_analytics.py [--views 1000000] [--requests 200] [--write-readme]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import types
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))
from benchhttp import fresh_database, mediamill_cli, server_process  # noqa: E402
from benchlib import free_port, write_readme_block  # noqa: E402

TARGET_P99_MS = 200.0
DAYS = 90
ASSETS = 200
EVENTS_PER_VIEW = 10
WRITE_BATCH_VIEWS = 400  # 4,000 events a flush transaction, as MEDIAMILL_PLAYBACK_FLUSH_BATCH
COUNTRIES = ["US", "GB", "DE", "FR", "HU", "JP", "BR", "IN", "NL", None]
CLASSES = ["desktop", "mobile", "tablet", "tv", "other"]


def _percentile(values: list[float], q: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, max(0, round(q / 100 * len(data)) - 1))]


def _peak_rss_mb(pid: int | None = None) -> float:
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---- the load (a child process) -------------------------------------------------------------


def _events(sid: str, start: datetime, rng: random.Random, duration_s: float) -> list:
    from mediamill.schemas.playback import EventRecord, EventType

    watched = rng.uniform(5, min(duration_s, 600))
    stall = rng.choice([0.0, 0.0, rng.uniform(0.5, 8)])
    half = watched / 2
    last = rng.choice(["pause", "ended", "error"]) if watched >= duration_s - 1 else "pause"
    bitrate, height = rng.choice([(800_000, 360), (2_500_000, 720), (5_000_000, 1080)])
    plan = [
        ("viewStart", 0.0, 0.0, {"startupMs": rng.randrange(80, 4000), "protocol": "hls"}),
        ("playing", 0.1, 0.0, {}),
        ("renditionChange", 0.1, 0.0, {"bitrate": bitrate, "height": height}),
        ("rebufferStart", 0.1 + half / 2, half / 2, {}),
        ("rebufferEnd", 0.1 + half / 2 + stall, half / 2, {}),
        ("pause", 0.1 + half + stall, half, {}),
        ("playing", 3 + half + stall, half, {}),
        ("seek", 3 + half + stall, None, {"from": half, "to": half}),
        ("renditionChange", 3 + half + stall, half, {"bitrate": bitrate, "height": height}),
        (last, 3 + watched + stall, watched, {"code": "X"} if last == "error" else {}),
    ]
    return [
        EventRecord(
            session_id=sid,
            seq=seq,
            type=EventType(kind),
            occurred_at=start + timedelta(seconds=t),
            received_at=start + timedelta(seconds=t + 0.5),
            position_seconds=pos,
            data=data,
        )
        for seq, (kind, t, pos, data) in enumerate(plan)
    ]


def load(db_url: str, views: int, seed: int) -> dict:
    """Sessions and their events written as the flush writes them, then every view
    derived and every closed hour and day rolled up; timings and peak RSS."""
    from playback_support import packaged_asset

    from mediamill.config.settings import Settings
    from mediamill.schemas.playback import EventBatchRecord
    from mediamill.storage import playback as playback_rows
    from mediamill.storage.blobs import LocalBlobStore
    from mediamill.storage.db import Database
    from mediamill.storage.models import PlaybackSessionRow, TrackingSessionRow
    from mediamill.workers import views as view_updates
    from mediamill.workers.runtime import Runtime

    rng = random.Random(seed)
    db = Database(db_url)
    holder = types.SimpleNamespace(db=db)
    durations = {}
    for _ in range(ASSETS):
        duration_ms = rng.randrange(60, 3600) * 1000
        durations[packaged_asset(holder, duration_ms=duration_ms)] = duration_ms / 1000
    asset_ids = sorted(durations)
    now = datetime.now(UTC)
    first = now - timedelta(days=DAYS - 0.1)
    span_s = (now - timedelta(hours=1) - first).total_seconds()
    users = max(1, views // 3)
    write_s = 0.0
    started = time.perf_counter()
    sessions_table = PlaybackSessionRow.__table__
    tracking_table = TrackingSessionRow.__table__
    for offset in range(0, views, WRITE_BATCH_VIEWS):
        rows, tracking, records = [], [], []
        for i in range(offset, min(views, offset + WRITE_BATCH_VIEWS)):
            sid = f"{i:08d}-0000-4000-8000-{seed:012d}"
            at = first + timedelta(seconds=rng.uniform(0, span_s))
            asset = rng.choice(asset_ids)
            consent = rng.random() < 0.3
            tid = f"{i:08d}-1111-4000-8000-{seed:012d}"
            tracking.append(
                {
                    "id": tid,
                    "playout_id": rng.choice(["site", "app", "tv"]),
                    "source": "bench",
                    "user_id": f"user-{rng.randrange(users)}" if consent else None,
                    "created_at": at,
                    "expires_at": at + timedelta(days=1),
                    "ended_at": None,
                }
            )
            rows.append(
                {
                    "id": sid,
                    "asset_id": asset,
                    "package_id": "pkg-test",
                    "device_id": f"device-{rng.randrange(views // 2 + 1)}",
                    "tracking_session_id": tid,
                    "user_id": tracking[-1]["user_id"],
                    "client_id": "bench",
                    "duration_ms": int(durations[asset] * 1000),
                    "status": "ended",
                    "end_reason": "client",
                    "created_at": at,
                    "ended_at": at + timedelta(minutes=20),
                    "last_heartbeat_at": None,
                    "position_s": None,
                    "is_paused": False,
                    "expires_at": at,
                    "refresh_before": at,
                    "country": rng.choice(COUNTRIES),
                    "device_class": rng.choice(CLASSES),
                    "device_info": {},
                    "source": tracking[-1]["playout_id"],
                }
            )
            records.append(
                EventBatchRecord(session_id=sid, events=_events(sid, at, rng, durations[asset]))
            )
        t = time.perf_counter()
        with db.session() as s:
            s.connection().execute(tracking_table.insert(), tracking)
            s.connection().execute(sessions_table.insert(), rows)
            playback_rows.write_buffered(s, records)
        write_s += time.perf_counter() - t
    loaded_s = time.perf_counter() - started
    settings = Settings(_env_file=None, database_url=db_url, analytics_rollup_delay_s=0)
    rt = Runtime(settings, db, LocalBlobStore(Path(tempfile.mkdtemp())), None)
    t = time.perf_counter()
    while True:
        result = view_updates.update(rt, budget_s=600)
        if not (result.derived or result.removed or result.hours_rolled or result.days_rolled):
            break
    update_s = time.perf_counter() - t
    events = views * EVENTS_PER_VIEW
    db.dispose()
    return {
        "views": views,
        "events": events,
        "assets": asset_ids,
        "write_s": write_s,
        "generate_s": loaded_s - write_s,
        "update_s": update_s,
        "peak_rss_mb": _peak_rss_mb(),
    }


# ---- the queries ----------------------------------------------------------------------------


def time_requests(client: httpx.Client, path: str, params: dict, n: int) -> list[float]:
    for _ in range(min(10, n)):  # warm-up: connections, caches
        client.get(path, params=params).raise_for_status()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(path, params=params)
        out.append((time.perf_counter() - t) * 1000)
        r.raise_for_status()
    return out


def run(args: argparse.Namespace) -> dict:
    with (
        tempfile.TemporaryDirectory(prefix="bench-analytics-") as tmp,
        fresh_database(args.postgres_admin_url) as db_url,
    ):
        tmp_path = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
        env.update(
            MEDIAMILL_DATABASE_URL=db_url,
            MEDIAMILL_STORAGE_URL=(tmp_path / "store").as_uri(),
            MEDIAMILL_DATA_DIR=str(tmp_path / "data"),
            MEDIAMILL_HTTP_ACCESS_LOG="false",
        )
        mediamill_cli(env, "db", "upgrade")
        print(f"loading {args.views:,} views ...", file=sys.stderr)
        child = subprocess.run(
            [sys.executable, __file__, "--load-only", db_url, "--views", str(args.views)],
            env=env,
            capture_output=True,
            text=True,
        )
        if child.returncode != 0:
            raise SystemExit(f"the load failed:\n{child.stderr[-3000:]}")
        loaded = json.loads(child.stdout)
        key = mediamill_cli(env, "keys", "create", "--scope", "read", "--quiet").strip()
        port = free_port()
        serve = [sys.executable, "-m", "mediamill", "serve", "--port", str(port)]
        base = f"http://127.0.0.1:{port}"
        now = datetime.now(UTC)
        window = {
            "date_time_from": (now - timedelta(days=DAYS)).isoformat(),
            "date_time_to": now.isoformat(),
        }
        asset = loaded["assets"][0]
        queries = [
            ("GET /health (reference)", "/health", {}),
            ("total-views/summary, 90 days", "/analytics/v1/total-views/summary", window),
            (
                "total-views/day, 90 days",
                "/analytics/v1/total-views/day",
                {**window, "_limit": 100},
            ),
            ("unique-devices/location, 90 days", "/analytics/v1/unique-devices/location", window),
            ("assets/{id}/retention, 90 days", f"/analytics/v1/assets/{asset}/retention", window),
            ("qoe, 90 days", "/analytics/v1/qoe", window),
        ]
        timings = {}
        with server_process(serve, env, f"{base}/health", tmp_path / "serve.log") as pid:
            with httpx.Client(base_url=base, headers={"Authorization": key}, timeout=60) as c:
                for label, path, params in queries:
                    print(f"timing {label} ...", file=sys.stderr)
                    timings[label] = time_requests(c, path, params, args.requests)
            api_rss = _peak_rss_mb(pid)
    return {"loaded": loaded, "timings": timings, "api_rss_mb": api_rss, "requests": args.requests}


def render(found: dict) -> str:
    loaded, timings = found["loaded"], found["timings"]
    events = loaded["events"]
    total_s = loaded["write_s"] + loaded["update_s"]
    health = timings["GET /health (reference)"]
    ref = _percentile(health, 99)
    lines = [
        f"{loaded['views']:,} views ({events:,} events) over {DAYS} days, {ASSETS} assets, on "
        f"PostgreSQL; {found['requests']} sequential requests per route to one "
        "`mediamill serve` process, after 10 warm-up ones.",
        "",
        "| ingest stage | seconds | events/s |",
        "|---|---:|---:|",
        f"| flush writes (sessions and events, `write_buffered`) | {loaded['write_s']:.1f} | "
        f"{events / loaded['write_s']:,.0f} |",
        f"| derivation and rollups (`update_views`) | {loaded['update_s']:.1f} | "
        f"{events / loaded['update_s']:,.0f} |",
        f"| both | {total_s:.1f} | {events / total_s:,.0f} |",
        "",
        "| route | p50 ms | p99 ms | p99 / reference | target p99 < 200 ms |",
        "|---|---:|---:|---:|:---:|",
    ]
    for label, values in timings.items():
        p50, p99 = _percentile(values, 50), _percentile(values, 99)
        if label.startswith("GET /health"):
            lines.append(f"| {label} | {p50:.2f} | {p99:.2f} | 1.0x | |")
            continue
        mark = "✓" if p99 < TARGET_P99_MS else "✗"
        lines.append(f"| `{label}` | {p50:.1f} | {p99:.1f} | {p99 / ref:.0f}x | {mark} |")
    lines += [
        "",
        f"Peak RSS: loading (worker) process {loaded['peak_rss_mb']:.0f} MB, API process "
        f"{found['api_rss_mb']:.0f} MB.",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--views", type=int, default=1_000_000)
    p.add_argument("--requests", type=int, default=200, help="timed requests per route")
    p.add_argument("--seed", type=int, default=9)
    p.add_argument(
        "--postgres-admin-url",
        default=os.environ.get(
            "MEDIAMILL_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    p.add_argument("--load-only", metavar="DB_URL", help=argparse.SUPPRESS)
    p.add_argument("--write-readme", action="store_true")
    args = p.parse_args()
    if args.load_only:
        print(json.dumps(load(args.load_only, args.views, args.seed)))
        return
    text = render(run(args))
    print(text)
    if args.write_readme:
        write_readme_block("bench_analytics", text, heading="View analytics")


if __name__ == "__main__":
    main()
