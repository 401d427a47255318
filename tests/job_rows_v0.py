"""Job parameters exactly as the version before the typed job contract wrote them
(commit ee6f26f: hand-built dicts in api/ and workers/), one per writer and stage.

`old_rows(...)` fills in the keys and sizes of a test's own media; the JSON shapes,
nulls included, are those writers' own.
"""

from __future__ import annotations

SHA = "0" * 64


def ingest_from_path(path: str, filename: str, size_bytes: int) -> dict:
    """`workers/submit.submit_local_file(stage_in_store=False)` (mediamill process)."""
    return {
        "source": {"kind": "path", "path": path},
        "filename": filename,
        "sizeBytes": size_bytes,
        "timeLimitMs": 30000,
    }


def ingest_staged(key: str, filename: str, size_bytes: int) -> dict:
    """`submit_local_file(stage_in_store=True)`: a staged copy, deleted by ingest."""
    return {
        "source": {"kind": "store", "key": key},
        "filename": filename,
        "sizeBytes": size_bytes,
        "timeLimitMs": 30000,
        "staged": True,
    }


def ingest_with_plan(key: str, filename: str, size_bytes: int) -> dict:
    """`POST /v0/jobs` with renditions and no defaults or package (its `plan()` dict)."""
    return {
        "source": {"kind": "store", "key": key},
        "filename": filename,
        "sizeBytes": size_bytes,
        "timeLimitMs": 30000,
        "plan": {
            "renditions": [
                {
                    "format": "mp3",
                    "bitrate": 128000,
                    "channels": 2,
                    "sampleRate": None,
                    "height": None,
                    "loudness": None,
                },
                {
                    "format": "aac",
                    "bitrate": 96000,
                    "channels": 1,
                    "sampleRate": 44100,
                    "height": None,
                    "loudness": {"lufs": -16.0, "truePeak": -1.0},
                },
            ],
            "defaults": False,
            "exact": False,
            "package": False,
        },
    }


def ingest_from_url(url: str) -> dict:
    """`POST /v0/jobs {"source": {"url": ...}}`."""
    return {
        "source": {"kind": "url", "url": url},
        "filename": "clip.ogg",
        "sizeBytes": 0,
        "timeLimitMs": 90000,
    }


def ingest_of_upload(key: str, filename: str, size_bytes: int, upload_id: str) -> dict:
    """`POST /v0/uploads/{id}/complete` (bucket.ingest_job_in with its extras)."""
    return {
        "source": {"kind": "store", "key": key},
        "filename": filename,
        "sizeBytes": size_bytes,
        "timeLimitMs": 30000,
        "uploadId": upload_id,
        "assetType": None,
        "legacyTrackToken": None,
        "staged": True,
    }


def ingest_of_bucket_event(key: str, filename: str, size_bytes: int) -> dict:
    """A bucket notification for a key ingested in place."""
    return {
        "source": {"kind": "store", "key": key},
        "filename": filename,
        "sizeBytes": size_bytes,
        "timeLimitMs": 30000,
        "bucketEvent": {"bucket": "media", "key": key, "version": "e:5d41402abc4b2a76"},
    }


def ingest_of_stored(key: str, sha256: str, filename: str, size_bytes: int) -> dict:
    """`POST /v0/assets` (bytes stored while hashed: analysis of the stored original)."""
    return {
        "source": {"kind": "stored", "key": key, "sha256": sha256},
        "filename": filename,
        "sizeBytes": size_bytes,
        "timeLimitMs": 30000,
    }


def ingest_stored_then_died(key: str, staged_key: str, sha256: str, size_bytes: int) -> dict:
    """An ingest whose worker died after storing the original and recording it
    (`stored`) but before deleting the staged copy, with a finished stage's seconds."""
    return {
        "source": {"kind": "store", "key": staged_key},
        "filename": "died.flac",
        "sizeBytes": size_bytes,
        "timeLimitMs": 30000,
        "staged": True,
        "stored": {"key": key, "sizeBytes": size_bytes, "sha256": sha256},
        "stageSeconds": {"store": 0.25},
    }


def transcode_on_request() -> dict:
    """`GET /v0/assets/{id}?format=...` (renditions.request_rendition)."""
    return {"timeLimitMs": 60000}


def rendition_child(rendition_id: str) -> dict:
    """A child of a transcode: one rendition."""
    return {"renditionId": rendition_id}


def package_job() -> dict:
    """`packages.enqueue_package` after `plan_package`."""
    return {"timeLimitMs": 60000}
