"""Issue 15 item 1: the local store never follows a symbolic link.

A link planted in the store (to a file or a directory, pointing inside the store or
out of it, for example at the signing secret) is refused with a named
SymlinkRefusedError by every read and write of its key, at the API door (400) and in
the worker, and no byte of the link's target is ever copied into the store."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from api_support import running_api
from sqlalchemy import func, select
from support import wait_job

from mediamill.config.settings import SIGNING_SECRET_FILE
from mediamill.schemas.errors import SymlinkRefusedError
from mediamill.storage.blobs import LocalBlobStore
from mediamill.storage.blobs.local import TMP_DIR_NAME
from mediamill.storage.models import JobRow
from mediamill.workers.worker import InProcessWorker

SECRET = b"the-signing-secret-never-leaves"
KEY = "rt/secret.mp3"


def _plant(store: LocalBlobStore, outside: Path, kind: str) -> Path:
    """Make KEY reach a file holding SECRET through a link of `kind`; the target file."""
    inside = store.root / "media"
    inside.mkdir()
    for directory in (inside, outside):
        (directory / "secret.mp3").write_bytes(SECRET)
    where, link_is = kind.split("-")
    target_dir = outside if where == "out" else inside
    if link_is == "file":
        (store.root / "rt").mkdir()
        os.symlink(target_dir / "secret.mp3", store.root / KEY)
    else:
        os.symlink(target_dir, store.root / "rt")
    return target_dir / "secret.mp3"


LINK_KINDS = ["out-file", "in-file", "out-dir", "in-dir"]
READ_OPS = ["open", "local_path", "size", "exists", "snapshot", "move"]


def _read_ops(store: LocalBlobStore) -> dict[str, Callable[[], object]]:
    def open_and_read() -> bytes:
        with store.open(KEY) as f:
            return f.read()

    def local_path() -> Path:
        with store.local_path(KEY) as path:
            return path

    return {
        "open": open_and_read,
        "local_path": local_path,
        "size": lambda: store.size(KEY),
        "exists": lambda: store.exists(KEY),
        "snapshot": lambda: store.snapshot(KEY, "copies/secret.mp3"),
        "move": lambda: store.move(KEY, "copies/secret.mp3"),
    }


@pytest.mark.parametrize("kind", LINK_KINDS)
@pytest.mark.parametrize("op", READ_OPS)
def test_every_read_of_a_linked_key_is_refused(tmp_path: Path, kind: str, op: str) -> None:
    store = LocalBlobStore(tmp_path / "store")
    outside = tmp_path / "outside"
    outside.mkdir()
    target = _plant(store, outside, kind)
    with pytest.raises(SymlinkRefusedError, match="symbolic link"):
        _read_ops(store)[op]()
    assert sorted(_read_ops(store)) == sorted(READ_OPS)
    assert target.read_bytes() == SECRET
    assert not store.exists("copies/secret.mp3")
    assert not (store.root / "copies").exists()


@pytest.mark.parametrize("kind", LINK_KINDS)
def test_writes_through_a_link_are_refused_and_leave_the_target(tmp_path: Path, kind: str) -> None:
    store = LocalBlobStore(tmp_path / "store")
    outside = tmp_path / "outside"
    outside.mkdir()
    target = _plant(store, outside, kind)
    with pytest.raises(SymlinkRefusedError):
        store.put(KEY, io.BytesIO(b"overwritten"))
    with pytest.raises(SymlinkRefusedError), store.open_write(KEY) as writer:
        writer.write(b"overwritten")
    store.put("real/src.mp3", io.BytesIO(b"moved"))
    with pytest.raises(SymlinkRefusedError):
        store.move("real/src.mp3", KEY)
    assert store.exists("real/src.mp3")
    if kind.endswith("dir"):
        with pytest.raises(SymlinkRefusedError):
            store.put_content_addressed("rt", io.BytesIO(b"addressed"))
    assert target.read_bytes() == SECRET
    assert sorted(p.name for p in outside.iterdir()) == ["secret.mp3"]


def test_writes_never_create_directories_through_a_linked_directory(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "store")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, store.root / "rt")
    for write in (
        lambda: store.put("rt/deep/new.bin", io.BytesIO(b"new")),
        lambda: store.put_content_addressed("rt/deep", io.BytesIO(b"new")),
    ):
        with pytest.raises(SymlinkRefusedError):
            write()
    assert list(outside.iterdir()) == []


def test_delete_removes_a_file_link_itself_and_refuses_a_directory_link(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "store")
    outside = tmp_path / "outside"
    outside.mkdir()
    target = _plant(store, outside, "out-file")
    store.delete(KEY)
    assert not os.path.lexists(store.root / KEY)
    assert target.read_bytes() == SECRET
    os.rmdir(store.root / "rt")
    os.symlink(outside, store.root / "rt")
    with pytest.raises(SymlinkRefusedError):
        store.delete(KEY)
    assert target.read_bytes() == SECRET


def test_listing_skips_linked_files_and_refuses_a_linked_prefix(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "store")
    outside = tmp_path / "outside"
    outside.mkdir()
    _plant(store, outside, "out-file")
    store.put("rt/real.mp3", io.BytesIO(b"real"))
    os.symlink(outside, store.root / "linked")
    assert list(store.list("rt/")) == ["rt/real.mp3"]
    assert [k for k in store.list() if k.startswith(("rt/", "linked"))] == ["rt/real.mp3"]
    with pytest.raises(SymlinkRefusedError):
        list(store.list("linked/"))


def test_a_link_under_a_content_addressed_key_is_not_taken_for_the_object(tmp_path: Path) -> None:
    """A link planted where the bytes' key would be: refused, never reported as stored."""
    import hashlib

    store = LocalBlobStore(tmp_path / "store")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "other").write_bytes(SECRET)
    data = b"payload"
    (store.root / "originals").mkdir()
    os.symlink(outside / "other", store.root / "originals" / hashlib.sha256(data).hexdigest())
    with pytest.raises(SymlinkRefusedError):
        store.put_content_addressed("originals", io.BytesIO(data))
    assert (outside / "other").read_bytes() == SECRET


@pytest.mark.integration
@pytest.mark.parametrize("kind", ["out-file", "out-dir"])
def test_ingest_of_a_key_linked_to_the_signing_secret_is_a_named_400(
    embedded_env: Path, kind: str
) -> None:
    """The attack's reproduction: POST /v0/jobs with a key that is a link to the signing
    secret is refused at the door, and nothing reaches originals/."""
    with running_api(run_worker=False) as api:
        store = api.rt.store
        secret_path = api.rt.settings.resolved_data_dir / SIGNING_SECRET_FILE
        api.rt.settings.resolved_signing_secret()
        secret = secret_path.read_bytes()
        if kind == "out-file":
            (store.root / "rt").mkdir()
            os.symlink(secret_path, store.root / KEY)
            key = KEY
        else:
            os.symlink(secret_path.parent, store.root / "rt")
            key = f"rt/{SIGNING_SECRET_FILE}"
        r = api.client.post("/v0/jobs", json={"source": {"key": key}}, headers=api.admin)
        assert r.status_code == 400, r.text
        assert r.json()["name"] == "SymlinkRefusedError"
        assert str(store.root) not in r.text and secret.decode() not in r.text
        with api.rt.db.session() as s:
            assert s.scalar(select(func.count()).select_from(JobRow)) == 0
        assert not any(store.list("originals/"))


@pytest.mark.integration
def test_a_link_planted_after_submission_fails_the_job_in_the_worker(
    embedded_env: Path, samples: dict[str, Path]
) -> None:
    """Submitted on a real file, swapped for a link to the secret before the worker
    reads it: the job fails with SymlinkRefusedError and originals/ stays empty."""
    with running_api(run_worker=False) as api:
        store = api.rt.store
        with samples["short.wav"].open("rb") as f:
            store.put(KEY, f)
        r = api.client.post("/v0/jobs", json={"source": {"key": KEY}}, headers=api.admin)
        assert r.status_code in (200, 201, 202), r.text
        secret_path = api.rt.settings.resolved_data_dir / SIGNING_SECRET_FILE
        api.rt.settings.resolved_signing_secret()
        (store.root / KEY).unlink()
        os.symlink(secret_path, store.root / KEY)
        with InProcessWorker(api.rt):
            job = wait_job(api.rt, r.json()["id"])
        assert job.status.value == "failed"
        assert job.error is not None and job.error.name == "SymlinkRefusedError"
        assert not any(store.list("originals/"))


def test_local_path_keeps_its_file_when_a_link_is_swapped_in_later(tmp_path: Path) -> None:
    """ffmpeg opens by name, often much later: the path handed out is a private hard
    link, so replacing the key with a link to the secret meanwhile changes nothing."""
    store = LocalBlobStore(tmp_path / "store")
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    store.put(KEY, io.BytesIO(b"the real media"))
    with store.local_path(KEY) as path:
        (store.root / KEY).unlink()
        os.symlink(secret, store.root / KEY)
        assert path.read_bytes() == b"the real media"
        assert store.root / TMP_DIR_NAME in path.parents
    assert not path.exists()


def test_a_temp_file_swapped_for_a_link_is_never_published_as_its_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between writing a content-addressed temp file and linking it under its key, a
    link put in its place is published as a link (which reads refuse), not as the file
    it points to."""
    store = LocalBlobStore(tmp_path / "store")
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    real_link = os.link

    def swap_then_link(src: Any, dst: Any, **kwargs: Any) -> None:
        if Path(str(src)).parent.name == TMP_DIR_NAME:
            os.unlink(src)
            os.symlink(secret, src)
        real_link(src, dst, **kwargs)

    monkeypatch.setattr(os, "link", swap_then_link)
    blob, created = store.put_content_addressed("originals", io.BytesIO(b"payload"))
    monkeypatch.undo()
    assert created
    with pytest.raises(SymlinkRefusedError), store.open(blob.key) as f:
        f.read()
    assert os.path.islink(store.root / blob.key)


def test_a_store_whose_temp_directory_is_a_link_does_not_start(tmp_path: Path) -> None:
    from mediamill.schemas.errors import StorageError

    root = tmp_path / "store"
    root.mkdir()
    os.symlink(tmp_path, root / TMP_DIR_NAME)
    with pytest.raises(StorageError, match="symbolic link"):
        LocalBlobStore(root)
