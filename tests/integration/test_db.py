"""The metadata DB on SQLite and on real PostgreSQL: migrations and state transitions."""

from __future__ import annotations

import re
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from support import raw_job

from mediamill.schemas.base import utcnow
from mediamill.schemas.errors import CorruptMediaError, ModelNotFoundError
from mediamill.schemas.jobs import JobStage, JobStatus, JobType
from mediamill.storage import outbox, repo
from mediamill.storage.db import Database, current_revision, head_revision
from mediamill.storage.models import Base, JobRow

pytestmark = pytest.mark.integration


@pytest.fixture
def db(database_url: str | None, tmp_path: Path) -> Database:
    database = Database(database_url or f"sqlite:///{tmp_path / 'test.db'}")
    database.upgrade()
    yield database
    database.dispose()


def test_migrations_create_exactly_the_models(db: Database) -> None:
    assert current_revision(db.engine) == head_revision() == "0011"
    tables = set(inspect(db.engine).get_table_names())
    assert {
        "assets",
        "jobs",
        "outbox_events",
        "legacy_track_tokens",
        "renditions",
        "legacy_assets",
        "webhook_endpoints",
        "webhook_deliveries",
        "tracking_sessions",
        "playback_sessions",
        "playback_heartbeats",
        "player_events",
        "edge_segment_requests",
        "edge_log_files",
        "view_marks",
        "views",
        "view_sections",
        "view_rollups",
        "rollup_buckets",
        "audit_log",
    } <= tables
    with db.engine.connect() as conn:
        # Monthly partitions of views (PostgreSQL) are made at run time, not by models.
        def not_a_partition(name, kind, _parent) -> bool:
            return not (
                kind == "table"
                and re.match(r"^(views|view_sections)_(default|y\d{4}m\d{2})$", name or "")
            )

        context = MigrationContext.configure(conn, opts={"include_name": not_a_partition})
        assert compare_metadata(context, Base.metadata) == []


def test_asset_insert_is_idempotent_under_concurrency(db: Database) -> None:
    asset_id = uuid.uuid4().hex * 2
    created: list[bool] = []
    barrier = threading.Barrier(4)

    def insert() -> None:
        barrier.wait()
        with db.session() as s:
            created.append(
                repo.insert_asset_if_absent(s, asset_id, f"originals/{asset_id}", 10, "a")
            )

    threads = [threading.Thread(target=insert) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(created) == [False, False, False, True]
    with db.session() as s:
        asset = repo.asset_from_row(s, repo.get_asset_row(s, asset_id))
    assert asset.original_asset_id == asset_id and asset.status == "stored"
    assert asset.created is not None and asset.created.tzinfo is not None


def test_claim_allows_one_message_and_takes_over_orphans(db: Database) -> None:
    with db.session() as s:
        job = raw_job(s, JobType.INGEST, JobStage.STORE, {"source": {}})
    with db.session() as s:
        assert repo.claim_job(s, job.id, "store", "m1", lease_s=60)
    with db.session() as s:  # a duplicate delivery while the first runs
        assert not repo.claim_job(s, job.id, "store", "m2", lease_s=60)
    with db.session() as s:  # a stale message for another stage
        assert not repo.claim_job(s, job.id, "analyse", "m3", lease_s=60)
    with db.session() as s:  # the first worker died: its heartbeat stopped
        s.get(JobRow, job.id).updated_at = utcnow() - timedelta(seconds=120)
    with db.session() as s:
        assert repo.claim_job(s, job.id, "store", "m4", lease_s=60)
    with db.session() as s:
        row = repo.get_job_row(s, job.id)
        assert (row.status, row.attempts, row.message_id) == ("running", 2, "m4")


def test_failed_job_writes_its_event_in_the_same_transaction(db: Database) -> None:
    with db.session() as s:
        job = raw_job(s, JobType.INGEST, JobStage.ANALYSE, {})
    with pytest.raises(RuntimeError), db.session() as s:
        repo.fail_job(s, repo.get_job_row(s, job.id), CorruptMediaError("bad"))
        raise RuntimeError("rollback")
    with db.session() as s:
        assert repo.get_job_row(s, job.id).status == "queued"
        assert outbox.list_events(s, "job.failed") == []
    with db.session() as s:
        repo.fail_job(s, repo.get_job_row(s, job.id), CorruptMediaError("bad"))
    with db.session() as s:
        loaded = repo.load_job(s, job.id)
        events = outbox.list_events(s, "job.failed")
    assert loaded.status == JobStatus.FAILED and loaded.error.name == "CorruptMediaError"
    assert [e.data["job"]["id"] for e in events] == [job.id]


def test_list_jobs_paginates_newest_first_and_filters(db: Database) -> None:
    ids = []
    for i in range(5):
        with db.session() as s:
            row = raw_job(s, JobType.INGEST, JobStage.STORE, {"n": i})
            row.created_at = utcnow() + timedelta(seconds=i)
            ids.append(row.id)
    with db.session() as s:
        repo.get_job_row(s, ids[0]).status = "failed"
    seen, cursor = [], None
    while True:
        with db.session() as s:
            page, cursor = repo.list_jobs(s, limit=2, cursor=cursor)
        seen += [j.id for j in page]
        if cursor is None:
            break
    assert seen == ids[::-1]
    with db.session() as s:
        failed, _ = repo.list_jobs(s, status=JobStatus.FAILED)
    assert [j.id for j in failed] == [ids[0]]


def test_missing_rows_raise_named_errors(db: Database) -> None:
    with db.session() as s, pytest.raises(ModelNotFoundError):
        repo.get_job_row(s, "nope")
    with db.session() as s, pytest.raises(ModelNotFoundError):
        repo.get_asset_row(s, "0" * 64)


def test_exactly_one_job_claims_an_assets_analysis(db: Database) -> None:
    asset_id = uuid.uuid4().hex * 2
    with db.session() as s:
        repo.insert_asset_if_absent(s, asset_id, f"originals/{asset_id}", 10, None)
    wins: list[bool] = []
    barrier = threading.Barrier(4)

    def claim() -> None:
        barrier.wait()
        with db.session() as s:
            wins.append(repo.claim_asset_analysis(s, asset_id, lease_s=60))

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False, False, False, True]
    with db.session() as s:  # its worker died: the stale claim can be taken over
        repo.get_asset_row(s, asset_id).modified_at = utcnow() - timedelta(seconds=120)
    with db.session() as s:
        assert repo.claim_asset_analysis(s, asset_id, lease_s=60)


def test_sweeper_requeue_never_overwrites_a_fresh_claim(db: Database) -> None:
    with db.session() as s:
        job = raw_job(s, JobType.INGEST, JobStage.STORE, {})
    with db.session() as s:
        seen = repo.get_job_row(s, job.id)  # what the sweeper read
        s.expunge(seen)
    with db.session() as s:  # meanwhile a worker claims it
        assert repo.claim_job(s, job.id, "store", "m1", lease_s=60)
    with db.session() as s:
        assert not repo.requeue_if_unchanged(s, seen)
    with db.session() as s:
        row = repo.get_job_row(s, job.id)
        assert (row.status, row.message_id) == ("running", "m1")
