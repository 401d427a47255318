"""Fixtures of the worker unit tests: a runtime on this test's SQLite database, a local
store and a stub broker with the stage queue declared."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dramatiq.brokers.stub import StubBroker
from support import MakeRuntime, RefusingBroker

from mediamill.config.settings import Settings
from mediamill.storage.blobs import LocalBlobStore
from mediamill.storage.db import Database
from mediamill.workers.queue import QUEUE_NAME
from mediamill.workers.runtime import Runtime


@pytest.fixture
def make_runtime(db: Database, tmp_path: Path) -> Iterator[MakeRuntime]:
    """Makes a Runtime with the given settings (defaults without an env file); each
    broker it made is closed when the test ends."""
    brokers: list[StubBroker] = []

    def make(settings: Settings | None = None) -> Runtime:
        broker = StubBroker()
        broker.declare_queue(QUEUE_NAME)
        brokers.append(broker)
        config = settings if settings is not None else Settings(_env_file=None)
        return Runtime(config, db, LocalBlobStore(tmp_path / "store"), broker)

    yield make
    for broker in brokers:
        broker.close()


@pytest.fixture
def refusing_broker() -> Iterator[RefusingBroker]:
    """A broker that is down."""
    broker = RefusingBroker()
    yield broker
    broker.close()
