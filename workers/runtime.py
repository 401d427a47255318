"""What a worker or CLI process holds: settings, the DB, the blob store and the broker."""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field

import dramatiq

from mediamill.config.settings import Settings
from mediamill.pipeline.signing import UrlSigner, signer_from_settings
from mediamill.storage.blobs import BlobStore
from mediamill.storage.blobs.base import scratch_prefix
from mediamill.storage.db import Database
from mediamill.workers.native import NativePool
from mediamill.workers.playback_buffer import PlaybackBuffer, buffer_for


@dataclass
class Runtime:
    settings: Settings
    db: Database
    store: BlobStore
    broker: dramatiq.Broker
    _native: NativePool | None = field(default=None, repr=False)
    _native_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _signer: UrlSigner | None = field(default=None, repr=False)
    _signer_settings: Settings | None = field(default=None, repr=False)
    _signer_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _buffer: PlaybackBuffer | None = field(default=None, repr=False)
    _buffer_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def playback_buffer(self) -> PlaybackBuffer:
        """Where heartbeats and events wait for the database (workers/playback_buffer.py),
        made on first use."""
        with self._buffer_lock:
            if self._buffer is None:
                self._buffer = buffer_for(self.settings, self.db)
            return self._buffer

    def native(self) -> NativePool:
        """The pool of child processes that run native media code for this process
        (one child per worker thread), made on first use; workers start it at boot."""
        with self._native_lock:
            if self._native is None:
                self._native = NativePool(
                    self.settings.resolved_worker_threads,
                    test_crashes=self.settings.test_crashes,
                )
            return self._native

    def signer(self) -> UrlSigner:
        """The process's URL signer, made on first use (ConfigError while signing is not
        configured, retried on the next call). Mode s3 presigns with the store's own S3
        client: one client per runtime. Settings replaced on the runtime (an operator's
        reload, a test) make a new signer."""
        with self._signer_lock:
            settings = self.settings
            if self._signer is None or self._signer_settings is not settings:
                client = getattr(self.store, "client", None)
                self._signer = signer_from_settings(settings, client=client)
                self._signer_settings = settings
            return self._signer

    def close_native(self) -> None:
        with self._native_lock:
            pool, self._native = self._native, None
        if pool is not None:
            pool.close()


_current: Runtime | None = None


def work_dir(settings: Settings) -> tempfile.TemporaryDirectory[str]:
    """A fresh directory for one stage's temporary files, removed when done."""
    settings.resolved_work_dir.mkdir(parents=True, exist_ok=True)
    return tempfile.TemporaryDirectory(
        dir=settings.resolved_work_dir, prefix=scratch_prefix()
    )


def set_current(runtime: Runtime) -> None:
    """Make `runtime` the one actors in this process use."""
    global _current
    _current = runtime
    dramatiq.set_broker(runtime.broker)


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("no MediaMill runtime in this process; call set_current() first")
    return _current
