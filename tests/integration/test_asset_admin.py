"""Assets you can manage (issue 16, item 5): GET /v0/assets pages and filters, DELETE
/v0/assets/{id} takes every file from the store (its signed URLs stop working at the
edge), marks the row, emits `asset.deleted`, refuses while a job runs and answers the
same twice; the same bytes uploaded again make it live again. The CLI does the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from edge_support import fetch
from support import free_port, raw_job, serving

from mediamill.api.app import create_app
from mediamill.config.settings import Settings
from mediamill.schemas import keys
from mediamill.schemas.jobs import JobStage, JobType
from mediamill.storage import outbox
from mediamill.storage.api_keys import create_api_key
from mediamill.workers.delivery import sign_file_url

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "mediamill"]


def _wait_ready(client: httpx.Client, asset_id: str) -> dict:
    """The asset's metadata once every default rendition and its package are ready."""
    deadline = time.monotonic() + 120
    while True:
        meta = client.get(f"/v0/assets/{asset_id}/metadata").json()
        renditions, packages = meta.get("renditions", []), meta.get("packages", [])
        if (
            renditions
            and all(r["status"] == "ready" for r in renditions)
            and any(p["status"] == "ready" for p in packages)
        ):
            return meta
        assert time.monotonic() < deadline, meta
        time.sleep(0.2)


def _store_keys(rt, asset_id: str) -> list[str]:
    found = [k for p in (keys.RENDITIONS, keys.PACKAGES) for k in rt.store.list(f"{p}/{asset_id}/")]
    return found + (
        [keys.original_key(asset_id)] if rt.store.exists(keys.original_key(asset_id)) else []
    )


def test_list_delete_and_revive_through_the_api(samples: dict[str, Path], tmp_path: Path) -> None:
    port = free_port()
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", http_port=port)
    app = create_app(settings)
    with serving(app, port) as base:
        rt = app.state.runtime
        with rt.db.session() as s:
            admin = create_api_key(s, "admin", "assets").api_key
        client = httpx.Client(base_url=base, headers={"X-API-Key": admin}, timeout=60)
        ids = {}
        for name in ("music.flac", "speech.wav", "video.mp4"):
            headers = {"legacyTrackToken": "tok-speech"} if name == "speech.wav" else {}
            with samples[name].open("rb") as f:
                resp = client.post("/v0/assets?wait=60", files={"assetfile": (name, f)},
                                   headers=headers)  # fmt: skip
            assert resp.status_code == 201, resp.text
            ids[name] = resp.json()["originalAssetId"]
            time.sleep(0.01)  # distinct creation times, so the order is the upload order

        # ---- listing: newest first, pages, filters, sort
        everything = client.get("/v0/assets").json()
        assert [a["originalAssetId"] for a in everything["data"]] == list(ids.values())[::-1]
        assert everything["nextCursor"] is None
        seen, cursor = [], None
        while True:
            page = client.get(
                "/v0/assets", params={"limit": 1, **({"cursor": cursor} if cursor else {})}
            ).json()
            seen += [a["originalAssetId"] for a in page["data"]]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        assert seen == list(ids.values())[::-1]
        oldest = client.get("/v0/assets", params={"sort": "created"}).json()["data"]
        assert [a["originalAssetId"] for a in oldest] == list(ids.values())
        audio = client.get("/v0/assets", params={"type": "audio"}).json()["data"]
        assert {a["originalAssetId"] for a in audio} == {ids["music.flac"], ids["speech.wav"]}
        video = client.get("/v0/assets", params={"type": "video", "status": "analysed"}).json()
        assert [a["originalAssetId"] for a in video["data"]] == [ids["video.mp4"]]
        by_token = client.get("/v0/assets", params={"legacyTrackToken": "tok-speech"}).json()
        assert [a["originalAssetId"] for a in by_token["data"]] == [ids["speech.wav"]]
        second = everything["data"][1]["created"]
        after = client.get("/v0/assets", params={"createdAfter": second}).json()["data"]
        assert [a["originalAssetId"] for a in after] == [ids["video.mp4"], ids["speech.wav"]]
        before = client.get("/v0/assets", params={"createdBefore": second}).json()["data"]
        assert [a["originalAssetId"] for a in before] == [ids["music.flac"]]
        assert client.get("/v0/assets", params={"cursor": "nope"}).status_code == 400
        assert client.get("/v0/assets", params={"type": "image"}).status_code == 400

        # ---- a deletion refused while a job runs
        music = ids["music.flac"]
        meta = _wait_ready(client, music)
        rendition = meta["renditions"][0]
        url = sign_file_url(rt, rendition["storageKey"]).url
        assert fetch(url).status == 200
        with rt.db.session() as s:
            busy = raw_job(s, JobType.TRANSCODE, JobStage.TRANSCODE, {}, asset_id=music)
            busy_id = busy.id
        refused = client.delete(f"/v0/assets/{music}")
        assert refused.status_code == 409 and busy_id in refused.json()["message"]
        with rt.db.session() as s:
            from mediamill.storage.models import JobRow

            s.get(JobRow, busy_id).status = "cancelled"

        # ---- delete: the files go, the URLs die, the row says so, the event is out
        assert _store_keys(rt, music)
        gone = client.delete(f"/v0/assets/{music}")
        assert gone.status_code == 200 and gone.json()["deleted"] is True
        assert _store_keys(rt, music) == []
        assert fetch(url).status == 404
        assert client.get(f"/v0/assets/{music}/metadata").status_code == 404
        assert music not in {a["originalAssetId"] for a in client.get("/v0/assets").json()["data"]}
        with rt.db.session() as s:
            (event,) = outbox.list_events(s, "asset.deleted")
            assert event.data["asset"]["originalAssetId"] == music
        again = client.delete(f"/v0/assets/{music}")
        assert again.status_code == 200 and again.json() == gone.json()
        with rt.db.session() as s:
            assert len(outbox.list_events(s, "asset.deleted")) == 1
        assert client.delete(f"/v0/assets/{'0' * 64}").status_code == 404
        read_key = {"X-API-Key": _read_key(rt)}
        assert client.delete(f"/v0/assets/{ids['speech.wav']}", headers=read_key).status_code == 403

        # ---- the same bytes again: live again, analysed and made again
        with samples["music.flac"].open("rb") as f:
            back = client.post("/v0/assets?wait=60", files={"assetfile": ("music.flac", f)})
        assert back.status_code == 201 and back.json()["deleted"] is False
        assert back.json()["status"] == "analysed" and back.json()["lufs"] is not None
        meta = _wait_ready(client, music)
        revived = next(r for r in meta["renditions"] if r["spec"] == rendition["spec"])
        assert fetch(sign_file_url(rt, revived["storageKey"]).url).status == 200


def _read_key(rt) -> str:
    with rt.db.session() as s:
        return create_api_key(s, "read", "reader").api_key


def test_the_cli_lists_shows_and_deletes(samples: dict[str, Path], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
    env["MEDIAMILL_DATA_DIR"] = str(tmp_path / "data")

    def mm(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=300)

    made = json.loads(mm("process", str(samples["speech.wav"]), "--json").stdout)
    asset_id = made["asset"]["originalAssetId"]
    listed = json.loads(mm("assets", "list", "--json").stdout)
    assert [a["originalAssetId"] for a in listed["data"]] == [asset_id]
    table = mm("assets", "list", "--type", "audio")
    assert table.returncode == 0 and asset_id[:16] in table.stdout
    assert all(len(line) <= 80 for line in table.stdout.splitlines())
    shown = mm("assets", "show", asset_id)
    assert shown.returncode == 0 and "Renditions" in shown.stdout
    deleted = mm("assets", "delete", asset_id)
    assert deleted.returncode == 0 and f"deleted {asset_id}" in deleted.stdout
    assert json.loads(mm("assets", "list", "--json").stdout)["data"] == []
    missing = mm("assets", "show", asset_id)
    assert missing.returncode == 1 and "ModelNotFoundError" in missing.stderr
    store = Path(env["MEDIAMILL_DATA_DIR"]) / "store"
    assert (
        not list((store / "renditions").rglob("*.*"))
        and not (store / "originals" / asset_id).exists()
    )
