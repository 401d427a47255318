"""A blob store on a local directory: the embedded default.

Objects are plain files under `root`, one per key. Writes go to
`root/.tmp/<uuid>` (same filesystem as the objects), are fsynced, then renamed
onto their final path, so a reader never sees a partial file and a crash leaves
at most an orphan under `.tmp` (never under a key).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from mediamill.schemas.errors import BlobNotFoundError, InvalidRequestError, StorageError
from mediamill.storage.blobs.base import (
    DEFAULT_CHUNK_BYTES,
    BlobStore,
    StoredBlob,
    copy_hashing,
    validate_expiry,
    validate_key,
    validate_prefix,
)

log = logging.getLogger(__name__)

TMP_DIR_NAME = ".tmp"
# Errors meaning "a path component is a file where a directory is needed, or the
# reverse": the key conflicts with another key (S3 allows `a` and `a/b`, a
# filesystem does not).
_CONFLICT_ERRNOS = {errno.ENOTDIR, errno.EISDIR, errno.EEXIST}


class BlobWriter:
    """Bytes arriving in pieces (an HTTP request body) on their way to one key: each
    `write` goes straight to the temporary file, so memory holds one piece at most.
    `blob` is set once the bytes are published."""

    def __init__(self, handle: BinaryIO, key: str) -> None:
        self._handle = handle
        self._hasher = hashlib.sha256()
        self.key = key
        self.size_bytes = 0
        self.blob: StoredBlob | None = None

    def write(self, chunk: bytes) -> None:
        try:
            self._handle.write(chunk)
        except OSError as exc:
            raise StorageError(f"cannot write blob {self.key!r}", key=self.key) from exc
        self._hasher.update(chunk)
        self.size_bytes += len(chunk)

    def _finish(self) -> StoredBlob:
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            raise StorageError(f"cannot flush blob {self.key!r}", key=self.key) from exc
        self._handle.close()
        return StoredBlob(key=self.key, size_bytes=self.size_bytes, sha256=self._hasher.hexdigest())


class LocalBlobStore(BlobStore):
    """Blob store on a local directory; `content_type` is accepted and not kept."""

    def __init__(self, root: Path | str, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        if chunk_bytes <= 0:
            raise ValueError("chunk_bytes must be positive")
        self.root = Path(root).expanduser().resolve()
        self.chunk_bytes = chunk_bytes
        self._tmp_dir = self.root / TMP_DIR_NAME
        try:
            self._tmp_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create blob store at {self.root}", root=str(self.root)
            ) from exc

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    # -- key <-> path -----------------------------------------------------

    def _path(self, key: str) -> Path:
        """The file of a key; only ever called with a validated key."""
        return self.root.joinpath(*validate_key(key).split("/"))

    # -- writing ----------------------------------------------------------

    @contextlib.contextmanager
    def _temp_write(self) -> Iterator[tuple[Path, BinaryIO]]:
        """A fresh file under `.tmp`, removed on every exit path unless renamed away."""
        tmp_path = self._tmp_dir / uuid.uuid4().hex
        try:
            self._tmp_dir.mkdir(parents=True, exist_ok=True)
            handle = open(tmp_path, "xb")  # noqa: SIM115 - closed in the finally below
        except OSError as exc:
            raise StorageError("cannot create a temporary file", path=str(tmp_path)) from exc
        try:
            yield tmp_path, handle
        finally:
            handle.close()
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()

    def _write_all(self, handle: BinaryIO, stream: BinaryIO, key: str) -> tuple[int, str]:
        """Copy `stream` into `handle`, hashing; fsync so a rename publishes durable bytes."""

        def write(chunk: bytes) -> None:
            try:
                handle.write(chunk)
            except OSError as exc:
                raise StorageError(f"cannot write blob {key!r}", key=key) from exc

        size_bytes, sha256 = copy_hashing(stream, write, self.chunk_bytes)
        try:
            handle.flush()
            os.fsync(handle.fileno())
        except OSError as exc:
            raise StorageError(f"cannot flush blob {key!r}", key=key) from exc
        return size_bytes, sha256

    def _make_parent(self, final: Path, key: str) -> None:
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._write_error(exc, key) from exc

    def _write_error(self, exc: OSError, key: str) -> Exception:
        if exc.errno in _CONFLICT_ERRNOS:
            return InvalidRequestError(
                f"blob key {key!r} conflicts with an existing key (a file where a directory "
                "is needed, or the reverse)",
                key=key,
            )
        return StorageError(f"cannot store blob {key!r}", key=key)

    def _sync_dir(self, directory: Path) -> None:
        """fsync a directory so a rename survives power loss (best effort, POSIX only)."""
        try:
            fd = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    def put(self, key: str, stream: BinaryIO, *, content_type: str | None = None) -> StoredBlob:
        final = self._path(key)
        with self._temp_write() as (tmp_path, handle):
            size_bytes, sha256 = self._write_all(handle, stream, key)
            handle.close()
            self._make_parent(final, key)
            try:
                os.replace(tmp_path, final)
            except OSError as exc:
                raise self._write_error(exc, key) from exc
        self._sync_dir(final.parent)
        return StoredBlob(key=key, size_bytes=size_bytes, sha256=sha256)

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[BlobWriter]:
        """Write `key` piece by piece (`writer.write(chunk)`): on a clean exit the bytes
        are fsynced and published under `key` atomically, like `put`; if the block
        raises, nothing is published and the previous object (if any) stays."""
        final = self._path(key)
        with self._temp_write() as (tmp_path, handle):
            writer = BlobWriter(handle, key)
            yield writer
            blob = writer._finish()
            self._make_parent(final, key)
            try:
                os.replace(tmp_path, final)
            except OSError as exc:
                raise self._write_error(exc, key) from exc
        self._sync_dir(final.parent)
        writer.blob = blob

    def put_content_addressed(
        self, prefix: str, stream: BinaryIO, *, content_type: str | None = None
    ) -> tuple[StoredBlob, bool]:
        validate_key(f"{prefix}/0")  # refuse a bad prefix before reading anything
        with self._temp_write() as (tmp_path, handle):
            size_bytes, sha256 = self._write_all(handle, stream, prefix)
            handle.close()
            key = f"{prefix}/{sha256}"
            final = self._path(key)
            self._make_parent(final, key)
            created = self._publish_if_absent(tmp_path, final, key)
        if created:
            self._sync_dir(final.parent)
        return StoredBlob(key=key, size_bytes=size_bytes, sha256=sha256), created

    def _publish_if_absent(self, tmp_path: Path, final: Path, key: str) -> bool:
        """Link the temp file onto `final` unless it exists; True if this call created it.

        A hard link fails atomically when `final` exists, so two concurrent writers
        of the same bytes cannot both report `created`. Filesystems without hard
        links fall back to an exists check plus rename (same bytes, so harmless).
        """
        try:
            os.link(tmp_path, final)
            return True
        except FileExistsError as exc:
            if final.is_file():
                return False
            raise self._write_error(exc, key) from exc
        except OSError as exc:
            if exc.errno not in {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}:
                raise self._write_error(exc, key) from exc
        if final.is_file():
            return False
        try:
            os.replace(tmp_path, final)
        except OSError as exc:
            raise self._write_error(exc, key) from exc
        return True

    # -- reading ----------------------------------------------------------

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(key)
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed in the finally below
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise BlobNotFoundError(f"no blob under {key!r}", key=key) from exc
        except OSError as exc:
            raise StorageError(f"cannot open blob {key!r}", key=key) from exc
        try:
            yield handle
        finally:
            handle.close()

    @contextlib.contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise BlobNotFoundError(f"no blob under {key!r}", key=key)
        yield path

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        path = self._path(key)
        try:
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise BlobNotFoundError(f"no blob under {key!r}", key=key) from exc
        except OSError as exc:
            raise StorageError(f"cannot stat blob {key!r}", key=key) from exc
        if not path.is_file():
            raise BlobNotFoundError(f"no blob under {key!r}", key=key)
        return stat.st_size

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as exc:
            raise StorageError(f"cannot delete blob {key!r}", key=key) from exc

    def remove_orphans(self, older_than_s: float, content_prefixes: Iterable[str] = ()) -> int:
        """Files under `.tmp` not written to for `older_than_s`: a live writer keeps
        writing (or renames its file away), so these belong to a killed one."""
        cutoff = time.time() - older_than_s
        removed = 0
        for path in self._tmp_dir.glob("*"):
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:  # renamed away or removed meanwhile
                continue
            except OSError as exc:
                raise StorageError("cannot remove a temporary file", path=str(path)) from exc
        return removed

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under `prefix`, sorted. Walks only the directory the prefix points into."""
        validate_prefix(prefix)
        directory_part = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*directory_part.split("/")) if directory_part else self.root
        keys: list[str] = []
        try:
            for dirpath, dirnames, filenames in os.walk(start):
                # Dot-names are never keys: skips `.tmp` and anything foreign.
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                relative_dir = Path(dirpath).relative_to(self.root).as_posix()
                for name in filenames:
                    if name.startswith("."):
                        continue
                    key = name if relative_dir == "." else f"{relative_dir}/{name}"
                    if key.startswith(prefix):
                        keys.append(key)
        except OSError as exc:
            raise StorageError(f"cannot list blobs under {prefix!r}", prefix=prefix) from exc
        keys.sort()
        yield from keys

    # -- moving and URLs --------------------------------------------------

    def move(self, src: str, dst: str) -> None:
        src_path, dst_path = self._path(src), self._path(dst)
        if not src_path.is_file():
            raise BlobNotFoundError(f"no blob under {src!r}", key=src)
        if src_path == dst_path:
            return
        self._make_parent(dst_path, dst)
        try:
            os.replace(src_path, dst_path)
        except FileNotFoundError as exc:
            raise BlobNotFoundError(f"no blob under {src!r}", key=src) from exc
        except OSError as exc:
            raise self._write_error(exc, dst) from exc
        self._sync_dir(dst_path.parent)

    def snapshot(self, src: str, dst: str) -> int:
        """A hard link: every write here publishes a new file by rename and never
        changes a stored file in place, so the link keeps the bytes `src` has now.
        Falls back to a streamed copy where the filesystem has no hard links."""
        src_path, dst_path = self._path(src), self._path(dst)
        if not src_path.is_file():
            raise BlobNotFoundError(f"no blob under {src!r}", key=src)
        tmp_path = self._tmp_dir / uuid.uuid4().hex
        try:
            self._tmp_dir.mkdir(parents=True, exist_ok=True)
            os.link(src_path, tmp_path)
        except FileNotFoundError as exc:
            raise BlobNotFoundError(f"no blob under {src!r}", key=src) from exc
        except OSError as exc:
            if exc.errno not in {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}:
                raise self._write_error(exc, dst) from exc
            return super().snapshot(src, dst)
        try:
            self._make_parent(dst_path, dst)
            os.replace(tmp_path, dst_path)
            return dst_path.stat().st_size
        except OSError as exc:
            raise self._write_error(exc, dst) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()

    def url(self, key: str, expires_in_s: int = 3600) -> str:
        """A file:// URI of the object (`expires_in_s` is checked, then has no effect)."""
        validate_expiry(expires_in_s)
        return self._path(key).as_uri()
