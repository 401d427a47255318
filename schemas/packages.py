"""Packages: HLS and DASH manifests over one set of CMAF (fMP4) segments.

A package is an asset plus a ladder: the renditions it carries and the segment
duration. Its id derives from that ladder, so packaging the same ladder again
writes the same keys (`keys.package_prefix`) in place.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from enum import StrEnum

from pydantic import Field

from mediamill.schemas.base import CamelModel

MASTER_PLAYLIST = "master.m3u8"
DASH_MANIFEST = "manifest.mpd"
# Bumped when the layout of a package's files changes, so old packages are not
# mistaken for current ones.
PACKAGE_LAYOUT_VERSION = 1


class PackageStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    READY = "ready"
    FAILED = "failed"


def package_id_for(spec_ids: list[str], segment_s: int) -> str:
    """The package id of a ladder: a short hash of its rendition specs and segment
    duration (order-independent), e.g. `pkg-3f2a9c0d1e4b5a69`."""
    canonical = json.dumps(
        {"v": PACKAGE_LAYOUT_VERSION, "renditions": sorted(spec_ids), "segmentS": segment_s},
        sort_keys=True,
    )
    return "pkg-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


class Package(CamelModel):
    """One package of an asset: where its manifests are and what it holds."""

    id: str
    asset_id: str
    package_id: str
    status: PackageStatus
    renditions: list[str] = Field(default_factory=list)  # rendition spec ids
    segment_s: int = Field(alias="segmentDuration")
    duration_ms: int | None = Field(default=None, alias="duration")
    segment_count: int | None = None
    size_bytes: int | None = None
    master_key: str | None = None
    manifest_key: str | None = None
    error: dict[str, str] | None = None
    created: datetime | None = None
    modified: datetime | None = None
