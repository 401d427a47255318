"""A writer killed mid-write leaves a temporary object (never under a key); the
sweeper's `remove_orphans` deletes it once old enough, and nothing else."""

from __future__ import annotations

import io
import os
import time

import pytest

from mediamill.storage.blobs import BlobStore, LocalBlobStore

pytestmark = pytest.mark.integration


def _leave_orphan(store: BlobStore, name: str, age_s: float = 0.0) -> None:
    """What a killed writer leaves: the store's temporary object, `age_s` old."""
    if isinstance(store, LocalBlobStore):
        path = store.root / ".tmp" / name
        path.write_bytes(b"half a write")
        stamp = time.time() - age_s
        os.utime(path, (stamp, stamp))
    else:
        key = f"{store.prefix}/originals/.incoming/{name}".lstrip("/")
        store.client.put_object(Bucket=store.bucket, Key=key, Body=b"half a write")


def _orphans(store: BlobStore) -> list[str]:
    if isinstance(store, LocalBlobStore):
        return sorted(p.name for p in (store.root / ".tmp").iterdir())
    listed = store.client.list_objects_v2(Bucket=store.bucket)
    return sorted(
        o["Key"].rsplit("/", 1)[-1] for o in listed.get("Contents", []) if "/." in o["Key"]
    )


def test_old_temporary_objects_go_and_nothing_else(blob_store: BlobStore) -> None:
    blob_store.put("originals/kept", io.BytesIO(b"an object"))
    blob_store.put_content_addressed("originals", io.BytesIO(b"content addressed"))
    _leave_orphan(blob_store, "dead-writer", age_s=120)
    assert _orphans(blob_store) == ["dead-writer"]

    assert blob_store.remove_orphans(3600, ("originals",)) == 0  # too young to be sure
    assert _orphans(blob_store) == ["dead-writer"]
    older_than_s = 60 if isinstance(blob_store, LocalBlobStore) else 0
    assert blob_store.remove_orphans(older_than_s, ("originals",)) == 1
    assert _orphans(blob_store) == []
    assert len(list(blob_store.list("originals/"))) == 2


def test_a_live_local_write_is_kept(tmp_path) -> None:
    store = LocalBlobStore(tmp_path / "store")
    _leave_orphan(store, "writing-now")  # modified just now: its writer is at work
    assert store.remove_orphans(60) == 0
    assert _orphans(store) == ["writing-now"]
