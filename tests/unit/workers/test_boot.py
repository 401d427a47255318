"""workers/boot.py: `build_runtime` wires one process from its settings. The embedded
default gets a migrated SQLite database, a local store and a StubBroker, all in the
data dir, with the stage actors declared; a configured database is never migrated
behind the operator's back; a store URL that cannot be opened is a ConfigError."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from dramatiq.brokers.stub import StubBroker

from mediamill.config.settings import ConfigError, Settings, get_settings
from mediamill.schemas.job_params import IngestParams, PathSource
from mediamill.schemas.jobs import JobStage, JobType
from mediamill.storage import repo
from mediamill.storage.blobs import LocalBlobStore
from mediamill.storage.db import current_revision, head_revision
from mediamill.workers.boot import build_runtime
from mediamill.workers.edge_logs import EDGE_LOG_ACTOR
from mediamill.workers.playback_flush import FLUSH_ACTOR
from mediamill.workers.queue import QUEUE_NAME, STAGE_ACTORS
from mediamill.workers.views import VIEWS_ACTOR


def test_embedded_default_is_wired_under_the_data_dir(embedded_env: Path) -> None:
    """SQLite migrated to head, a local store and a StubBroker holding the stage actors,
    the playback flush and the edge-log ingest."""
    settings = get_settings()
    rt = build_runtime(settings)
    try:
        assert rt.settings is settings
        assert rt.db.url == f"sqlite:///{embedded_env.resolve() / 'mediamill.db'}"
        assert current_revision(rt.db.engine) == head_revision()
        assert isinstance(rt.store, LocalBlobStore)
        blob = rt.store.put("renditions/boot/check.bin", io.BytesIO(b"wired"))
        stored = embedded_env.resolve() / "store" / "renditions" / "boot" / "check.bin"
        assert (blob.size_bytes, stored.read_bytes()) == (5, b"wired")
        assert isinstance(rt.broker, StubBroker)
        actors = set(rt.broker.get_declared_actors())
        assert actors == {*STAGE_ACTORS.values(), FLUSH_ACTOR, EDGE_LOG_ACTOR, VIEWS_ACTOR}
        assert QUEUE_NAME in rt.broker.get_declared_queues()
    finally:
        rt.broker.close()


def test_building_again_on_a_migrated_data_dir_keeps_its_rows(embedded_env: Path) -> None:
    """The automatic migration is a no-op at head: what a first runtime committed stays."""
    first = build_runtime(get_settings())
    params = IngestParams(source=PathSource(path="/media/a.flac"))
    with first.db.session() as s:
        job_id = repo.create_job(s, JobType.INGEST, JobStage.STORE, params).id
    first.broker.close()
    second = build_runtime(Settings())
    try:
        with second.db.session() as s:
            assert repo.get_job_row(s, job_id).status == "queued"
    finally:
        second.broker.close()


def test_a_configured_database_is_not_migrated(embedded_env: Path, tmp_path: Path) -> None:
    """With MEDIAMILL_DATABASE_URL set, the schema is `mediamill db upgrade`'s job."""
    url = f"sqlite:///{tmp_path / 'operator.db'}"
    rt = build_runtime(Settings(database_url=url))
    try:
        assert rt.db.url == url
        assert current_revision(rt.db.engine) is None
    finally:
        rt.broker.close()
        rt.db.dispose()


def test_a_store_url_that_cannot_be_opened_is_a_config_error(embedded_env: Path) -> None:
    """`file://host/path` names no local directory: ConfigError before anything runs."""
    with pytest.raises(ConfigError, match=r"use file:///absolute/path \(three slashes\)"):
        build_runtime(Settings(storage_url="file://elsewhere/media"))
