"""Fixtures of the worker integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dramatiq.brokers.stub import StubBroker

from mediamill.config.settings import Settings
from mediamill.storage.blobs import LocalBlobStore
from mediamill.storage.db import Database
from mediamill.workers.queue import QUEUE_NAME
from mediamill.workers.runtime import Runtime


@pytest.fixture
def analytics_rt(database_url: str | None, tmp_path: Path) -> Iterator[Runtime]:
    """A runtime on SQLite and on PostgreSQL whose hours roll up as soon as they end."""
    db = Database(database_url or f"sqlite:///{tmp_path / 'analytics.db'}")
    db.upgrade()
    broker = StubBroker()
    broker.declare_queue(QUEUE_NAME)
    settings = Settings(_env_file=None, data_dir=tmp_path, analytics_rollup_delay_s=0)
    yield Runtime(settings, db, LocalBlobStore(tmp_path / "store"), broker)
    broker.close()
    db.dispose()
