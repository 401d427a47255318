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
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from benchlib import free_port, write_readme_block  # noqa: E402

TARGET_P99_MS = {"POST /v0/jobs": 25.0, "GET /v0/jobs/{id}": 10.0}
WARMUP_S = 3.0
SPIN_S = 0.002
START_TIMEOUT_S = 60.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

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


@dataclass
class Phase:
    """One request kind at the fixed rate: latencies (ms) from due time to response end."""

    name: str
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    max_send_lag_ms: float = 0.0  # how late the generator itself got (its own health)
    server_cpu_s: float = 0.0

    def pct(self, q: float) -> float:
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, max(0, round(q / 100 * len(data)) - 1))]


def _cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _wait_up(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server did not answer {url} within {START_TIMEOUT_S} s")


@contextmanager
def _process(args: list[str], env: dict[str, str], url: str, log: Path) -> Iterator[int]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_up(url, proc, log)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """An empty PostgreSQL database for this run, dropped afterwards."""
    from sqlalchemy import create_engine, text

    name = f"mediamill_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _empty_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


class RawHttpClient:
    """A minimal HTTP/1.1 keep-alive client over asyncio streams: the requests are
    prepared bytes and only the status, Content-Length (or chunked) body are parsed,
    so the client adds tens of microseconds, not the milliseconds of a full client
    library, to what is measured. A connection is reused when idle, opened when not."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0

    @staticmethod
    def prepare(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        while self.idle:
            reader, writer = self.idle.pop()
            try:
                writer.write(raw)
                status_line = await reader.readline()
            except OSError:
                status_line = b""
            if status_line:
                return await self._finish(reader, writer, status_line)
            writer.close()  # the server closed this idle connection (keep-alive timeout)
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.opened += 1
        writer.write(raw)
        return await self._finish(reader, writer, await reader.readline())

    async def _finish(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status_line: bytes
    ) -> tuple[int, bytes]:
        try:
            status = int(status_line.split()[1])
            length, chunked, close = 0, False, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                name, value = name.strip().lower(), value.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = value == b"chunked"
                elif name == b"connection":
                    close = value == b"close"
            if chunked:
                body = b""
                while size := int((await reader.readline()).strip(), 16):
                    body += await reader.readexactly(size + 2)
                    body = body[:-2]
                await reader.readline()
            else:
                body = await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if close:
            writer.close()
        else:
            self.idle.append((reader, writer))
        return status, body

    def close(self) -> None:
        for _reader, writer in self.idle:
            writer.close()
        self.idle.clear()


async def run_phase(
    client: RawHttpClient,
    name: str,
    make_request: Callable[[int], bytes],
    rate: float,
    duration_s: float,
    server_pid: int | None,
    on_response: Callable[[bytes], None] | None = None,
) -> Phase:
    """Send `rate` requests a second for `duration_s`, open loop."""
    phase = Phase(name)
    total = int(rate * duration_s)
    cpu_before = _cpu_s(server_pid) if server_pid else 0.0
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05

    async def one(i: int, due: float) -> None:
        try:
            status, body = await client.send(make_request(i))
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            key = type(exc).__name__
            phase.errors[key] = phase.errors.get(key, 0) + 1
            return
        done = loop.time()
        if status >= 300:
            phase.errors[str(status)] = phase.errors.get(str(status), 0) + 1
            return
        if on_response is not None:
            on_response(body)
        phase.latencies_ms.append((done - due) * 1000)

    tasks = []
    for i in range(total):
        due = start + i / rate
        # asyncio's timers wake up to a millisecond late (epoll's resolution): sleep to
        # just before the due time, then yield to the loop until it comes.
        if (delay := due - loop.time() - SPIN_S) > 0:
            await asyncio.sleep(delay)
        while loop.time() < due:
            await asyncio.sleep(0)
        phase.max_send_lag_ms = max(phase.max_send_lag_ms, (loop.time() - due) * 1000)
        tasks.append(asyncio.create_task(one(i, due)))
        phase.sent += 1
    await asyncio.gather(*tasks)
    if server_pid:
        phase.server_cpu_s = _cpu_s(server_pid) - cpu_before
    return phase


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


def _cli(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "mediamill", *args], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"mediamill {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


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
        _empty_redis(args.redis_url)
        _cli(env, "db", "upgrade")
        admin_key = json.loads(_cli(env, "keys", "create", "--scope", "admin", "--json"))
        read_key = json.loads(_cli(env, "keys", "create", "--scope", "read", "--json"))
        admin = {"X-API-Key": admin_key["apiKey"]}
        read = {"X-API-Key": read_key["apiKey"]}
        try:
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            serve = [sys.executable, "-m", "mediamill", "serve", "--port", str(port)]
            with _process(serve, env, f"{base}/health", tmp_path / "serve.log") as pid:
                phases, created = asyncio.run(
                    bench_server(port, pid, admin, read, source_key, args.rate, args.duration_s)
                )
            port = free_port()
            bare = [sys.executable, "-c", BARE_APP, str(port)]
            with _process(bare, env, f"http://127.0.0.1:{port}/", tmp_path / "bare.log") as pid:
                phases.insert(
                    0,
                    asyncio.run(bench_bare(port, pid, args.rate, args.duration_s)),
                )
            queued = _count_queued(db_url)
        finally:
            _empty_redis(args.redis_url)
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
