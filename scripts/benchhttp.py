"""Open-loop HTTP load for the API benchmarks (scripts/bench_api.py,
scripts/bench_playback.py): a minimal keep-alive client, fixed-rate phases measured from
each request's due time (no coordinated omission), and the processes and databases a
run needs (a `mediamill serve` process, a fresh PostgreSQL database, an emptied Redis)."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SPIN_S = 0.002
START_TIMEOUT_S = 60.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


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
def server_process(args: list[str], env: dict[str, str], url: str, log: Path) -> Iterator[int]:
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


def empty_redis(url: str) -> None:
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
    """Send `rate` requests a second for `duration_s`, open loop. The generator's own
    garbage collector is off meanwhile: a collection pausing this process would show as
    the server's latency."""
    gc.collect()
    gc.disable()
    try:
        return await _run_phase(
            client, name, make_request, rate, duration_s, server_pid, on_response
        )
    finally:
        gc.enable()


async def _run_phase(
    client: RawHttpClient,
    name: str,
    make_request: Callable[[int], bytes],
    rate: float,
    duration_s: float,
    server_pid: int | None,
    on_response: Callable[[bytes], None] | None,
) -> Phase:
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


def mediamill_cli(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "mediamill", *args], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"mediamill {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout
