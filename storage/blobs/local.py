"""A blob store on a local directory: the embedded default.

Objects are plain files under `root`, one per key. Writes go to
`root/.tmp/<uuid>` (same filesystem as the objects), are fsynced, then renamed
onto their final path, so a reader never sees a partial file and a crash leaves
at most an orphan under `.tmp` (never under a key).

A key's path is walked from `root` one component at a time with `O_NOFOLLOW`, on
every read and write: a symbolic link anywhere in it (file or directory, pointing
inside the store or out) is refused with SymlinkRefusedError, never followed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from mediamill.schemas.errors import (
    BlobNotFoundError,
    InvalidRequestError,
    StorageError,
    SymlinkRefusedError,
)
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
# `local_path` hands out a private hard link under `.tmp/<prefix><uuid>/<name>`.
READ_DIR_PREFIX = "read-"
READ_DIR_MIN_AGE_S = 24 * 3600
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK}
# Errors meaning "a path component is a file where a directory is needed, or the
# reverse": the key conflicts with another key (S3 allows `a` and `a/b`, a
# filesystem does not).
_CONFLICT_ERRNOS = {errno.ENOTDIR, errno.EISDIR, errno.EEXIST}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted under a key must not hang the reader.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _link_refused(key: str) -> SymlinkRefusedError:
    return SymlinkRefusedError(
        f"blob key {key!r} is or passes through a symbolic link; the local store never "
        "follows links",
        key=key,
    )


def _refuse_link(dir_fd: int, name: str, key: str) -> None:
    """SymlinkRefusedError if `name` in `dir_fd` is a symbolic link."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        return
    if stat.S_ISLNK(mode):
        raise _link_refused(key)


def _open_dir(dir_fd: int, name: str, key: str, create: bool) -> int:
    """Open directory `name` in `dir_fd` without following a link (made if `create`)."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError:
        _refuse_link(dir_fd, name, key)
        raise
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, dir_fd=dir_fd)
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        _refuse_link(dir_fd, name, key)
        raise


def _entry_mode(dir_fd: int, name: str, key: str) -> int | None:
    """The mode of `name` in `dir_fd` (None if absent), refusing a link."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        _refuse_link(dir_fd, name, key)
    return mode


def _fsync(dir_fd: int) -> None:
    """fsync an open directory so a rename in it survives power loss (best effort)."""
    with contextlib.suppress(OSError):
        os.fsync(dir_fd)


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
        if self._tmp_dir.is_symlink():
            # Every write passes through `.tmp`: a link there would put bytes elsewhere.
            raise StorageError(
                f"{self._tmp_dir} is a symbolic link; the local store never follows links",
                root=str(self.root),
            )

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    # -- key <-> path -----------------------------------------------------

    def _path(self, key: str) -> Path:
        """The file of a key; only ever called with a validated key."""
        return self.root.joinpath(*validate_key(key).split("/"))

    @contextlib.contextmanager
    def _parent(self, key: str, *, create: bool = False) -> Iterator[tuple[int, str]]:
        """The open directory that holds `key`'s file, and the file's name in it, reached
        from `root` without following a link (SymlinkRefusedError at a link); `create`
        makes missing directories. OSErrors of a missing or conflicting component pass
        through for the caller to name."""
        *directories, name = validate_key(key).split("/")
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for directory in directories:
                next_fd = _open_dir(fd, directory, key, create)
                os.close(fd)
                fd = next_fd
            yield fd, name
        finally:
            os.close(fd)

    def _regular_file(self, key: str) -> os.stat_result:
        """The stat of `key`'s file; BlobNotFoundError unless it is a regular file."""
        try:
            with self._parent(key) as (dir_fd, name):
                mode = _entry_mode(dir_fd, name, key)
                if mode is None or not stat.S_ISREG(mode):
                    raise BlobNotFoundError(f"no blob under {key!r}", key=key)
                return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise BlobNotFoundError(f"no blob under {key!r}", key=key) from exc
        except OSError as exc:
            raise StorageError(f"cannot stat blob {key!r}", key=key) from exc

    def _open_read_fd(self, key: str) -> int:
        """A read descriptor on `key`'s regular file, opened without following a link."""
        try:
            with self._parent(key) as (dir_fd, name):
                try:
                    fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
                except OSError as exc:
                    if exc.errno == errno.ELOOP:
                        _refuse_link(dir_fd, name, key)
                    raise
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise BlobNotFoundError(f"no blob under {key!r}", key=key) from exc
        except OSError as exc:
            raise StorageError(f"cannot open blob {key!r}", key=key) from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise BlobNotFoundError(f"no blob under {key!r}", key=key)
        os.set_blocking(fd, True)
        return fd

    def _publish(self, tmp_path: Path, key: str) -> None:
        """Rename a finished temporary file onto `key` (its directories made, no link
        followed) and fsync the directory so the rename survives power loss."""
        try:
            with self._parent(key, create=True) as (dir_fd, name):
                _entry_mode(dir_fd, name, key)
                os.replace(tmp_path, name, dst_dir_fd=dir_fd)
                _fsync(dir_fd)
        except OSError as exc:
            raise self._write_error(exc, key) from exc

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

    def _write_error(self, exc: OSError, key: str) -> Exception:
        if exc.errno in _CONFLICT_ERRNOS:
            return InvalidRequestError(
                f"blob key {key!r} conflicts with an existing key (a file where a directory "
                "is needed, or the reverse)",
                key=key,
            )
        return StorageError(f"cannot store blob {key!r}", key=key)

    def put(self, key: str, stream: BinaryIO, *, content_type: str | None = None) -> StoredBlob:
        validate_key(key)
        with self._temp_write() as (tmp_path, handle):
            size_bytes, sha256 = self._write_all(handle, stream, key)
            handle.close()
            self._publish(tmp_path, key)
        return StoredBlob(key=key, size_bytes=size_bytes, sha256=sha256)

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[BlobWriter]:
        """Write `key` piece by piece (`writer.write(chunk)`): on a clean exit the bytes
        are fsynced and published under `key` atomically, like `put`; if the block
        raises, nothing is published and the previous object (if any) stays."""
        validate_key(key)
        with self._temp_write() as (tmp_path, handle):
            writer = BlobWriter(handle, key)
            yield writer
            blob = writer._finish()
            self._publish(tmp_path, key)
        writer.blob = blob

    def put_content_addressed(
        self, prefix: str, stream: BinaryIO, *, content_type: str | None = None
    ) -> tuple[StoredBlob, bool]:
        validate_key(f"{prefix}/0")  # refuse a bad prefix before reading anything
        with self._temp_write() as (tmp_path, handle):
            size_bytes, sha256 = self._write_all(handle, stream, prefix)
            handle.close()
            key = f"{prefix}/{sha256}"
            try:
                with self._parent(key, create=True) as (dir_fd, name):
                    created = self._publish_if_absent(tmp_path, dir_fd, name, key)
                    if created:
                        _fsync(dir_fd)
            except OSError as exc:
                raise self._write_error(exc, key) from exc
        return StoredBlob(key=key, size_bytes=size_bytes, sha256=sha256), created

    def _publish_if_absent(self, tmp_path: Path, dir_fd: int, name: str, key: str) -> bool:
        """Link the temp file onto `name` unless it exists; True if this call created it.

        A hard link fails atomically when `name` exists, so two concurrent writers
        of the same bytes cannot both report `created`. Filesystems without hard
        links fall back to an exists check plus rename (same bytes, so harmless).
        A link already under the key is refused, never taken for the object.
        """
        try:
            # No AT_SYMLINK_FOLLOW: a link swapped in for the temp file is published as
            # a link (which every read refuses), never as the file it points to.
            os.link(tmp_path, name, dst_dir_fd=dir_fd, follow_symlinks=False)
            return True
        except FileExistsError:
            mode = _entry_mode(dir_fd, name, key)
            if mode is not None and stat.S_ISREG(mode):
                return False
            raise
        except OSError as exc:
            if exc.errno not in {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}:
                raise
        mode = _entry_mode(dir_fd, name, key)
        if mode is not None and stat.S_ISREG(mode):
            return False
        os.replace(tmp_path, name, dst_dir_fd=dir_fd)
        return True

    # -- reading ----------------------------------------------------------

    @contextlib.contextmanager
    def open(self, key: str) -> Iterator[BinaryIO]:
        handle = os.fdopen(self._open_read_fd(key), "rb")
        try:
            yield handle
        finally:
            handle.close()

    @contextlib.contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        """A path of the key's file that no link swapped into the store later can
        redirect: a private hard link (`.tmp/read-<uuid>/<name>`, the name kept for
        decoders that sniff it), made from the directory the no-link walk reached and
        removed on exit. ffmpeg and PyAV open files by name, often much later."""
        directory = self._tmp_dir / f"{READ_DIR_PREFIX}{uuid.uuid4().hex}"
        *_, name = key.split("/")
        try:
            with self._parent(key) as (dir_fd, entry):
                mode = _entry_mode(dir_fd, entry, key)  # a link: SymlinkRefusedError
                if mode is None or not stat.S_ISREG(mode):
                    raise BlobNotFoundError(f"no blob under {key!r}", key=key)
                os.mkdir(directory, 0o700)
                os.link(entry, directory / name, src_dir_fd=dir_fd, follow_symlinks=False)
        except OSError as exc:
            shutil.rmtree(directory, ignore_errors=True)
            if isinstance(exc, FileNotFoundError | NotADirectoryError):
                raise BlobNotFoundError(f"no blob under {key!r}", key=key) from exc
            if exc.errno not in _NO_HARD_LINKS:
                raise StorageError(f"cannot open blob {key!r}", key=key) from exc
            with self._checked_path(key) as path:
                yield path
            return
        linked = directory / name
        try:
            if not stat.S_ISREG(os.lstat(linked).st_mode):
                raise _link_refused(key)
            yield linked
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    @contextlib.contextmanager
    def _checked_path(self, key: str) -> Iterator[Path]:
        """Where hard links cannot be made: the key's path, once it names the file the
        no-link walk opened (a link swapped in after this check is not caught)."""
        fd = self._open_read_fd(key)
        try:
            opened = os.fstat(fd)
        finally:
            os.close(fd)
        path = self._path(key)
        try:
            named = path.stat()
        except OSError as exc:
            raise BlobNotFoundError(f"no blob under {key!r}", key=key) from exc
        if (named.st_dev, named.st_ino) != (opened.st_dev, opened.st_ino):
            raise SymlinkRefusedError(
                f"blob key {key!r} changed while it was opened; the local store never "
                "follows links",
                key=key,
            )
        yield path

    def exists(self, key: str) -> bool:
        try:
            self._regular_file(key)
        except BlobNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        return self._regular_file(key).st_size

    def delete(self, key: str) -> None:
        """Remove the key's file; a link under the key is removed itself, never followed."""
        try:
            with self._parent(key) as (dir_fd, name):
                os.unlink(name, dir_fd=dir_fd)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as exc:
            raise StorageError(f"cannot delete blob {key!r}", key=key) from exc

    def remove_orphans(self, older_than_s: float, content_prefixes: Iterable[str] = ()) -> int:
        """Files under `.tmp` not written to for `older_than_s`: a live writer keeps
        writing (or renames its file away), so these belong to a killed one. A reader's
        private links (`local_path`) go after a day at the earliest: a long transcode
        may open its source again for a loudness correction."""
        cutoff = time.time() - older_than_s
        read_cutoff = time.time() - max(older_than_s, READ_DIR_MIN_AGE_S)
        removed = 0
        for path in self._tmp_dir.glob("*"):
            try:
                info = path.lstat()
                if info.st_mtime >= cutoff:
                    continue
                if stat.S_ISDIR(info.st_mode) and path.name.startswith(READ_DIR_PREFIX):
                    if info.st_mtime < read_cutoff:
                        shutil.rmtree(path)  # a killed reader's private links
                        removed += 1
                elif not stat.S_ISDIR(info.st_mode):
                    path.unlink()  # a file, or a link (unlink removes the link itself)
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
        if directory_part and os.path.realpath(start) != str(start):
            # `root` is resolved, so the two differ only where a link is on the way.
            raise SymlinkRefusedError(
                f"prefix {prefix!r} passes through a symbolic link; the local store never "
                "follows links",
                prefix=prefix,
            )
        keys: list[str] = []
        try:
            # os.walk does not descend into linked directories; linked files are skipped.
            for dirpath, dirnames, filenames in os.walk(start):
                # Dot-names are never keys: skips `.tmp` and anything foreign.
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                relative_dir = Path(dirpath).relative_to(self.root).as_posix()
                for name in filenames:
                    if name.startswith(".") or os.path.islink(os.path.join(dirpath, name)):
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
        self._regular_file(src)
        if validate_key(src) == validate_key(dst):
            return
        try:
            with (
                self._parent(src) as (src_fd, src_name),
                self._parent(dst, create=True) as (dst_fd, dst_name),
            ):
                _entry_mode(dst_fd, dst_name, dst)
                os.replace(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
                _fsync(dst_fd)
        except FileNotFoundError as exc:
            raise BlobNotFoundError(f"no blob under {src!r}", key=src) from exc
        except OSError as exc:
            raise self._write_error(exc, dst) from exc

    def snapshot(self, src: str, dst: str) -> int:
        """A hard link: every write here publishes a new file by rename and never
        changes a stored file in place, so the link keeps the bytes `src` has now.
        Falls back to a streamed copy where the filesystem has no hard links."""
        self._regular_file(src)
        validate_key(dst)
        tmp_path = self._tmp_dir / uuid.uuid4().hex
        try:
            self._tmp_dir.mkdir(parents=True, exist_ok=True)
            with self._parent(src) as (src_fd, src_name):
                os.link(src_name, tmp_path, src_dir_fd=src_fd, follow_symlinks=False)
        except FileNotFoundError as exc:
            raise BlobNotFoundError(f"no blob under {src!r}", key=src) from exc
        except OSError as exc:
            if exc.errno not in {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}:
                raise self._write_error(exc, dst) from exc
            return super().snapshot(src, dst)
        try:
            # The link is the file `_regular_file` saw unless it was swapped meanwhile.
            if not stat.S_ISREG(os.lstat(tmp_path).st_mode):
                raise _link_refused(src)
            size_bytes = os.lstat(tmp_path).st_size
            self._publish(tmp_path, dst)
            return size_bytes
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()

    def url(self, key: str, expires_in_s: int = 3600) -> str:
        """A file:// URI of the object (`expires_in_s` is checked, then has no effect)."""
        validate_expiry(expires_in_s)
        return self._path(key).as_uri()
