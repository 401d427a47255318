"""Submitting work (workers/submit.py) on SQLite, a local store and a stub broker: an
ingest job row is committed first (with what the caller commits alongside it), then its
store stage is sent with the job's time limit; a broker that refuses leaves the row
queued and marked unsent for the sweeper; a local file is read in place or staged."""

from __future__ import annotations

from pathlib import Path

import pytest
from dramatiq import Message
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from support import MakeRuntime, RefusingBroker

from mediamill.config.settings import Settings
from mediamill.schemas import keys
from mediamill.schemas.job_params import IngestParams, PathSource, RenditionPlan, StoreSource
from mediamill.schemas.renditions import RenditionFormat, RenditionSpec
from mediamill.storage import outbox, repo
from mediamill.storage.db import Database
from mediamill.storage.models import JobRow
from mediamill.workers import submit
from mediamill.workers.queue import QUEUE_NAME
from mediamill.workers.runtime import Runtime

MIB = 1 << 20


@pytest.fixture
def rt(make_runtime: MakeRuntime) -> Runtime:
    return make_runtime()


def _messages(rt: Runtime) -> list[Message]:
    return [Message.decode(m) for m in rt.broker.queues[QUEUE_NAME].queue]


def _job_count(s: Session) -> int:
    return s.scalar(select(func.count()).select_from(JobRow))


def test_ingest_job_in_gives_storing_the_base_limit_plus_its_time(db: Database) -> None:
    """No time limit given: base + 0.5 s per declared MiB, or + `store_s`; a given one stays."""
    settings = Settings(_env_file=None, time_limit_base_s=300)
    source = StoreSource(key="inbox/a.wav")
    with db.session() as s:
        by_size = submit.ingest_job_in(
            s, settings, IngestParams(source=source, size_bytes=10 * MIB)
        )
        by_store_s = submit.ingest_job_in(
            s, settings, IngestParams(source=source, size_bytes=10 * MIB), store_s=900
        )
        given = submit.ingest_job_in(
            s, settings, IngestParams(source=source, time_limit_ms=42_000), store_s=900
        )
    with db.session() as s:
        rows = [repo.get_job_row(s, j.id) for j in (by_size, by_store_s, given)]
        assert [(r.type, r.stage, r.status, r.asset_id) for r in rows] == [
            ("ingest", "store", "queued", None)
        ] * 3
        assert [repo.params_of(r).time_limit_ms for r in rows] == [305_000, 1_200_000, 42_000]
        assert repo.params_of(rows[0]).source == source


def test_storing_time_is_not_scaled_by_the_per_media_factor(db: Database) -> None:
    """Storing is I/O: its time is added to the base as is, whatever the media factor."""
    settings = Settings(_env_file=None, time_limit_base_s=300, time_limit_per_media_s=0.1)
    params = IngestParams(source=StoreSource(key="inbox/a.wav"))
    with db.session() as s:
        job = submit.ingest_job_in(s, settings, params, store_s=900)
        assert repo.params_of(job).time_limit_ms == 1_200_000


def test_submit_ingest_commits_the_job_then_sends_its_store_stage(rt: Runtime) -> None:
    """One committed ingest row (plan and staging as given) and one `ingest` message for it."""
    plan = RenditionPlan(
        renditions=[RenditionSpec(format=RenditionFormat.MP3, bitrate_bps=128000, channels=2)],
        package=False,
    )
    key = keys.staged_copy_key()
    job = submit.submit_ingest(rt, StoreSource(key=key), "a.wav", 2 * MIB, plan=plan, staged=True)
    plain = submit.submit_ingest(rt, StoreSource(key="inbox/b.wav"), None, 0)
    with rt.db.session() as s:
        params = repo.params_of(repo.get_job_row(s, job.id))
        plain_params = repo.params_of(repo.get_job_row(s, plain.id))
    assert (params.source, params.filename, params.size_bytes) == (
        StoreSource(key=key),
        "a.wav",
        2 * MIB,
    )
    assert params.plan == plan and params.staged is True and params.staged_key() == key
    assert plain_params.staged is None and plain_params.plan is None
    sent = _messages(rt)
    assert [(m.actor_name, m.args) for m in sent] == [
        ("ingest", (job.id,)),
        ("ingest", (plain.id,)),
    ]
    assert sent[0].options["time_limit"] == params.time_limit_ms == 301_000


def test_in_transaction_commits_with_the_job_or_nothing_is_written(rt: Runtime) -> None:
    """What `in_transaction` writes commits with the job; if it raises, neither is sent or kept."""

    def note(s: Session, job: JobRow) -> None:
        outbox.add_event(s, "test.submitted", {"jobId": job.id})

    job = submit.submit_ingest(rt, StoreSource(key="inbox/a.wav"), "a.wav", 10, in_transaction=note)
    with rt.db.session() as s:
        assert [e.data for e in outbox.list_events(s, "test.submitted")] == [{"jobId": job.id}]

    def refuse(s: Session, job: JobRow) -> None:
        raise ValueError("idempotency key taken")

    with pytest.raises(ValueError, match="idempotency key taken"):
        submit.submit_ingest(rt, StoreSource(key="inbox/b.wav"), "b.wav", 10, in_transaction=refuse)
    with rt.db.session() as s:
        assert _job_count(s) == 1
    assert [m.args for m in _messages(rt)] == [(job.id,)]


def test_a_refused_send_leaves_the_job_queued_and_unsent(
    rt: Runtime, refusing_broker: RefusingBroker
) -> None:
    """Broker down: no exception, the row stays `queued` with no `enqueued_at` for the sweeper."""
    rt.broker = refusing_broker
    job = submit.submit_ingest(rt, StoreSource(key="inbox/a.wav"), "a.wav", 10)
    with rt.db.session() as s:
        row = repo.get_job_row(s, job.id)
        assert (row.status, row.enqueued_at) == ("queued", None)


def test_a_local_file_is_read_in_place_or_staged_in_the_store(rt: Runtime, tmp_path: Path) -> None:
    """In place: a path source. Staged: the bytes copied under a staged key, deleted by ingest."""
    data = b"RIFF" + bytes(range(256)) * 4
    path = tmp_path / "in" / "take 1.wav"
    path.parent.mkdir()
    path.write_bytes(data)
    in_place = submit.submit_local_file(
        rt, tmp_path / "in" / ".." / "in" / "take 1.wav", stage_in_store=False
    )
    staged = submit.submit_local_file(rt, path, stage_in_store=True)
    with rt.db.session() as s:
        here = repo.params_of(repo.get_job_row(s, in_place.id))
        there = repo.params_of(repo.get_job_row(s, staged.id))
    assert here.source == PathSource(path=str(path.resolve()))
    assert (here.filename, here.size_bytes, here.staged) == ("take 1.wav", len(data), None)
    assert isinstance(there.source, StoreSource) and there.staged_key() == there.source.key
    assert (there.filename, there.size_bytes, there.staged) == ("take 1.wav", len(data), True)
    with rt.store.open(there.source.key) as f:
        assert f.read() == data
    assert [m.args for m in _messages(rt)] == [(in_place.id,), (staged.id,)]
