"""The store's key layout: every prefix MediaMill writes under and every key form.

One place, so that the actors, the API, the signer, the sweeper and bucket events
agree on where an original, a rendition, a package file or a staged copy lives, and
on which keys are MediaMill's own (never a caller's to ingest).
"""

from __future__ import annotations

import uuid

ORIGINALS = "originals"  # originals/<sha256>: content-addressed originals
RENDITIONS = "renditions"  # renditions/<assetId>/<specId>.<ext>
PACKAGES = "packages"  # packages/<assetId>/<packageId>/<file>
INCOMING = "incoming"  # incoming/...: bytes the server staged for one ingest job
# Keys MediaMill writes itself: never ingested, whatever a caller or a bucket says.
INTERNAL_PREFIXES = tuple(f"{p}/" for p in (ORIGINALS, RENDITIONS, PACKAGES, INCOMING))
STAGED_PREFIX = f"{INCOMING}/"


def original_key(sha256: str) -> str:
    return f"{ORIGINALS}/{sha256}"


def rendition_key(asset_id: str, spec_id: str, extension: str) -> str:
    return f"{RENDITIONS}/{asset_id}/{spec_id}.{extension}"


def package_prefix(asset_id: str, package_id: str) -> str:
    """The prefix every file of one package lives under."""
    return f"{PACKAGES}/{asset_id}/{package_id}"


def upload_key(upload_id: str) -> str:
    """Where an upload session's URL writes."""
    return f"{STAGED_PREFIX}{upload_id}"


def frozen_upload_key(upload_id: str) -> str:
    """A fresh key for the bytes an upload's `complete` accepted: no upload URL names it."""
    return f"{STAGED_PREFIX}{upload_id}.{uuid.uuid4().hex}"


def staged_copy_key(origin: str = "") -> str:
    """A fresh key for a copy staged for one ingest job (`origin` tags where from)."""
    return f"{STAGED_PREFIX}{origin}{uuid.uuid4()}"


def is_staged(key: str) -> bool:
    return key.startswith(STAGED_PREFIX)


def is_internal(key: str) -> bool:
    return key.startswith(INTERNAL_PREFIXES)
