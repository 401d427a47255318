"""What workers and the API do while the broker or the database does not answer, one
failure at a time, on the embedded default (SQLite, local store, StubBroker). The same
outages for real, with Redis and PostgreSQL restarted, are in test_service_restarts.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError
from support import raw_job, wait_job

from mediamill.config.settings import get_settings
from mediamill.schemas.jobs import JobStage, JobType
from mediamill.storage import repo
from mediamill.storage.models import JobRow
from mediamill.workers.boot import build_runtime
from mediamill.workers.runtime import Runtime
from mediamill.workers.submit import submit_local_file
from mediamill.workers.worker import InProcessWorker

pytestmark = pytest.mark.integration


def _db_error() -> OperationalError:
    return OperationalError("SELECT 1", {}, ConnectionError("server closed the connection"))


@pytest.fixture
def rt(embedded_env: Path, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """An embedded runtime that stops after analysis (no renditions, no package)."""
    monkeypatch.setenv("MEDIAMILL_RETRY_MIN_BACKOFF_MS", "20")
    monkeypatch.setenv("MEDIAMILL_RETRY_MAX_BACKOFF_MS", "100")
    monkeypatch.setenv("MEDIAMILL_DEFAULT_AUDIO_RENDITIONS", "")
    monkeypatch.setenv("MEDIAMILL_PACKAGE_AUDIO_LADDER", "")
    get_settings.cache_clear()
    return build_runtime(get_settings())


def wait_row(rt: Runtime, job_id: str, predicate, what: str, timeout_s: float = 60) -> JobRow:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with rt.db.session() as s:
            row = repo.get_job_row(s, job_id)
        if predicate(row):
            return row
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never got {what}: {row.status}/{row.stage}")


def test_a_claim_the_database_refuses_is_retried_never_run_unclaimed(
    rt: Runtime, samples: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """dramatiq ignores errors of a before hook and runs the actor anyway; a claim that
    fails on a dropped connection must fail the message (retried), not run it unclaimed."""
    from mediamill.workers import actors
    from mediamill.workers.middleware import current_message_id

    real_claim, failures = repo.claim_job, []

    def flaky_claim(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise _db_error()
        return real_claim(*args, **kwargs)

    real_store, claims_seen = actors._store_original, []

    def spy_store(*args, **kwargs):
        claims_seen.append(current_message_id())
        return real_store(*args, **kwargs)

    monkeypatch.setattr(repo, "claim_job", flaky_claim)
    monkeypatch.setattr(actors, "_store_original", spy_store)
    with InProcessWorker(rt, threads=1, sweep=False):
        job = wait_job(rt, submit_local_file(rt, samples["music.ogg"], stage_in_store=False).id)
    assert failures == [1]
    assert job.status == "succeeded", job
    assert len(claims_seen) == 1 and claims_seen[0] is not None, claims_seen


def test_a_next_stage_the_broker_refuses_is_sent_by_the_next_sweep(
    rt: Runtime, samples: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ingest stored the original but the broker refused the analyse message: the stage
    still succeeds, the job waits `queued` and marked unsent, and the next sweep sends it
    without waiting `requeue_after_s`."""
    from mediamill.workers.sweeper import sweep

    real_enqueue, refused = rt.broker.enqueue, []

    def refusing_enqueue(message, *, delay=None):
        if message.actor_name == "analyse" and not refused:
            refused.append(message.args[0])
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        return real_enqueue(message, delay=delay)

    monkeypatch.setattr(rt.broker, "enqueue", refusing_enqueue)
    with InProcessWorker(rt, threads=1, sweep=False):
        job_id = submit_local_file(rt, samples["music.ogg"], stage_in_store=False).id
        # The stage is committed before its message is sent, and the refusal marks the
        # row unsent in a transaction of its own: wait for both, not just the stage.
        row = wait_row(
            rt,
            job_id,
            lambda r: r.stage == "analyse" and r.enqueued_at is None,
            "to stage analyse, marked unsent",
        )
        assert refused == [job_id]
        assert (row.status, row.enqueued_at, row.attempts) == ("queued", None, 0)
        assert rt.settings.requeue_after_s >= 60  # so only the mark makes it due now
        assert sweep(rt) == 1
        job = wait_job(rt, job_id)
    assert job.status == "succeeded" and job.stage == "done", job


def test_mark_unsent_never_undoes_a_claim(rt: Runtime) -> None:
    with rt.db.session() as s:
        row = raw_job(s, JobType.INGEST, JobStage.STORE, {"source": {}})
    with rt.db.session() as s:
        assert repo.claim_job(s, row.id, "store", "message-1", lease_s=60)
    with rt.db.session() as s:
        assert not repo.mark_unsent(s, row)  # claimed since the send was tried
        assert repo.get_job_row(s, row.id).enqueued_at is not None
    with rt.db.session() as s:
        queued = raw_job(s, JobType.INGEST, JobStage.STORE, {"source": {}})
    with rt.db.session() as s:
        assert repo.mark_unsent(s, queued)
        assert repo.get_job_row(s, queued.id).enqueued_at is None


def test_the_first_sweep_after_an_outage_sends_every_queued_job(
    rt: Runtime, samples: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker outage shorter than `requeue_after_s` may have lost messages (a restart
    without its append-only file): once the sweeper works again it sends all queued jobs."""
    from mediamill.workers import sweeper as sweeper_module

    with rt.db.session() as s:  # queued just now, its message lost with the broker
        row = raw_job(
            s,
            JobType.INGEST,
            JobStage.STORE,
            {"source": {"kind": "path", "path": str(samples["music.ogg"])}, "filename": "a.ogg"},
        )
    sweeper = sweeper_module.Sweeper(rt, interval_s=3600)  # ticked by hand
    assert sweeper.tick() == 0  # not due: queued for less than requeue_after_s

    real_check = sweeper_module.check_broker

    def broker_down(broker) -> None:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(sweeper_module, "check_broker", broker_down)
    assert sweeper.tick() is None and sweeper.outage.failing
    monkeypatch.setattr(sweeper_module, "check_broker", real_check)
    assert sweeper.tick() == 1 and not sweeper.outage.failing
    assert sweeper.tick() == 0  # back to the usual rule
    with InProcessWorker(rt, threads=1, sweep=False):
        assert wait_job(rt, row.id).status == "succeeded"


@contextmanager
def database_down(api) -> Iterator[None]:
    """Every session of the API's runtime fails as a refused connection does."""

    @contextmanager
    def refused():
        raise _db_error()
        yield  # pragma: no cover

    real = api.rt.db.session
    api.rt.db.session = refused
    try:
        yield
    finally:
        api.rt.db.session = real


def test_api_answers_a_clean_503_while_the_database_is_down(api) -> None:
    with database_down(api):
        for method, path, headers in [
            ("GET", "/v0/jobs", api.read),
            ("POST", "/v0/jobs/nope/retry", api.admin),
        ]:
            answer = api.client.request(method, path, headers=headers)
            assert answer.status_code == 503, answer.text
            body = answer.json()
            assert body["name"] == "ServiceUnavailableError" and body["statusCode"] == 503
            assert body["requestId"] and answer.headers["Retry-After"].isdigit()
            assert "Traceback" not in answer.text and "SELECT" not in answer.text
        ready = api.client.get("/ready")
        assert ready.status_code == 503 and ready.json()["checks"]["database"] == "failed"
        assert api.client.get("/health").status_code == 200
    assert api.client.get("/v0/jobs", headers=api.read).status_code == 200
