"""Settings: embedded defaults, derived values, secrets refused outside embedded mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from mediamill.config.settings import ConfigError, Settings


def clean(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for var in list(os.environ):
        if var.startswith("MEDIAMILL_"):
            monkeypatch.delenv(var)


def test_embedded_defaults_live_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean(monkeypatch)
    monkeypatch.setenv("MEDIAMILL_DATA_DIR", str(tmp_path))
    s = Settings()
    assert s.embedded
    assert s.resolved_storage_url == (tmp_path / "store").as_uri()
    assert s.resolved_database_url == f"sqlite:///{tmp_path / 'mediamill.db'}"
    assert s.broker_url is None
    assert Path(s.ffmpeg_path).is_file()


def test_signing_secret_is_generated_once_and_kept(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path)
    first = s.resolved_signing_secret()
    assert len(first) >= 32
    assert Settings(data_dir=tmp_path).resolved_signing_secret() == first
    assert (tmp_path / "signing-secret").stat().st_mode & 0o777 == 0o600


def test_signing_secret_is_required_when_distributed(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigError, match="MEDIAMILL_SIGNING_SECRET"):
        s.resolved_signing_secret()
    assert not (tmp_path / "signing-secret").exists()
    given = Settings(broker_url="redis://x", signing_secret="a-long-enough-secret")
    assert given.resolved_signing_secret() == "a-long-enough-secret"


def test_modes_follow_what_is_configured(tmp_path: Path) -> None:
    """No broker URL means the in-process queue, whatever the database and store are:
    that process runs the worker, and keeps its own signing secret."""
    assert Settings(data_dir=tmp_path).mode == "embedded"
    for single in (
        Settings(data_dir=tmp_path, storage_url=(tmp_path / "media").as_uri()),
        Settings(data_dir=tmp_path, database_url="postgresql+psycopg://x@127.0.0.1/db"),
    ):
        assert single.mode == "single node" and single.in_process_queue
        assert len(single.resolved_signing_secret()) >= 32
    distributed = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/0")
    assert distributed.mode == "distributed" and not distributed.in_process_queue


def test_unknown_urls_are_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(broker_url="kafka://x")
    with pytest.raises(ValidationError):
        Settings(storage_url="ftp://x")
    assert Settings(broker_url="  ").broker_url is None


def test_env_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    clean(monkeypatch)
    monkeypatch.setenv("MEDIAMILL_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/")
    monkeypatch.setenv("MEDIAMILL_STORAGE_URL", "s3://bucket/prefix")
    monkeypatch.setenv("MEDIAMILL_FFMPEG", "/usr/bin/ffmpeg")
    s = Settings()
    assert not s.embedded
    assert s.resolved_storage_url == "s3://bucket/prefix"
    assert s.ffmpeg_path == "/usr/bin/ffmpeg"


def test_worker_threads_default_to_two_per_core_of_the_affinity(monkeypatch) -> None:
    from mediamill.config.settings import THREADS_PER_CORE, Settings

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert Settings(_env_file=None).resolved_worker_threads == THREADS_PER_CORE
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    assert Settings(_env_file=None).resolved_worker_threads == 8 * THREADS_PER_CORE
    assert Settings(_env_file=None, worker_threads=3).resolved_worker_threads == 3


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"playback_heartbeat_interval_s": 60}, "MEDIAMILL_PLAYBACK_SESSION_TTL_S"),
        (
            {"playback_url_expires_s": 300, "playback_url_refresh_margin_s": 300},
            "MEDIAMILL_PLAYBACK_URL_REFRESH_MARGIN_S",
        ),
        ({"playback_allowed_origins": "*"}, "MEDIAMILL_PLAYBACK_ALLOWED_ORIGINS"),
        ({"playback_allowed_origins": "https://a.example/path"}, "explicit origins"),
        ({"playback_buffer_url": "amqp://x"}, "MEDIAMILL_PLAYBACK_BUFFER_URL"),
    ],
)
def test_playback_settings_that_cannot_work_are_refused(overrides: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Settings(_env_file=None, **overrides)


def test_playback_origins_are_listed_without_their_trailing_slash() -> None:
    settings = Settings(
        _env_file=None, playback_allowed_origins="https://a.example/, http://localhost:3000"
    )
    assert settings.playback_origins == {"https://a.example", "http://localhost:3000"}
