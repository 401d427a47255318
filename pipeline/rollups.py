"""Aggregates of views: counts that add, unique counts and quantiles that merge.

A bucket (an hour, a UTC day) of views becomes one Aggregate per asset and dimension
value, plus the same over all assets (`asset_id` ""). Unique viewers, devices and
authenticated viewers are HyperLogLog sketches (Apache DataSketches, lg_k 16: about
0.4% relative standard error once past the exact range), so a count over any range is
the union of its buckets' sketches, never a scan of every identifier. Startup times
are a KLL quantile sketch (k 200: rank error about 1.3%), so p50 and p95 over any
range merge the same way. Retention is a histogram of 101 points, which adds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from datasketches import hll_sketch, hll_union, kll_floats_sketch, tgt_hll_type

from mediamill.schemas.analytics import ViewFigures

LG_K = 16
KLL_K = 200
PERCENTS = 101
UNKNOWN = "unknown"
# The breakdowns a rollup keeps ("" is the whole bucket): IBM's dimension names, and
# the quality-of-experience ones.
DIMENSIONS = ("", "location", "device", "view-source", "rendition", "protocol")
_COVERAGE_BYTES = 13  # 101 bits


def dimension_value(view: ViewFigures, dimension: str) -> str:
    if dimension == "location":
        return view.country or UNKNOWN
    if dimension == "device":
        return view.device_class
    if dimension == "view-source":
        return view.source or UNKNOWN
    if dimension == "rendition":
        return view.rendition or UNKNOWN
    if dimension == "protocol":
        return view.protocol or UNKNOWN
    return ""


def _sketch() -> hll_sketch:
    return hll_sketch(LG_K, tgt_hll_type.HLL_4)


def retention_of(coverages: list[int]) -> list[int]:
    """How many of these coverage bit sets hold each percent 0..100."""
    if not coverages:
        return [0] * PERCENTS
    raw = b"".join(c.to_bytes(_COVERAGE_BYTES, "little") for c in coverages)
    bits = np.unpackbits(
        np.frombuffer(raw, dtype=np.uint8).reshape(len(coverages), _COVERAGE_BYTES),
        axis=1,
        bitorder="little",
    )
    return [int(n) for n in bits[:, :PERCENTS].sum(axis=0)]


@dataclass
class Aggregate:
    """One group's views: `plays` and the quality figures count every view, the rest
    counted ones only."""

    with_retention: bool = False
    plays: int = 0
    views: int = 0
    watched_ms: int = 0
    completed: int = 0
    viewers: hll_sketch = field(default_factory=_sketch)
    devices: hll_sketch = field(default_factory=_sketch)
    auth_viewers: hll_sketch = field(default_factory=_sketch)
    playing_ms: int = 0
    rebuffer_ms: int = 0
    failed: int = 0
    bitrate_ms: int = 0
    bitrate_weight_ms: int = 0
    startups: kll_floats_sketch = field(default_factory=lambda: kll_floats_sketch(KLL_K))
    coverages: list[int] = field(default_factory=list)

    def add(self, view: ViewFigures) -> None:
        self.plays += 1
        self.playing_ms += view.playing_ms
        self.rebuffer_ms += view.rebuffer_ms
        self.failed += int(view.failed)
        if view.avg_bitrate:
            self.bitrate_ms += view.avg_bitrate * view.playing_ms
            self.bitrate_weight_ms += view.playing_ms
        if view.startup_ms is not None:
            self.startups.update(float(view.startup_ms))
        if not view.counted:
            return
        self.views += 1
        self.watched_ms += view.watched_ms
        self.completed += int(view.completed)
        self.viewers.update(view.viewer_id)
        self.devices.update(view.device_id)
        if view.authenticated:
            self.auth_viewers.update(view.viewer_id)
        if self.with_retention and view.coverage:
            self.coverages.append(int(view.coverage, 16))

    def as_row(self) -> dict:
        return {
            "plays": self.plays,
            "views": self.views,
            "watched_ms": self.watched_ms,
            "completed": self.completed,
            "viewers": self.viewers.serialize_compact(),
            "devices": self.devices.serialize_compact(),
            "auth_viewers": self.auth_viewers.serialize_compact(),
            "playing_ms": self.playing_ms,
            "rebuffer_ms": self.rebuffer_ms,
            "failed": self.failed,
            "bitrate_ms": self.bitrate_ms,
            "bitrate_weight_ms": self.bitrate_weight_ms,
            "startups": self.startups.serialize(),
            "retention": retention_of(self.coverages) if self.with_retention else None,
        }


def aggregate(
    views: Iterable[ViewFigures], *, per_asset_breakdowns: bool = True
) -> dict[tuple[str, str, str], Aggregate]:
    """(asset id or "", dimension, value) -> Aggregate of these views. Every group
    over all assets; per asset, its whole (with retention) and, with
    `per_asset_breakdowns`, each dimension's values. An hour's rollup leaves the
    per-asset breakdowns and retention to its day: an asset has a few views an hour,
    so those rows would be about as many as the views themselves."""
    groups: dict[tuple[str, str, str], Aggregate] = {}
    for view in views:
        for dimension in DIMENSIONS:
            value = dimension_value(view, dimension)
            keys = [("", dimension, value)]
            if dimension == "" or per_asset_breakdowns:
                keys.append((view.asset_id, dimension, value))
            for key in keys:
                agg = groups.get(key)
                if agg is None:
                    retention = key[0] != "" and dimension == "" and per_asset_breakdowns
                    agg = groups[key] = Aggregate(with_retention=retention)
                agg.add(view)
    return groups


_SUMS = (
    "plays",
    "views",
    "watched_ms",
    "completed",
    "playing_ms",
    "rebuffer_ms",
    "failed",
    "bitrate_ms",
    "bitrate_weight_ms",
)
_UNIQUES = ("viewers", "devices", "auth_viewers")
# The columns of a rollup row that Total.add_row folds.
ROW_FIELDS = (*_SUMS, *_UNIQUES, "startups", "retention")


class Total:
    """Aggregates and rollup rows folded into one: sums add, sketches merge. Only the
    unique counts of `needs` (default: all) are merged: a union holds tens of
    kilobytes, and a breakdown by hour may fold thousands of Totals at once."""

    def __init__(self, needs: Iterable[str] | None = None) -> None:
        self._needs = set(_UNIQUES if needs is None else needs)
        self.plays = self.views = self.watched_ms = self.completed = 0
        self.playing_ms = self.rebuffer_ms = self.failed = 0
        self.bitrate_ms = self.bitrate_weight_ms = 0
        self._unions: dict[str, hll_union] = {}
        self._startups = kll_floats_sketch(KLL_K)
        self.retention = [0] * PERCENTS

    def add(self, agg: Aggregate) -> None:
        self.add_row(**agg.as_row())

    def add_row(self, **row) -> None:
        """Fold in one rollup row's columns (those not given count as empty)."""
        for name in _SUMS:
            setattr(self, name, getattr(self, name) + int(row.get(name) or 0))
        for name in self._needs:
            if blob := row.get(name):
                union = self._unions.get(name)
                if union is None:
                    union = self._unions[name] = hll_union(LG_K)
                union.update(hll_sketch.deserialize(bytes(blob)))
        if blob := row.get("startups"):
            self._startups.merge(kll_floats_sketch.deserialize(bytes(blob)))
        if retention := row.get("retention"):
            self.retention = [a + b for a, b in zip(self.retention, retention, strict=True)]

    def unique(self, name: str) -> int:
        """The estimated distinct count of `name` (viewers, devices, auth_viewers)."""
        if name not in self._needs:
            raise ValueError(f"{name} was not asked for when this Total was made")
        union = self._unions.get(name)
        return round(union.get_estimate()) if union is not None else 0

    def startup_ms(self, rank: float) -> float | None:
        """The startup time at `rank` (0.5: the median), None without any."""
        return None if self._startups.is_empty() else self._startups.get_quantile(rank)
