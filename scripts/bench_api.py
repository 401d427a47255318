#!/usr/bin/env python3
"""Benchmark the HTTP API: latency of `POST /v0/jobs` (enqueue) and `GET /v0/jobs/{id}`
(status) at a fixed request rate, against a real `mediamill serve` process.

The server runs the distributed configuration: a fresh PostgreSQL database (created
for the run on the server of --postgres-admin-url, dropped afterwards), Redis (its
own database number, emptied before and after) and a local directory store holding
the one object every job ingests. No worker runs: jobs just queue.

The load is open loop: request i is due at start + i / rate whatever happened to
the earlier ones, and its latency is measured from that due time to the end of its
response. A stalled server therefore shows up as latency (no coordinated omission).
Each phase runs --duration-s at --rate, after a short warm-up. Two references run in
the same way in the same run: `GET /health` on the same server (the same app,
middleware and uvicorn, no auth and no DB), and a bare ASGI app under uvicorn (the
floor of loopback HTTP with this client). Server CPU per request comes from
/proc/<pid>/stat.

    python scripts/bench_api.py [--rate 100] [--duration-s 30] [--write-readme]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
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

TARGET_P99_MS = {"POST /v0/jobs": 25.0, "GET /v0/jobs/{id}": 10.0}
WARMUP_S = 3.0

BARE_APP = """
import sys, uvicorn

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"status":"ok"}'})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


async def bench_server(
    port: int, pid: int, admin: dict, read: dict, source_key: str, rate: float, duration_s: float
) -> tuple[list[Phase], int]:
    """The server's phases, and how many jobs its POSTs created (warm-up included)."""
    client = RawHttpClient("127.0.0.1", port)
    body = json.dumps({"source": {"key": source_key}}).encode()
    post_raw = client.prepare(
        "POST", "/v0/jobs", {**admin, "Content-Type": "application/json"}, body
    )
    health_raw = client.prepare("GET", "/health", {})
    created: list[str] = []
    get_raw: dict[str, bytes] = {}

    def post(_i: int) -> bytes:
        return post_raw

    def keep_id(answer: bytes) -> None:
        job_id = json.loads(answer)["id"]
        created.append(job_id)
        get_raw[job_id] = client.prepare("GET", f"/v0/jobs/{job_id}", read)

    def get(i: int) -> bytes:
        return get_raw[created[i % len(created)]]

    def health(_i: int) -> bytes:
        return health_raw

    try:
        # Warm-up: connections, caches, the DB pool, the key cache.
        await run_phase(client, "warm-up", post, rate, WARMUP_S, None, keep_id)
        await run_phase(client, "warm-up", get, rate, WARMUP_S, None)
        await run_phase(client, "warm-up", health, rate, WARMUP_S, None)
        phases = [await run_phase(client, "GET /health", health, rate, duration_s, pid)]
        phases.append(
            await run_phase(client, "POST /v0/jobs", post, rate, duration_s, pid, keep_id)
        )
        phases.append(await run_phase(client, "GET /v0/jobs/{id}", get, rate, duration_s, pid))
    finally:
        client.close()
    return phases, len(created)


async def bench_bare(port: int, pid: int, rate: float, duration_s: float) -> Phase:
    client = RawHttpClient("127.0.0.1", port)
    raw = client.prepare("GET", "/", {})
    try:
        await run_phase(client, "warm-up", lambda _i: raw, rate, WARMUP_S, None)
        return await run_phase(
            client, "bare uvicorn ASGI app", lambda _i: raw, rate, duration_s, pid
        )
    finally:
        client.close()


def run(args: argparse.Namespace) -> tuple[list[Phase], int, int]:
    """Every phase, the jobs the POSTs created and the jobs found queued afterwards."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-api-") as tmp,
        fresh_database(args.postgres_admin_url) as db_url,
    ):
        tmp_path = Path(tmp)
        store = tmp_path / "store"
        source_key = "bench/source.bin"
        (store / "bench").mkdir(parents=True)
        (store / source_key).write_bytes(os.urandom(1 << 20))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
        env.update(
            MEDIAMILL_DATABASE_URL=db_url,
            MEDIAMILL_BROKER_URL=args.redis_url,
            MEDIAMILL_STORAGE_URL=store.as_uri(),
            MEDIAMILL_DATA_DIR=str(tmp_path / "data"),
            MEDIAMILL_SIGNING_SECRET="bench-signing-secret-0123456789",
        )
        empty_redis(args.redis_url)
        mediamill_cli(env, "db", "upgrade")
        admin_key = json.loads(mediamill_cli(env, "keys", "create", "--scope", "admin", "--json"))
        read_key = json.loads(mediamill_cli(env, "keys", "create", "--scope", "read", "--json"))
        admin = {"X-API-Key": admin_key["apiKey"]}
        read = {"X-API-Key": read_key["apiKey"]}
        try:
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            serve = [sys.executable, "-m", "mediamill", "serve", "--port", str(port)]
            with server_process(serve, env, f"{base}/health", tmp_path / "serve.log") as pid:
                phases, created = asyncio.run(
                    bench_server(port, pid, admin, read, source_key, args.rate, args.duration_s)
                )
            port = free_port()
            bare = [sys.executable, "-c", BARE_APP, str(port)]
            with server_process(
                bare, env, f"http://127.0.0.1:{port}/", tmp_path / "bare.log"
            ) as pid:
                phases.insert(
                    0,
                    asyncio.run(bench_bare(port, pid, args.rate, args.duration_s)),
                )
            queued = _count_queued(db_url)
        finally:
            empty_redis(args.redis_url)
    return phases, created, queued


def _count_queued(db_url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM jobs WHERE status = 'queued'")).scalar()
    finally:
        engine.dispose()


def render(phases: list[Phase], args: argparse.Namespace, created: int, queued: int) -> str:
    lines = [
        f"Measured by `scripts/bench_api.py` on this machine ({os.cpu_count()} cores): "
        f"{args.rate:g} requests/s for {args.duration_s:g} s per row, open loop (each request "
        "is due at a fixed time and its latency runs from that time, so a stall is not "
        "hidden), over loopback with keep-alive, against one `mediamill serve` (uvicorn) "
        "process on PostgreSQL + Redis with no worker (jobs just queue). The first two rows "
        "are references from the same run: a bare ASGI app under uvicorn, and `GET /health` "
        "on the same server (same app and middleware, no auth, no database).",
        "",
        "| request | sent | ok | p50 | p90 | p99 | max | target p99 | server CPU / request |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in phases:
        ok = len(p.latencies_ms)
        target = TARGET_P99_MS.get(p.name)
        p99 = p.pct(99) if ok else float("nan")
        verdict = "" if target is None else f"< {target:g} ms " + ("✓" if p99 < target else "✗")
        errors = (
            "" if not p.errors else " (" + ", ".join(f"{k}: {v}" for k, v in p.errors.items()) + ")"
        )
        cpu = f"{p.server_cpu_s / max(1, p.sent) * 1000:.2f} ms"
        lines.append(
            f"| `{p.name}` | {p.sent} | {ok}{errors} | {p.pct(50):.2f} ms | {p.pct(90):.2f} ms "
            f"| **{p99:.2f} ms** | {max(p.latencies_ms):.2f} ms | {verdict} | {cpu} |"
        )
    lag = max(p.max_send_lag_ms for p in phases)
    lines += [
        "",
        f"The load generator was at most {lag:.1f} ms late sending any request. "
        f"The `POST`s (warm-up included) created {created} jobs; {queued} were found queued "
        "in the database afterwards.",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=100.0, help="requests per second")
    p.add_argument("--duration-s", type=float, default=30.0, help="seconds per phase")
    p.add_argument(
        "--postgres-admin-url",
        default=os.environ.get(
            "MEDIAMILL_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
        help="a PostgreSQL database to connect to while creating the run's own database",
    )
    p.add_argument(
        "--redis-url",
        default=os.environ.get("MEDIAMILL_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
        help="a Redis database for the run alone: it is emptied before and after",
    )
    p.add_argument("--write-readme", action="store_true")
    args = p.parse_args()
    phases, created, queued = run(args)
    text = render(phases, args, created, queued)
    print(text)
    if args.write_readme:
        write_readme_block("bench_api", text, heading="HTTP API")


if __name__ == "__main__":
    main()
