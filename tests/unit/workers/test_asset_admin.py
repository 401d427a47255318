"""delete_asset (workers/asset_admin.py) on SQLite and a local store: every file goes,
the derived rows go, the row is marked with one `asset.deleted`; refused while a job is
under way; idempotent; and the same bytes recorded again make the asset live again."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from support import MakeRuntime, raw_job

from mediamill.config.settings import Settings
from mediamill.schemas import keys
from mediamill.schemas.errors import ConflictError, ModelNotFoundError
from mediamill.schemas.jobs import JobStage, JobType
from mediamill.schemas.media import AssetStatus
from mediamill.storage import outbox, repo
from mediamill.storage.asset_admin import list_assets_page
from mediamill.storage.models import JobRow
from mediamill.workers.asset_admin import delete_asset
from mediamill.workers.assets import record_original


@pytest.fixture
def rt(make_runtime: MakeRuntime, tmp_path: Path):
    return make_runtime(Settings(_env_file=None, data_dir=tmp_path / "data"))


def _asset_with_files(rt) -> tuple[str, list[str]]:
    blob, _ = rt.store.put_content_addressed(keys.ORIGINALS, io.BytesIO(b"original bytes"))
    with rt.db.session() as s:
        row = record_original(s, blob, "a.flac")
        row.status = AssetStatus.ANALYSED.value
    derived = [
        keys.rendition_key(blob.sha256, "mp3-128000-2ch", "mp3"),
        f"{keys.package_prefix(blob.sha256, 'pkg-1')}/master.m3u8",
        f"{keys.package_prefix(blob.sha256, 'pkg-1')}/seg-0-00001.m4s",
    ]
    for key in derived:
        rt.store.put(key, io.BytesIO(b"derived"))
    return blob.sha256, [blob.key, *derived]


def test_every_file_goes_and_the_row_is_marked_once(rt) -> None:
    asset_id, stored = _asset_with_files(rt)
    other_id = "f" * 64
    rt.store.put(keys.rendition_key(other_id, "x", "mp3"), io.BytesIO(b"not this asset's"))
    deleted = delete_asset(rt, asset_id.upper())  # ids are case-folded
    assert deleted.deleted is True
    assert not any(rt.store.exists(k) for k in stored)
    assert rt.store.exists(keys.rendition_key(other_id, "x", "mp3"))
    again = delete_asset(rt, asset_id)
    assert again.deleted is True
    with rt.db.session() as s:
        assert len(outbox.list_events(s, "asset.deleted")) == 1
        assert list_assets_page(s)[0] == []
    with pytest.raises(ModelNotFoundError):
        delete_asset(rt, "0" * 64)


def test_a_second_deletion_removes_what_a_crash_left(rt) -> None:
    asset_id, stored = _asset_with_files(rt)
    delete_asset(rt, asset_id)
    rt.store.put(stored[1], io.BytesIO(b"left behind"))  # as if the first one died here
    delete_asset(rt, asset_id)
    assert not rt.store.exists(stored[1])


def test_refused_while_a_job_is_under_way(rt) -> None:
    asset_id, stored = _asset_with_files(rt)
    with rt.db.session() as s:
        job_id = raw_job(s, JobType.TRANSCODE, JobStage.TRANSCODE, {}, asset_id=asset_id).id
    with pytest.raises(ConflictError, match=job_id):
        delete_asset(rt, asset_id)
    assert all(rt.store.exists(k) for k in stored)
    with rt.db.session() as s:
        s.get(JobRow, job_id).status = "succeeded"
    assert delete_asset(rt, asset_id).deleted


def test_the_same_bytes_again_make_it_live_again(rt) -> None:
    asset_id, _ = _asset_with_files(rt)
    delete_asset(rt, asset_id)
    blob, _ = rt.store.put_content_addressed(keys.ORIGINALS, io.BytesIO(b"original bytes"))
    with rt.db.session() as s:
        row = record_original(s, blob, "again.flac")
        assert (row.deleted, row.status) == (False, AssetStatus.STORED.value)
    with rt.db.session() as s:
        assert [a.original_asset_id for a in list_assets_page(s)[0]] == [asset_id]
        assert len(outbox.list_events(s, "asset.created")) == 2
        assert repo.get_asset_row(s, asset_id).storage_key == blob.key
