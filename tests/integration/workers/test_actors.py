"""A worker killed while ingest deletes the copy the server staged for the job: the
job has not moved on, so its next run deletes the copy (found by the chaos test:
the copy was deleted after the job moved on, and a kill in between leaked it)."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from mediamill.config.settings import get_settings
from mediamill.schemas.job_params import StoreSource
from mediamill.storage import repo
from mediamill.workers import actors
from mediamill.workers.boot import build_runtime
from mediamill.workers.runtime import set_current
from mediamill.workers.submit import submit_ingest

pytestmark = pytest.mark.integration


class Killed(BaseException):
    """The process dying at this point (nothing after it runs)."""


def test_a_kill_at_the_staged_delete_leaves_no_copy_behind(
    embedded_env: Path, samples: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = build_runtime(get_settings())
    set_current(rt)
    source = samples["music.ogg"]
    key = f"incoming/{uuid.uuid4()}"
    with source.open("rb") as stream:
        size_bytes = rt.store.put(key, stream).size_bytes
    job = submit_ingest(rt, StoreSource(key=key), source.name, size_bytes, staged=True)
    with rt.db.session() as s:
        assert repo.claim_job(s, job.id, "store", "first-message", lease_s=60)

    def killed(_key: str) -> None:
        raise Killed()

    monkeypatch.setattr(rt.store, "delete", killed)
    with pytest.raises(Killed):
        actors.ingest(job.id)
    monkeypatch.undo()

    sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
    with rt.db.session() as s:
        row = repo.get_job_row(s, job.id)
        # Still in its stage (so it runs again once its lease lapses), original recorded.
        assert (row.status, row.stage) == ("running", "store")
        assert row.params["stored"] == {
            "key": f"originals/{sha256}",
            "sizeBytes": size_bytes,
            "sha256": sha256,
        }
    assert rt.store.exists(key)

    actors.ingest(job.id)  # the next run: the copy goes, the job moves on
    assert not rt.store.exists(key)
    with rt.db.session() as s:
        row = repo.get_job_row(s, job.id)
        assert (row.status, row.stage, row.asset_id) == ("queued", "analyse", sha256)
        assert repo.get_asset_row(s, sha256).storage_key == f"originals/{sha256}"
