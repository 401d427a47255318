"""Legacy catalogue use cases (workers/legacy.py) on SQLite: a track token serves the
asset it was last mapped to, mapping is all or nothing, and a legacy asset resolves
to the stored original whose SHA-256 is its legacyAssetId."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from dramatiq.brokers.stub import StubBroker

from mediamill.config.settings import Settings
from mediamill.schemas import keys
from mediamill.schemas.errors import ModelInvalidError, ModelNotFoundError
from mediamill.storage import legacy as legacy_db
from mediamill.storage.blobs import LocalBlobStore
from mediamill.storage.db import Database
from mediamill.workers import legacy
from mediamill.workers.assets import record_original
from mediamill.workers.runtime import Runtime


@pytest.fixture
def rt(db: Database, tmp_path: Path) -> Runtime:
    return Runtime(Settings(_env_file=None), db, LocalBlobStore(tmp_path / "s"), StubBroker())


def _original(rt: Runtime, data: bytes) -> str:
    blob, _ = rt.store.put_content_addressed(keys.ORIGINALS, io.BytesIO(data))
    with rt.db.session() as s:
        return record_original(s, blob, "a.wav").id


def test_a_token_serves_the_asset_it_was_last_mapped_to(rt: Runtime) -> None:
    first, second = _original(rt, b"first master"), _original(rt, b"second master")
    with pytest.raises(ModelNotFoundError, match="legacy track token 370456"):
        legacy.asset_id_for_token(rt, "370456")
    mappings = legacy.map_track_token(rt, "370456", [first])
    assert [(m.original_asset_id, m.legacy_track_token) for m in mappings] == [(first, "370456")]
    assert legacy.asset_id_for_token(rt, "370456") == first
    legacy.map_track_token(rt, "370456", [second])  # a re-uploaded master replaces it
    assert legacy.asset_id_for_token(rt, "370456") == second
    legacy.map_track_token(rt, "370456", [first])  # mapping again changes nothing
    assert legacy.asset_id_for_token(rt, "370456") == second


def test_mapping_is_all_or_nothing(rt: Runtime) -> None:
    known = _original(rt, b"known")
    with pytest.raises(ModelNotFoundError, match="f" * 64):
        legacy.map_track_token(rt, "1153552", [known, "f" * 64])
    with pytest.raises(ModelNotFoundError):
        legacy.asset_id_for_token(rt, "1153552")


def test_a_legacy_asset_resolves_to_its_uploaded_original(rt: Runtime) -> None:
    with pytest.raises(ModelNotFoundError, match="legacy asset T1 was not found"):
        legacy.legacy_original_key(rt, "T1")
    sha = "0" * 64
    with rt.db.session() as s:
        legacy_db.insert_legacy_asset(s, "T1", None, "old.mp3")
        legacy_db.insert_legacy_asset(s, "T2", sha, "old.mp3")
    with pytest.raises(ModelInvalidError, match="its legacyAssetId is not set"):
        legacy.legacy_original_key(rt, "T1")
    with pytest.raises(ModelInvalidError, match=f"no original with its legacyAssetId {sha}"):
        legacy.legacy_original_key(rt, "T2")
    asset_id = _original(rt, b"the old cache file")
    with rt.db.session() as s:
        legacy_db.insert_legacy_asset(s, "T3", asset_id, "old.mp3")
    key = legacy.legacy_original_key(rt, "T3")
    with rt.store.open(key) as f:
        assert f.read() == b"the old cache file"
