#!/usr/bin/env python3
"""Crash test: SIGKILL `mediamill worker` processes mid-work, then check nothing was lost.

Usage: chaos.py [--jobs 50] [--kills 10] [--workers 2] [--threads 2] [--kill-every-s 3]
       [--seed N] [--timeout-s 600] [--work-dir DIR] [--json]

Runs against the distributed stack the MEDIAMILL_* environment names: a Redis broker
(required: kills are matched to running jobs through Redis), the database and the
store. Use a stack of its own: it upgrades the database, starts its own worker
processes, registers a webhook endpoint on a loopback receiver, and checks every row
and every object it finds. It submits a mix of jobs (analysis only, audio renditions,
audio and video ladders with packages, re-packages, the same bytes twice) made of
tiny generated media, SIGKILLs a random worker that is running a job every few
seconds (restarting it each time), waits for everything to settle, and checks:

- every job succeeded, exactly one row per submission and nothing failed;
- every asset, rendition and package row matches the stored bytes (sha256, size),
  every key a row names exists, and every key in the store is named by a row
  (nothing partial, temporary or staged left over);
- no two rendition rows per (asset, spec) and no two package rows per (asset, ladder);
- every outbox event reached the receiver at least once, correctly signed;
- every kill hit a worker while it was running a job (so the run proves something).

Short leases and timeouts are set unless the environment sets them (see CHAOS_ENV).
Exit status 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import wave
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mediamill.config.settings import Settings
    from mediamill.schemas.job_params import RenditionPlan
    from mediamill.storage.blobs import BlobStore
    from mediamill.storage.models import JobRow
    from mediamill.workers.runtime import Runtime

# Chaos-friendly values, used unless the environment sets its own: recovery within a
# few seconds (row lease, Redis heartbeat, sweep), quick webhook retries, and small
# ladders so that tiny media keep every worker busy for a few seconds at most.
CHAOS_ENV: dict[str, str] = {
    "MEDIAMILL_JOB_LEASE_S": "4",  # the row heartbeat beats every lease / 4
    # The cap on lost runs stops a file that kills workers; here the killing is ours,
    # one job may be hit by several kills (and a 4 s lease lapses under load), and
    # every job must still succeed.
    "MEDIAMILL_MAX_LOST_RUNS": "100",
    "MEDIAMILL_BROKER_HEARTBEAT_TIMEOUT_S": "3",
    "MEDIAMILL_SWEEP_INTERVAL_S": "1",
    "MEDIAMILL_REQUEUE_AFTER_S": "30",
    "MEDIAMILL_STORE_ORPHAN_AGE_S": "5",  # what a writer killed mid-write left in the store
    "MEDIAMILL_RETRY_MIN_BACKOFF_MS": "200",
    "MEDIAMILL_RETRY_MAX_BACKOFF_MS": "2000",
    "MEDIAMILL_WEBHOOK_DISPATCH_INTERVAL_S": "0.2",
    "MEDIAMILL_WEBHOOK_TIMEOUT_S": "1",
    "MEDIAMILL_WEBHOOK_DELIVERY_LEASE_S": "2",  # 3 s in effect (2 x timeout + 1)
    "MEDIAMILL_WEBHOOK_RETRY_SCHEDULE_S": "0.5,1,1,2,2,2,2,2,2,2",
    "MEDIAMILL_DEFAULT_AUDIO_RENDITIONS": "mp3:128000:2,aac:96000:2",
    "MEDIAMILL_PACKAGE_AUDIO_LADDER": "aac:64000:2,aac:96000:2",
    "MEDIAMILL_DEFAULT_VIDEO_LADDER": "240:300000,144:120000",
    "MEDIAMILL_PACKAGE_SEGMENT_S": "2",
}
RECEIVER_HOST = "127.0.0.1"

# Shares of each kind of job in the mix (the remainder goes to audio renditions).
KIND_SHARES = {
    "analysis": 0.16,  # ingest + analysis only
    "audio-renditions": 0.24,  # ingest + two renditions asked for, no package
    "audio-package": 0.22,  # ingest + default renditions + AAC ladder + HLS/DASH package
    "video-package": 0.16,  # ingest + video ladder + package
    "package": 0.12,  # re-package an asset packaged by an earlier job
    "duplicate": 0.10,  # the same bytes as an earlier job, submitted right after it
}
BASE_KINDS = ("analysis", "audio-renditions", "audio-package", "video-package")
PACKAGED_KINDS = ("audio-package", "video-package")
AUDIO_RENDITIONS = [
    {"format": "mp3", "bitrate": 96000, "channels": 2},
    {"format": "ogg", "bitrate": 96000, "channels": 2},
]
WORKER_START_TIMEOUT_S = 60.0
BUSY_WAIT_S = 20.0  # how long a kill waits for a worker to be running a job
MAX_KILLS_PER_HIT = 2  # kills that find no job running are repeated, up to this bound
QUEUE_NAME = "mediamill"


# ---- the plan and the media -------------------------------------------------------------


@dataclass
class JobPlan:
    index: int
    kind: str
    media: int | None = None  # index into the media files (None for a package job)
    target: int | None = None  # package: the job whose asset is packaged again
    job_id: str | None = None
    submitted_at_s: float | None = None


def plan_jobs(count: int, rng: random.Random) -> list[JobPlan]:
    """`count` jobs in submission order: a shuffled mix of kinds, each duplicate right
    after the job whose bytes it repeats, each package job somewhere after the job
    whose asset it packages again."""
    counts = {kind: int(count * share) for kind, share in KIND_SHARES.items()}
    counts["audio-renditions"] += count - sum(counts.values())
    order = [kind for kind in BASE_KINDS for _ in range(counts[kind])]
    rng.shuffle(order)
    plans = [JobPlan(0, kind, media=i) for i, kind in enumerate(order)]
    links: dict[int, JobPlan] = {}  # id(duplicate or package plan) -> the plan it follows
    sources = [p for p in plans if p.kind in ("analysis", "audio-renditions")]
    for source in rng.sample(sources, min(counts["duplicate"], len(sources))):
        duplicate = JobPlan(0, "duplicate", media=source.media)
        links[id(duplicate)] = source
        plans.insert(plans.index(source) + 1, duplicate)
    packaged = [p for p in plans if p.kind in ("audio-package", "video-package")]
    for target in rng.sample(packaged, min(counts["package"], len(packaged))):
        repackage = JobPlan(0, "package")
        links[id(repackage)] = target
        plans.insert(rng.randint(plans.index(target) + 1, len(plans)), repackage)
    for i, p in enumerate(plans):
        p.index = i
    for p in plans:
        if id(p) in links:
            p.target = links[id(p)].index
    return plans


def write_wav(path: Path, frequency_hz: float, duration_s: float, rate_hz: int = 48000) -> None:
    """A stereo 16-bit WAV: a tone with a slow tremolo, a different one per file."""
    t = np.arange(int(duration_s * rate_hz)) / rate_hz
    tone = 0.3 * np.sin(2 * np.pi * frequency_hz * t) * (0.7 + 0.3 * np.sin(2 * np.pi * 1.5 * t))
    right = 0.25 * np.sin(2 * np.pi * frequency_hz * 1.5 * t)
    samples = (np.stack([tone, right], axis=1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate_hz)
        out.writeframes(samples.tobytes())


def write_video(path: Path, frequency_hz: float, duration_s: float) -> None:
    """A 320x240 H.264 + AAC clip (ffmpeg's test pattern), keyframes every second."""
    from mediamill.pipeline.ffmpeg import run_ffmpeg

    run_ffmpeg(
        [
            "-f", "lavfi", "-i", f"testsrc=size=320x240:rate=25:duration={duration_s}",
            "-f", "lavfi", "-i", f"sine=frequency={frequency_hz}:duration={duration_s}",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "25",
            "-c:a", "aac", "-b:a", "96k", "-ac", "2", "-shortest", "-y", str(path),
        ],
        timeout_s=60,
    )  # fmt: skip


def make_media(directory: Path, plans: list[JobPlan], rng: random.Random) -> dict[int, Path]:
    """One file per job that brings its own bytes: WAVs of 1-2 s, 2 s videos."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[int, Path] = {}
    for p in plans:
        if p.kind in ("duplicate", "package") or p.media is None:
            continue
        frequency_hz = 180.0 + 23.0 * p.media
        if p.kind == "video-package":
            files[p.media] = directory / f"clip-{p.media:03d}.mp4"
            write_video(files[p.media], frequency_hz, 2.0)
        else:
            files[p.media] = directory / f"tone-{p.media:03d}.wav"
            write_wav(files[p.media], frequency_hz, round(rng.uniform(1.0, 2.0), 2))
    return files


def job_plan_param(kind: str) -> RenditionPlan | None:
    """The ingest job's `plan` (as POST /v0/jobs builds it); None: defaults + package."""
    from mediamill.schemas.job_params import RenditionPlan

    if kind == "analysis":
        return RenditionPlan(renditions=[], defaults=False, package=False)
    if kind == "audio-renditions":
        return RenditionPlan.model_validate(
            {"renditions": AUDIO_RENDITIONS, "defaults": False, "package": False}
        )
    return None


# ---- a webhook receiver -----------------------------------------------------------------


@dataclass
class Delivery:
    webhook_id: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP server on loopback that answers 200 to every POST and records it."""

    def __init__(self) -> None:
        self.received: list[Delivery] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    receiver.received.append(Delivery(headers.get("webhook-id", ""), headers, body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((RECEIVER_HOST, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{RECEIVER_HOST}:{self.server.server_address[1]}/hook"

    def ids(self) -> list[str]:
        with self.lock:
            return [d.webhook_id for d in self.received]

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# ---- the workers ------------------------------------------------------------------------


@dataclass
class Kill:
    at_s: float
    slot: int
    pid: int
    jobs: list[tuple[str, str]]  # (job id, stage) running under the worker's messages

    @property
    def mid_job(self) -> bool:
        return bool(self.jobs)


@dataclass
class Worker:
    slot: int
    process: subprocess.Popen
    broker_id: str
    log_path: Path


class WorkerPool:
    """`mediamill worker` subprocesses, each known by its Redis broker id (found as the
    new member of dramatiq's heartbeat set when it starts), so the jobs running under
    the messages it holds can be read from Redis and the database."""

    def __init__(self, env: dict[str, str], rt: Runtime, threads: int, log_dir: Path) -> None:
        import redis

        self.env, self.rt, self.threads, self.log_dir = env, rt, threads, log_dir
        self.client = redis.Redis.from_url(rt.settings.broker_url)
        self.namespace = rt.broker.namespace
        self.known_ids = {rt.broker.broker_id}
        self.workers: dict[int, Worker] = {}
        self.booting: tuple[int, subprocess.Popen, Path] | None = None
        self.exit_codes: list[int] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def _heartbeat_ids(self) -> set[str]:
        members = self.client.zrange(f"{self.namespace}:__heartbeats__", 0, -1)
        return {m.decode() for m in members}

    def spawn(self, slot: int) -> None:
        """Start a worker process for `slot`; `adopt` waits until it is up."""
        assert self.booting is None, "one worker boots at a time (its broker id is the new one)"
        self.known_ids |= self._heartbeat_ids()
        log_path = self.log_dir / f"worker-{slot}-{time.monotonic_ns()}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "mediamill", "worker", "--threads", str(self.threads)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        self.booting = (slot, process, log_path)

    def adopt(self) -> None:
        """Wait until the booting worker polls Redis: the heartbeat id nobody had
        before is its broker id."""
        if self.booting is None:
            return
        slot, process, log_path = self.booting
        deadline = time.monotonic() + WORKER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"worker exited with {process.returncode}: see {log_path}")
            new = self._heartbeat_ids() - self.known_ids
            if new:
                broker_id = sorted(new)[0]
                self.known_ids.add(broker_id)
                self.workers[slot] = Worker(slot, process, broker_id, log_path)
                self.booting = None
                return
            time.sleep(0.05)
        process.kill()
        raise RuntimeError(f"worker did not reach Redis within {WORKER_START_TIMEOUT_S} s")

    def start(self, slot: int) -> None:
        self.spawn(slot)
        self.adopt()

    def held_message_ids(self, worker: Worker) -> set[str]:
        """dramatiq message ids of the messages the worker has fetched and not acked."""
        from dramatiq import Message

        acks = f"{self.namespace}:__acks__.{worker.broker_id}.{QUEUE_NAME}"
        redis_ids = list(self.client.smembers(acks))
        if not redis_ids:
            return set()
        data = self.client.hmget(f"{self.namespace}:{QUEUE_NAME}.msgs", redis_ids)
        return {Message.decode(d).message_id for d in data if d}

    def running_jobs(self, worker: Worker) -> list[tuple[str, str, str]]:
        """(job id, stage, message id) of jobs running under a message the worker holds."""
        from sqlalchemy import select

        from mediamill.storage.models import JobRow

        held = self.held_message_ids(worker)
        if not held:
            return []
        with self.rt.db.session() as s:
            rows = s.execute(
                select(JobRow.id, JobRow.stage, JobRow.message_id).where(
                    JobRow.status == "running", JobRow.message_id.in_(held)
                )
            ).all()
        return [(r.id, r.stage, r.message_id) for r in rows]

    def kill_busy(
        self, rng: random.Random, started_at: float, wait_s: float, idle: Callable[[], object]
    ) -> Kill:
        """SIGKILL a random worker among those running a job (waiting up to `wait_s` for
        one, calling `idle` meanwhile), and record the jobs it was running that it can
        no longer finish. Workers are looked at in random order and the first one
        running a job is killed at once, so its jobs are read just before the signal."""
        deadline = time.monotonic() + wait_s
        while True:
            candidates = rng.sample(list(self.workers.values()), len(self.workers))
            for worker in candidates:
                before = {job_id: (stage, mid) for job_id, stage, mid in self.running_jobs(worker)}
                if before:
                    break
            if before or time.monotonic() > deadline:  # past it: an idle worker, a miss
                break
            idle()
            time.sleep(0.1)
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait(timeout=30)
        del self.workers[worker.slot]
        kill = Kill(round(time.monotonic() - started_at, 1), worker.slot, worker.process.pid, [])
        # Killed mid-job: still running under the same message after the kill (it did
        # not finish in between), which only a restart and redelivery can settle.
        with self.rt.db.session() as s:
            from mediamill.storage.models import JobRow

            for job_id, (stage, mid) in before.items():
                row = s.get(JobRow, job_id)
                if row is not None and row.status == "running" and row.message_id == mid:
                    kill.jobs.append((job_id, stage))
        return kill

    def stop_all(self, timeout_s: float = 60.0) -> None:
        if self.booting is not None:
            try:
                self.adopt()
            except RuntimeError:  # it did not come up (and was killed): nothing to stop
                self.booting = None
        for worker in self.workers.values():
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        for worker in self.workers.values():
            try:
                self.exit_codes.append(worker.process.wait(timeout=timeout_s))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                self.exit_codes.append(worker.process.wait(timeout=30))
        self.workers.clear()


# ---- submitting -------------------------------------------------------------------------


class Submitter:
    """Submits the planned jobs in order, the way the API and CLI do (the bytes staged
    in the store, the job row committed, then its message sent). A package job waits
    until the job it re-packages has succeeded."""

    def __init__(
        self, rt: Runtime, plans: list[JobPlan], media: dict[int, Path], started_at: float
    ) -> None:
        self.rt, self.plans, self.media, self.started_at = rt, plans, media, started_at
        self.pending = list(plans)

    def _status(self, job_id: str) -> str:
        from mediamill.storage.models import JobRow

        with self.rt.db.session() as s:
            row = s.get(JobRow, job_id)
            return row.status if row is not None else "missing"

    def active(self) -> int:
        """Submitted jobs not finished yet."""
        from sqlalchemy import func, select

        from mediamill.storage.models import JobRow

        ids = [p.job_id for p in self.plans if p.job_id]
        if not ids:
            return 0
        with self.rt.db.session() as s:
            return s.scalar(
                select(func.count()).where(
                    JobRow.id.in_(ids), JobRow.status.in_(("queued", "running"))
                )
            )

    def top_up(self, backlog: int, reserve: int = 0) -> int:
        """Submit jobs until `backlog` are unfinished (or none can go yet), keeping
        `reserve` jobs back (for kills still to come)."""
        room = min(backlog - self.active(), len(self.pending) - reserve)
        return self.submit(max(0, room))

    def _ready(self, p: JobPlan) -> bool:
        if p.kind != "package":
            return True
        target = self.plans[p.target]
        return target.job_id is not None and self._status(target.job_id) == "succeeded"

    def submit(self, count: int) -> int:
        """Submit up to `count` pending jobs that can go now; returns how many went."""
        sent = 0
        for p in list(self.pending):
            if sent >= count:
                break
            if self._ready(p):
                self._submit(p)
                self.pending.remove(p)
                sent += 1
        return sent

    def _submit(self, p: JobPlan) -> None:
        from mediamill.schemas.job_params import StoreSource
        from mediamill.schemas.keys import STAGED_PREFIX
        from mediamill.storage.models import JobRow
        from mediamill.workers.packages import enqueue_package
        from mediamill.workers.submit import submit_ingest

        if p.kind == "package":
            with self.rt.db.session() as s:
                asset_id = s.get(JobRow, self.plans[p.target].job_id).asset_id
            p.job_id = enqueue_package(self.rt, asset_id)
        else:
            path = self.media[p.media]
            key = f"{STAGED_PREFIX}{uuid.uuid4()}"
            with path.open("rb") as stream:
                size_bytes = self.rt.store.put(key, stream).size_bytes
            kind = p.kind if p.kind != "duplicate" else self.plans[p.target].kind
            job = submit_ingest(
                self.rt,
                StoreSource(key=key),
                path.name,
                size_bytes,
                plan=job_plan_param(kind),
                staged=True,
            )
            p.job_id = job.id
        p.submitted_at_s = round(time.monotonic() - self.started_at, 1)


# ---- checks -----------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    elapsed_s: float = 0.0
    log_dir: str = ""
    plans: list[JobPlan] = field(default_factory=list)
    media: dict[int, Path] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def to_json_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["ok"] = self.ok
        return data


def _sample(items: list, n: int = 5) -> str:
    shown = ", ".join(map(str, items[:n]))
    return shown + (f" ... (+{len(items) - n})" if len(items) > n else "")


def raw_objects(store: BlobStore) -> tuple[dict[str, int], list[str]]:
    """Every object in the store with its size, temporary ones included (`list()`
    hides dot-names), keyed relative to the store's prefix; and the keys of unfinished
    multipart uploads (S3)."""
    from mediamill.storage.blobs import LocalBlobStore

    if isinstance(store, LocalBlobStore):
        files = (p for p in store.root.rglob("*") if p.is_file())
        return {p.relative_to(store.root).as_posix(): p.stat().st_size for p in files}, []
    strip = len(store.prefix) + 1 if store.prefix else 0
    prefix = f"{store.prefix}/" if store.prefix else ""
    objects: dict[str, int] = {}
    for page in store.client.get_paginator("list_objects_v2").paginate(
        Bucket=store.bucket, Prefix=prefix
    ):
        objects.update({o["Key"][strip:]: int(o["Size"]) for o in page.get("Contents", [])})
    uploads = store.client.list_multipart_uploads(Bucket=store.bucket, Prefix=prefix)
    return objects, [u["Key"] for u in uploads.get("Uploads", [])]


def object_digest(store: BlobStore, key: str) -> tuple[int, str] | None:
    """(size, sha256) of the stored object, read back in full; None when missing."""
    from mediamill.schemas.errors import MediaMillError

    hasher, size = hashlib.sha256(), 0
    try:
        with store.open(key) as stream:
            while chunk := stream.read(1 << 20):
                hasher.update(chunk)
                size += len(chunk)
    except MediaMillError:
        return None
    return size, hasher.hexdigest()


_URI_ATTR = re.compile(r'URI="([^"]+)"')


def playlist_uris(text: str) -> list[str]:
    """Relative URIs an HLS playlist names (segment lines and URI="..." attributes)."""
    uris = [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]
    return uris + _URI_ATTR.findall(text)


def _checker(checks: list[Check]) -> Callable[[str, list, str], None]:
    """A function that appends one Check: ok when `problems` is empty."""

    def check(name: str, problems: list, ok_detail: str) -> None:
        checks.append(Check(name, not problems, _sample(problems) if problems else ok_detail))

    return check


def _job_problem(kind: str, job: JobRow) -> str:
    error = f" ({job.error_name}: {job.error_message})" if job.error_name else ""
    return f"{kind} job {job.id}: {job.status} at {job.stage}{error}"


def check_state(rt: Runtime, plans: list[JobPlan], media: dict[int, Path]) -> list[Check]:
    """The database and the store as they are now: jobs, rows against stored bytes,
    duplicates, and objects no row names."""
    from sqlalchemy import func, select

    from mediamill.schemas import keys
    from mediamill.storage.models import AssetRow, JobRow, PackageRow, RenditionRow

    checks: list[Check] = []
    check = _checker(checks)
    store = rt.store
    with rt.db.session() as s:
        jobs = list(s.scalars(select(JobRow)))
        assets = list(s.scalars(select(AssetRow)))
        renditions = list(s.scalars(select(RenditionRow)))
        packages = list(s.scalars(select(PackageRow)))
        duplicates = (
            s.execute(
                select(RenditionRow.asset_id, RenditionRow.spec_id, func.count())
                .group_by(RenditionRow.asset_id, RenditionRow.spec_id)
                .having(func.count() > 1)
            ).all()
            + s.execute(
                select(PackageRow.asset_id, PackageRow.package_id, func.count())
                .group_by(PackageRow.asset_id, PackageRow.package_id)
                .having(func.count() > 1)
            ).all()
        )

    # Jobs: one row per submission, each succeeded; no other top-level job.
    by_id = {j.id: j for j in jobs}
    submitted = [p.job_id for p in plans if p.job_id]
    problems = [f"{p.kind} job #{p.index} was never submitted" for p in plans if not p.job_id]
    problems += [f"job {i} has no row" for i in submitted if i not in by_id]
    problems += [
        _job_problem(p.kind, by_id[p.job_id])
        for p in plans
        if p.job_id in by_id and by_id[p.job_id].status != "succeeded"
    ]
    problems += [f"job {i} submitted twice" for i, n in Counter(submitted).items() if n > 1]
    problems += [
        f"{j.type} job {j.id} nobody submitted"
        for j in jobs
        if j.parent_id is None and j.id not in set(submitted)
    ]
    children = [j for j in jobs if j.parent_id is not None]
    problems += [_job_problem("child", j) for j in children if j.status != "succeeded"]
    check(
        "every job succeeded, one row each",
        problems,
        f"{len(submitted)} jobs and {len(children)} child jobs succeeded",
    )

    # Assets: one per distinct input, each original's bytes hashing to its id.
    expected_ids = {hashlib.sha256(path.read_bytes()).hexdigest() for path in media.values()}
    found_ids = {a.id for a in assets}
    problems = [f"no asset for input {i[:12]}" for i in sorted(expected_ids - found_ids)]
    problems += [f"unexpected asset {i[:12]}" for i in sorted(found_ids - expected_ids)]
    for a in assets:
        if a.status != "analysed":
            problems.append(f"asset {a.id[:12]} is {a.status}")
        if a.storage_key != f"originals/{a.id}":
            problems.append(f"asset {a.id[:12]} stored under {a.storage_key}")
        problems += _digest_problems(store, a.storage_key, a.size_bytes, a.id)
    # Renditions: each ready, matching the object under its key.
    for r in renditions:
        if r.status != "ready" or not r.storage_key:
            problems.append(f"rendition {r.spec_id} of {r.asset_id[:12]}: {r.status}")
        else:
            problems += _digest_problems(store, r.storage_key, r.size_bytes, r.sha256)
    check(
        "recorded sha256 and size = stored bytes",
        problems,
        f"{len(assets)} originals and {len(renditions)} renditions read back and hashed",
    )

    # Packages: each ready, every file its playlists name stored, the sizes adding up.
    objects, uploads = raw_objects(store)
    problems = []
    for p in packages:
        prefix = f"packages/{p.asset_id}/{p.package_id}/"
        if p.status != "ready" or not p.master_key or not p.manifest_key:
            problems.append(f"package {prefix}: {p.status}")
            continue
        files = {k: size for k, size in objects.items() if k.startswith(prefix)}
        if sum(files.values()) != p.size_bytes:
            problems.append(
                f"{prefix}: {sum(files.values())} B stored, the row says {p.size_bytes}"
            )
        problems += [f"{m} missing" for m in (p.master_key, p.manifest_key) if m not in files]
        problems += _playlist_problems(store, p.master_key, files)
    packaged = {p.asset_id for p in packages if p.status == "ready"}
    for plan in plans:
        job = by_id.get(plan.job_id or "")
        if plan.kind in PACKAGED_KINDS and job is not None and job.asset_id not in packaged:
            problems.append(f"{plan.kind} job {job.id}: its asset has no package")
    check(
        "packages complete",
        problems,
        f"{len(packages)} packages: sizes add up, every playlist entry stored",
    )

    problems = [f"{n} rows for {asset[:12]} {spec}" for asset, spec, n in duplicates]
    check(
        "no duplicate rows",
        problems,
        "one rendition row per (asset, spec), one package row per (asset, ladder)",
    )

    # The store holds exactly what the rows name: nothing partial, temporary or staged.
    named = {a.storage_key for a in assets} | {r.storage_key for r in renditions if r.storage_key}
    package_prefixes = tuple(f"{keys.package_prefix(p.asset_id, p.package_id)}/" for p in packages)
    problems = [f"unfinished multipart upload of {k}" for k in uploads]
    for key in objects:
        if any(segment.startswith(".") for segment in key.split("/")):
            problems.append(f"temporary object {key}")
        elif key.startswith("incoming/"):
            problems.append(f"staged copy left behind: {key}")
        elif key not in named and not key.startswith(package_prefixes):
            problems.append(f"object no row names: {key}")
    problems += [f"{k} named by a row, not stored" for k in sorted(named - set(objects))]
    check(
        "store holds exactly the named objects",
        problems,
        f"{len(objects)} objects, none partial, temporary or staged",
    )
    return checks


def _digest_problems(
    store: BlobStore, key: str, size_bytes: int | None, sha256: str | None
) -> list[str]:
    digest = object_digest(store, key)
    if digest is None:
        return [f"{key} missing"]
    if digest != (size_bytes, sha256):
        return [
            f"{key}: recorded {size_bytes} B {str(sha256)[:12]}, "
            f"stored {digest[0]} B {digest[1][:12]}"
        ]
    return []


def _playlist_problems(store: BlobStore, master_key: str, files: Mapping[str, int]) -> list[str]:
    """Every URI in the master playlist and the media playlists it names, not stored."""
    problems, todo, seen = [], [master_key], set()
    while todo:
        playlist = todo.pop()
        if playlist in seen or playlist not in files:
            continue
        seen.add(playlist)
        with store.open(playlist) as stream:
            text = stream.read().decode()
        for uri in playlist_uris(text):
            key = str(PurePosixPath(playlist).parent / uri)
            if key not in files:
                problems.append(f"{playlist} names {uri}, not stored")
            elif key.endswith(".m3u8"):
                todo.append(key)
    return problems


def check_events(rt: Runtime, received: list[Delivery], endpoint: Mapping[str, str]) -> list[Check]:
    """Every outbox event fanned out to the endpoint, delivered, and received at least
    once with a valid Standard Webhooks signature; no job.failed among them."""
    from sqlalchemy import select

    from mediamill.pipeline.webhook_signing import standard_signature
    from mediamill.storage.models import OutboxEventRow, WebhookDeliveryRow

    checks: list[Check] = []
    with rt.db.session() as s:
        events = list(s.scalars(select(OutboxEventRow)))
        deliveries = {
            d.event_id: d
            for d in s.scalars(
                select(WebhookDeliveryRow).where(WebhookDeliveryRow.endpoint_id == endpoint["id"])
            )
        }
    received_ids = {d.webhook_id for d in received}
    problems = []
    for e in events:
        what = f"{e.type} event {e.id}"
        if e.published_at is None:
            problems.append(f"{what} never fanned out")
        elif e.id not in deliveries:
            problems.append(f"{what}: no delivery to the endpoint")
        elif deliveries[e.id].status != "delivered":
            problems.append(f"{what}: delivery {deliveries[e.id].status}")
        if e.id not in received_ids:
            problems.append(f"{what} never received")
        if e.type == "job.failed":
            problems.append(f"{what}: {e.data}")
    for d in received:
        stamp = int(d.headers.get("webhook-timestamp", "0"))
        wanted = standard_signature(endpoint["secret"], d.webhook_id, stamp, d.body)
        if wanted not in d.headers.get("webhook-signature", "").split(" "):
            problems.append(f"a delivery of {d.webhook_id} is not signed right")
    types = Counter(e.type for e in events)
    _checker(checks)(
        "every event delivered at least once",
        problems,
        f"{len(events)} events ({_counts(types)}) in {len(received)} signed requests "
        f"({len(received) - len(received_ids)} repeats)",
    )
    return checks


def _hits(kills: list[Kill]) -> int:
    return sum(1 for k in kills if k.mid_job)


def check_kills(kills: list[Kill], wanted: int) -> list[Check]:
    """`wanted` kills cut a running job short. A kill whose job finished between the
    last look and the signal (or that found every worker idle) does not count: the
    run kills again, up to MAX_KILLS_PER_HIT times as often as wanted."""
    checks: list[Check] = []
    hits = _hits(kills)
    problems = [f"{hits} of {len(kills)} kills hit a running job, {wanted} wanted"]
    stages = Counter(stage for k in kills for _, stage in k.jobs)
    missed = [f"{k.at_s} s" for k in kills if not k.mid_job]
    _checker(checks)(
        "every kill hit a running job",
        problems if hits < wanted else [],
        f"{hits} kills cut {sum(stages.values())} running jobs short ({_counts(stages)})"
        + (f"; {len(missed)} more found none running: {', '.join(missed)}" if missed else ""),
    )
    return checks


# ---- the run ----------------------------------------------------------------------------


@dataclass
class ChaosOptions:
    jobs: int = 50
    kills: int = 10
    workers: int = 2
    threads: int = 2
    kill_every_s: float = 3.0
    seed: int = 0
    timeout_s: float = 600.0
    work_dir: Path | None = None


def chaos_env(base: Mapping[str, str], receiver_host: str = RECEIVER_HOST) -> dict[str, str]:
    """`base` with CHAOS_ENV's values where it sets none, and the receiver's host
    allowed as a webhook target."""
    env = dict(base)
    for name, value in CHAOS_ENV.items():
        env.setdefault(name, value)
    hosts = [h for h in env.get("MEDIAMILL_WEBHOOK_ALLOW_HOSTS", "").split(",") if h.strip()]
    if receiver_host not in hosts:
        env["MEDIAMILL_WEBHOOK_ALLOW_HOSTS"] = ",".join([*hosts, receiver_host])
    return env


def settings_for(env: Mapping[str, str]) -> Settings:
    """The Settings a process started with `env` reads (MEDIAMILL_* names only)."""
    from mediamill.config.settings import Settings

    prefix = "MEDIAMILL_"
    return Settings(
        _env_file=None,
        **{k[len(prefix) :].lower(): v for k, v in env.items() if k.startswith(prefix)},
    )


def register_endpoint(env: dict[str, str], url: str) -> dict:
    """`mediamill webhooks add URL --events '*'`, as an operator would; the endpoint
    with its secret."""
    proc = subprocess.run(
        [sys.executable, "-m", "mediamill", "webhooks", "add", url, "--events", "*", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"mediamill webhooks add failed:\n{proc.stderr}")
    return json.loads(proc.stdout)


def wait_until(done: Callable[[], bool], timeout_s: float, interval_s: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(interval_s)
    return done()


def _settled(rt: Runtime, plans: list[JobPlan]) -> bool:
    from sqlalchemy import select

    from mediamill.storage.models import JobRow

    ids = [p.job_id for p in plans if p.job_id]
    with rt.db.session() as s:
        statuses = s.scalars(select(JobRow.status).where(JobRow.id.in_(ids))).all()
    return len(statuses) == len(plans) and all(
        st in ("succeeded", "failed", "cancelled") for st in statuses
    )


def _temporary_objects(store: BlobStore) -> list[str]:
    objects, uploads = raw_objects(store)
    return [k for k in objects if any(seg.startswith(".") for seg in k.split("/"))] + uploads


def _delivered(rt: Runtime, receiver: Receiver, endpoint_id: str) -> bool:
    from sqlalchemy import select

    from mediamill.storage.models import OutboxEventRow, WebhookDeliveryRow

    with rt.db.session() as s:
        events = s.execute(select(OutboxEventRow.id, OutboxEventRow.published_at)).all()
        delivered = set(
            s.scalars(
                select(WebhookDeliveryRow.event_id).where(
                    WebhookDeliveryRow.endpoint_id == endpoint_id,
                    WebhookDeliveryRow.status == "delivered",
                )
            )
        )
    received = set(receiver.ids())
    return all(e.published_at and e.id in delivered and e.id in received for e in events)


def run(
    base_env: Mapping[str, str], opts: ChaosOptions, say: Callable[[str], None] = print
) -> Report:
    """The whole crash test; the report says which checks held."""
    from mediamill.workers.boot import build_runtime

    started = time.monotonic()
    env = chaos_env(base_env)
    settings = settings_for(env)
    if not (settings.broker_url or "").startswith(("redis://", "rediss://")):
        raise SystemExit(
            "chaos.py needs MEDIAMILL_BROKER_URL=redis://... (kills are traced in Redis)"
        )
    if settings.database_url is None or settings.storage_url is None:
        raise SystemExit("chaos.py needs MEDIAMILL_DATABASE_URL and MEDIAMILL_STORAGE_URL")
    rng = random.Random(opts.seed)
    rt = build_runtime(settings)
    rt.db.upgrade()
    work = opts.work_dir or Path(tempfile.mkdtemp(prefix="mediamill-chaos-"))
    report = Report(log_dir=str(work / "logs"))
    report.settings = {k: env[k] for k in CHAOS_ENV}

    plans = report.plans = plan_jobs(opts.jobs, rng)
    media = report.media = make_media(work / "media", plans, rng)
    report.counts = dict(Counter(p.kind for p in plans))
    say(f"{len(plans)} jobs planned ({_counts(report.counts)}), {len(media)} media files made")

    with Receiver() as receiver:
        endpoint = register_endpoint(env, receiver.url)
        pool = WorkerPool(env, rt, opts.threads, work / "logs")
        try:
            for slot in range(opts.workers):
                pool.start(slot)
            say(f"{time.monotonic() - started:6.1f} s  {opts.workers} workers up")
            submitter = Submitter(rt, plans, media, started)
            # Enough unfinished work that every worker thread has a job and a message
            # prefetched: a kill then cuts running jobs short and strands queued ones.
            backlog = 2 * opts.workers * opts.threads
            submitter.top_up(backlog, opts.kills)
            while (
                _hits(report.kills) < opts.kills
                and len(report.kills) < MAX_KILLS_PER_HIT * opts.kills
            ):
                # Work is held back for the kills to come, this one included: what the
                # workers have may all be done by the time it comes, and then `idle`
                # submits one more job for it to cut short.
                reserve = opts.kills - _hits(report.kills)
                pause_until = time.monotonic() + rng.uniform(0.5, 1.5) * opts.kill_every_s
                while time.monotonic() < pause_until:
                    submitter.top_up(backlog, reserve)
                    time.sleep(0.25)
                pool.adopt()  # the last one killed is back (it boots during the pause)
                kill = pool.kill_busy(rng, started, BUSY_WAIT_S, lambda: submitter.top_up(1))
                report.kills.append(kill)
                say(
                    f"{kill.at_s:6.1f} s  SIGKILL worker {kill.pid} running "
                    f"{', '.join(stage for _, stage in kill.jobs) or 'nothing'}"
                )
                pool.spawn(kill.slot)
            pool.adopt()
            deadline = started + opts.timeout_s
            while submitter.pending and time.monotonic() < deadline:
                if not submitter.submit(len(submitter.pending)):
                    time.sleep(0.25)
            say(f"{time.monotonic() - started:6.1f} s  all {len(plans)} jobs submitted; waiting")
            wait_until(lambda: _settled(rt, plans), max(0.0, deadline - time.monotonic()))
            wait_until(
                lambda: _delivered(rt, receiver, endpoint["id"]),
                max(30.0, deadline - time.monotonic()),
            )
            # Writers killed mid-write left temporary objects: the sweepers remove them
            # once they are MEDIAMILL_STORE_ORPHAN_AGE_S old.
            orphan_age_s = settings.store_orphan_age_s
            wait_until(lambda: not _temporary_objects(rt.store), orphan_age_s + 30.0)
        finally:
            pool.stop_all()
        with receiver.lock:
            received = list(receiver.received)
        report.checks = [
            *check_state(rt, plans, media),
            *check_events(rt, received, endpoint),
            *check_kills(report.kills, opts.kills),
        ]
        bad_exits = [c for c in pool.exit_codes if c != 0]
        report.checks.append(
            Check(
                "workers stopped cleanly",
                not bad_exits,
                f"{len(pool.exit_codes)} workers exited 0 on SIGTERM"
                if not bad_exits
                else f"exit codes {pool.exit_codes}",
            )
        )
    report.elapsed_s = round(time.monotonic() - started, 1)
    rt.broker.close()
    rt.db.dispose()
    return report


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))


def print_report(report: Report) -> None:
    """A table of the checks (rich on a terminal, plain text otherwise)."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a dependency
        Console = None  # noqa: N806
    if Console is not None and sys.stdout.isatty():
        table = Table("check", "", "detail", title=f"chaos run: {report.elapsed_s} s")
        for c in report.checks:
            table.add_row(c.name, "[green]ok[/]" if c.ok else "[red]FAILED[/]", c.detail)
        Console().print(table)
    else:
        for c in report.checks:
            print(f"{'ok    ' if c.ok else 'FAILED'}  {c.name}: {c.detail}")
        print(f"chaos run: {report.elapsed_s} s")
    if not report.ok:
        print(f"worker logs: {report.log_dir}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=50)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--kill-every-s", type=float, default=3.0, help="mean time between kills")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument("--timeout-s", type=float, default=600.0)
    p.add_argument("--work-dir", type=Path, default=None)
    p.add_argument("--json", action="store_true", help="print the report as JSON only")
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 30)
    opts = ChaosOptions(
        jobs=a.jobs,
        kills=a.kills,
        workers=a.workers,
        threads=a.threads,
        kill_every_s=a.kill_every_s,
        seed=seed,
        timeout_s=a.timeout_s,
        work_dir=a.work_dir,
    )
    say = (lambda _m: None) if a.json else (lambda m: print(m, flush=True))
    say(f"seed {seed}")
    report = run(os.environ, opts, say)
    if a.json:
        print(json.dumps({"seed": seed, **report.to_json_dict()}, default=str))
    else:
        print_report(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
