#!/usr/bin/env python3
"""Benchmark playback heartbeats: latency at a fixed rate against one `mediamill serve`
process on PostgreSQL + Redis with a `mediamill worker` flushing, the highest rate one
process sustains with p99 under 50 ms, and the count accepted against the count stored.

The load is open loop (scripts/benchhttp.py): heartbeat i is due at start + i / rate
whatever happened to the earlier ones, and its latency runs from that due time, so a
stall shows. Heartbeats go round-robin to --sessions playback sessions with a
`playback` key, as players would. The reference, in the same run: `GET /health` on the
same server at the same rate (same app, middleware and uvicorn; no key, no Redis).
After the runs, every heartbeat the API accepted (answered 200) must be in the
database, each once: the flush is part of what is measured.

    python scripts/bench_playback.py [--rate 1000] [--duration-s 30] [--write-readme]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))
from benchhttp import (  # noqa: E402
    Phase,
    RawHttpClient,
    empty_redis,
    fresh_database,
    mediamill_cli,
    run_phase,
    server_process,
)
from benchlib import free_port, write_readme_block  # noqa: E402

TARGET_P99_MS = 20.0
SUSTAIN_P99_MS = 50.0
WARMUP_S = 3.0
STEP_S = 10.0
STORED_TIMEOUT_S = 120.0


def _packaged_asset(db_url: str, duration_ms: int) -> str:
    """An analysed asset with a ready package, recorded straight in the database."""
    from playback_support import packaged_asset

    from mediamill.storage.db import Database

    db = Database(db_url)
    try:
        return packaged_asset(types.SimpleNamespace(db=db), duration_ms=duration_ms)
    finally:
        db.dispose()


def _stored_heartbeats(db_url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM playback_heartbeats")).scalar())
    finally:
        engine.dispose()


async def _sessions(client: RawHttpClient, key: str, asset_id: str, count: int) -> list[str]:
    ids = []
    for i in range(count):
        raw = client.prepare(
            "POST",
            f"/v0/assets/{asset_id}/playback-sessions",
            {"X-API-Key": key, "X-Device-Id": f"bench-device-{i}"},
        )
        status, body = await client.send(raw)
        if status != 201:
            raise SystemExit(f"creating a session answered {status}: {body[:300]!r}")
        ids.append(json.loads(body)["sessionId"])
    return ids


class Heartbeats:
    """Prepared heartbeat requests, round-robin over the sessions; counts the 200s."""

    def __init__(self, client: RawHttpClient, key: str, sessions: list[str]) -> None:
        headers = {"X-API-Key": key, "Content-Type": "application/json"}
        self.raw = [
            [
                client.prepare(
                    "POST",
                    f"/v0/playback-sessions/{sid}/heartbeat",
                    headers,
                    json.dumps({"positionSeconds": p, "isPaused": False}).encode(),
                )
                for p in (1.0, 2.0, 3.0, 4.0)
            ]
            for sid in sessions
        ]
        self.accepted = 0

    def request(self, i: int) -> bytes:
        per_session = self.raw[i % len(self.raw)]
        return per_session[(i // len(self.raw)) % len(per_session)]

    def ok(self, _body: bytes) -> None:
        self.accepted += 1


async def bench(
    port: int, pid: int, key: str, asset_id: str, args: argparse.Namespace
) -> tuple[list[Phase], list[Phase], Heartbeats]:
    client = RawHttpClient("127.0.0.1", port)
    try:
        sessions = await _sessions(client, key, asset_id, args.sessions)
        beats = Heartbeats(client, key, sessions)
        health_raw = client.prepare("GET", "/health", {})
        rate, duration_s = args.rate, args.duration_s
        await run_phase(client, "warm-up", beats.request, rate, WARMUP_S, None, beats.ok)
        await run_phase(client, "warm-up", lambda _i: health_raw, rate, WARMUP_S, None)
        phases = [
            await run_phase(client, "GET /health", lambda _i: health_raw, rate, duration_s, pid),
            await run_phase(
                client, "POST heartbeat", beats.request, rate, duration_s, pid, beats.ok
            ),
        ]
        steps: list[Phase] = []
        step_rate = args.step_from
        while step_rate <= args.step_to:
            step = await run_phase(
                client, f"{step_rate:g}/s", beats.request, step_rate, STEP_S, pid, beats.ok
            )
            steps.append(step)
            if step.errors or not step.latencies_ms or step.pct(99) >= SUSTAIN_P99_MS:
                break
            step_rate += args.step_by
            await asyncio.sleep(2)  # let a backlog of the last step drain
    finally:
        client.close()
    return phases, steps, beats


def run(args: argparse.Namespace) -> tuple[list[Phase], list[Phase], int, int]:
    with (
        tempfile.TemporaryDirectory(prefix="bench-playback-") as tmp,
        fresh_database(args.postgres_admin_url) as db_url,
    ):
        tmp_path = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
        env.update(
            MEDIAMILL_DATABASE_URL=db_url,
            MEDIAMILL_BROKER_URL=args.redis_url,
            MEDIAMILL_STORAGE_URL=(tmp_path / "store").as_uri(),
            MEDIAMILL_DATA_DIR=str(tmp_path / "data"),
            MEDIAMILL_SIGNING_SECRET="bench-signing-secret-0123456789",
            # One client address sends for every player here.
            MEDIAMILL_PLAYBACK_RATE_PER_S="1000000",
            MEDIAMILL_WORKER_THREADS="2",
            # nginx in front logs requests; uvicorn's line per request is CPU on the path.
            MEDIAMILL_HTTP_ACCESS_LOG="false",
        )
        empty_redis(args.redis_url)
        mediamill_cli(env, "db", "upgrade")
        key = mediamill_cli(env, "keys", "create", "--scope", "playback", "--quiet").strip()
        asset_id = _packaged_asset(db_url, duration_ms=3 * 3600 * 1000)
        worker_log = (tmp_path / "worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "mediamill", "worker"],
            env=env,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
        )
        try:
            port = free_port()
            serve = [sys.executable, "-m", "mediamill", "serve", "--port", str(port)]
            url = f"http://127.0.0.1:{port}/health"
            with server_process(serve, env, url, tmp_path / "serve.log") as pid:
                phases, steps, beats = asyncio.run(bench(port, pid, key, asset_id, args))
                deadline = time.monotonic() + STORED_TIMEOUT_S
                while time.monotonic() < deadline:
                    stored = _stored_heartbeats(db_url)
                    if stored >= beats.accepted:
                        break
                    time.sleep(0.5)
                time.sleep(2)  # nothing more arrives late
                stored = _stored_heartbeats(db_url)
            if any(p.errors for p in [*phases, *steps]):
                log_tail = (tmp_path / "serve.log").read_text(errors="replace")[-3000:]
                print(f"--- the server's log ends:\n{log_tail}", file=sys.stderr)
        finally:
            worker.terminate()
            worker.wait(timeout=60)
            worker_log.close()
            empty_redis(args.redis_url)
    return phases, steps, beats.accepted, stored


def render(
    phases: list[Phase], steps: list[Phase], accepted: int, stored: int, args: argparse.Namespace
) -> str:
    health, beat = phases
    ratio = beat.pct(99) / health.pct(99) if health.latencies_ms else float("nan")
    lines = [
        f"Measured by `scripts/bench_playback.py` on this machine ({os.cpu_count()} cores): "
        f"heartbeats at {args.rate:g}/s for {args.duration_s:g} s, open loop, round-robin over "
        f"{args.sessions} playback sessions with a `playback` key, against one `mediamill "
        "serve` process on PostgreSQL + Redis, a `mediamill worker` flushing. The reference "
        "row is `GET /health` on the same server at the same rate, in the same run.",
        "",
        "| request | sent | ok | p50 | p90 | p99 | max | p99 / reference p99 "
        "| server CPU / request |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p, rel in ((health, "1"), (beat, f"{ratio:.1f}x")):
        lines.append(_row(p, rel))
    verdict = "✓" if beat.latencies_ms and beat.pct(99) < TARGET_P99_MS else "✗"
    lines += [
        "",
        f"Target: heartbeat p99 < {TARGET_P99_MS:g} ms at {args.rate:g}/s: {verdict}.",
        "",
        f"Rising rates, {STEP_S:g} s each, until p99 reaches {SUSTAIN_P99_MS:g} ms or a "
        "request fails:",
        "",
        "| rate | sent | ok | p50 | p90 | p99 | max | | server CPU / request |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    sustained = [s for s in steps if not s.errors and s.latencies_ms and s.pct(99) < SUSTAIN_P99_MS]
    for s in steps:
        lines.append(_row(s, ""))
    best = sustained[-1].name if sustained else "none of the rates tried"
    lag = max(p.max_send_lag_ms for p in [*phases, *steps])
    lines += [
        "",
        f"Highest rate sustained with p99 under {SUSTAIN_P99_MS:g} ms: **{best}**. "
        f"Heartbeats accepted (warm-up and steps included): {accepted}; stored in the "
        f"database afterwards: {stored} ({'equal' if accepted == stored else 'NOT equal'}). "
        f"The load generator was at most {lag:.1f} ms late sending any request.",
    ]
    return "\n".join(lines)


def _row(p: Phase, relative: str) -> str:
    ok = len(p.latencies_ms)
    errors = (
        "" if not p.errors else " (" + ", ".join(f"{k}: {v}" for k, v in p.errors.items()) + ")"
    )
    cpu = f"{p.server_cpu_s / max(1, p.sent) * 1000:.2f} ms"
    if not ok:
        return f"| `{p.name}` | {p.sent} | 0{errors} | | | | | {relative} | {cpu} |"
    return (
        f"| `{p.name}` | {p.sent} | {ok}{errors} | {p.pct(50):.2f} ms | {p.pct(90):.2f} ms "
        f"| **{p.pct(99):.2f} ms** | {max(p.latencies_ms):.2f} ms | {relative} | {cpu} |"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=1000.0, help="heartbeats per second")
    p.add_argument("--duration-s", type=float, default=30.0, help="seconds at --rate")
    p.add_argument("--sessions", type=int, default=200, help="playback sessions")
    p.add_argument("--step-from", type=float, default=500.0, help="first rate of the climb")
    p.add_argument("--step-by", type=float, default=250.0)
    p.add_argument("--step-to", type=float, default=4000.0)
    p.add_argument(
        "--postgres-admin-url",
        default=os.environ.get(
            "MEDIAMILL_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
    )
    p.add_argument(
        "--redis-url",
        default=os.environ.get("MEDIAMILL_BENCH_PLAYBACK_REDIS_URL", "redis://127.0.0.1:6379/13"),
        help="a Redis database for the run alone: it is emptied before and after",
    )
    p.add_argument("--write-readme", action="store_true")
    args = p.parse_args()
    phases, steps, accepted, stored = run(args)
    text = render(phases, steps, accepted, stored, args)
    print(text)
    if args.write_readme:
        write_readme_block("bench_playback", text, heading="Playback heartbeats")
    if accepted != stored:
        raise SystemExit(f"accepted {accepted} heartbeats but {stored} are stored")


if __name__ == "__main__":
    main()
