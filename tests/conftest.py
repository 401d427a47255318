"""Shared fixtures: generated media, embedded settings, and real services.

A test that needs a service connects to it for real. With CI=true a missing
service fails the test; elsewhere it skips with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    RABBITMQ_URL,
    REDIS_URL,
    fresh_postgres_database,
    make_sample,
    require_service,
)


@pytest.fixture(scope="session")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small library of generated media, made once per test session."""
    d = tmp_path_factory.mktemp("samples")
    specs = {
        "music.flac": {"kind": "music", "duration_s": 6.0},
        "music44.flac": {"kind": "music", "duration_s": 4.0, "rate": 44100},
        "speech.wav": {"kind": "speech", "duration_s": 5.0},
        "music.mp3": {"kind": "music", "duration_s": 5.0},
        "music.ogg": {"kind": "music", "duration_s": 3.0},
        "music.opus": {"kind": "music", "duration_s": 3.0},
        "music.m4a": {"kind": "music", "duration_s": 3.0},
        "mono.flac": {"kind": "music", "duration_s": 3.0, "channels": 1},
        "surround.flac": {"kind": "surround", "duration_s": 4.0},
        "video.mp4": {"kind": "video", "duration_s": 2.0},
        "short.wav": {"kind": "sine", "duration_s": 0.3},
    }
    return {name: make_sample(d / name, **spec) for name, spec in specs.items()}


@pytest.fixture
def embedded_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty embedded default (SQLite, local store, StubBroker) in a temp data dir."""
    from mediamill.config.settings import get_settings

    data_dir = tmp_path / "data"
    for var in list(os.environ):
        if var.startswith("MEDIAMILL_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("MEDIAMILL_DATA_DIR", str(data_dir))
    get_settings.cache_clear()
    yield data_dir
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database shared by this test session."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_service(REDIS_URL, "Redis")
    return REDIS_URL


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    require_service(RABBITMQ_URL, "RabbitMQ")
    return RABBITMQ_URL
