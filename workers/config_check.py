"""The whole configuration, checked once before a process takes any work.

A setting that would only fail at the first signed URL, the first upload or the
first message (a missing secret, a CloudFront mode without its key, a broker that
is not there) is found here instead, at start, and every problem is named at once.
Services get a bounded wait (`MEDIAMILL_STARTUP_WAIT_S`): a stack whose database
starts a few seconds after the API is normal, one that never answers is not.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, SecretStr
from sqlalchemy import text

from mediamill.config.settings import ConfigError, Settings
from mediamill.pipeline.signing import signer_from_settings
from mediamill.storage.blobs import open_store
from mediamill.storage.db import current_revision, database_for, head_revision

RETRY_EVERY_S = 0.5
MASK = "**********"


class ConfigReport(BaseModel):
    """What `mediamill config check` prints: the mode, the effective settings (secrets
    masked) and every problem; warnings do not stop a process."""

    mode: str
    effective: dict[str, Any]
    problems: list[str]
    warnings: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_configuration(settings: Settings, *, services: bool = True) -> ConfigReport:
    """Every problem of `settings`; with `services`, also whether the database, broker
    and store answer (each retried for up to `startup_wait_s`)."""
    problems: list[str] = []
    warnings: list[str] = []

    def check(what: str, fn: Callable[[], object]) -> None:
        try:
            fn()
        except ConfigError as exc:
            problems.append(str(exc))
        except Exception as exc:
            problems.append(f"{what}: {type(exc).__name__}: {exc}")

    check("signing secret", settings.resolved_signing_secret)
    check("signing", lambda: signer_from_settings(settings))
    check("ffmpeg", lambda: _executable(settings.ffmpeg_path))
    check("work dir", lambda: _writable_dir(settings))
    if settings.test_crashes:
        warnings.append(
            "MEDIAMILL_TEST_CRASHES is on: files made to crash a decoder will (tests only)"
        )
    if services:
        deadline = time.monotonic() + settings.startup_wait_s
        for what, probe in (
            ("database", lambda: _database(settings)),
            ("broker", lambda: _broker(settings)),
            ("store", lambda: open_store(settings).exists("config-check-probe")),
        ):
            try:
                problem = _until(deadline, probe)
            except ConfigError as exc:  # it answers, but is not set up right
                problems.append(str(exc))
                continue
            if problem is not None:
                problems.append(f"the {what} does not answer: {problem}")
    return ConfigReport(
        mode=settings.mode,
        effective=effective_settings(settings),
        problems=list(dict.fromkeys(problems)),  # one line per problem, however found
        warnings=warnings,
    )


def effective_settings(settings: Settings) -> dict[str, Any]:
    """Every setting as the process sees it, secrets and URL passwords masked."""
    out: dict[str, Any] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            value = MASK
        elif isinstance(value, str) and "://" in value:
            value = _mask_url(value)
        elif value is not None and not isinstance(value, bool | int | float | str):
            value = str(value)
        out[name] = value
    out["resolved_data_dir"] = str(settings.resolved_data_dir)
    out["resolved_cdn_base_url"] = settings.resolved_cdn_base_url
    out["resolved_database_url"] = _mask_url(settings.resolved_database_url)
    out["resolved_storage_url"] = _mask_url(settings.resolved_storage_url)
    return out


def _mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:{MASK}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _until(deadline: float, probe: Callable[[], object]) -> str | None:
    """None once `probe` succeeds; its last error when the deadline passes."""
    while True:
        try:
            probe()
            return None
        except ConfigError:  # a wrong setting does not get better by waiting
            raise
        except Exception as exc:
            if time.monotonic() >= deadline:
                return f"{type(exc).__name__}: {exc}"
            time.sleep(RETRY_EVERY_S)


def _executable(path: str) -> None:
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise ConfigError(f"ffmpeg is not an executable file: {path} (MEDIAMILL_FFMPEG)")


def _writable_dir(settings: Settings) -> None:
    work = settings.resolved_work_dir
    work.mkdir(parents=True, exist_ok=True)
    if not os.access(work, os.W_OK):
        raise ConfigError(f"the work dir {work} is not writable (MEDIAMILL_WORK_DIR)")


def _database(settings: Settings) -> None:
    db = database_for(settings.resolved_database_url)
    try:
        with db.session() as s:
            s.execute(text("SELECT 1"))
        if settings.database_url is not None:  # SQLite defaults migrate themselves
            current, head = current_revision(db.engine), head_revision()
            if current != head:
                raise ConfigError(
                    f"the database schema is at {current or 'nothing'}, not {head}: "
                    "run `mediamill db upgrade`"
                )
    finally:
        db.dispose()


def _broker(settings: Settings) -> None:
    url = settings.broker_url
    if url is None:
        return  # the in-process queue
    if url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
        return
    import pika

    pika.BlockingConnection(pika.URLParameters(url)).close()
