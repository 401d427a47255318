"""Aggregates of views: counts that add and unique counts that union.

A bucket (an hour, a UTC day) of views becomes one Aggregate per asset and dimension
value, plus the same over all assets (`asset_id` ""). Unique viewers, devices and
authenticated viewers are HyperLogLog sketches (Apache DataSketches, lg_k 16: about
0.4% relative standard error once past the exact range), so a count over any range is
the union of its buckets' sketches, never a scan of every identifier.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from datasketches import hll_sketch, hll_union, tgt_hll_type

from mediamill.schemas.analytics import ViewFigures

LG_K = 16
UNKNOWN = "unknown"
# The breakdowns a rollup keeps, by IBM's dimension names; "" is the whole bucket.
DIMENSIONS = ("", "location", "device", "view-source")


def dimension_value(view: ViewFigures, dimension: str) -> str:
    if dimension == "location":
        return view.country or UNKNOWN
    if dimension == "device":
        return view.device_class
    if dimension == "view-source":
        return view.source or UNKNOWN
    return ""


def _sketch() -> hll_sketch:
    return hll_sketch(LG_K, tgt_hll_type.HLL_4)


@dataclass
class Aggregate:
    """Counted views of one group: `plays` counts every view, the rest counted ones."""

    plays: int = 0
    views: int = 0
    watched_ms: int = 0
    completed: int = 0
    viewers: hll_sketch = field(default_factory=_sketch)
    devices: hll_sketch = field(default_factory=_sketch)
    auth_viewers: hll_sketch = field(default_factory=_sketch)

    def add(self, view: ViewFigures) -> None:
        self.plays += 1
        if not view.counted:
            return
        self.views += 1
        self.watched_ms += view.watched_ms
        self.completed += int(view.completed)
        self.viewers.update(view.viewer_id)
        self.devices.update(view.device_id)
        if view.authenticated:
            self.auth_viewers.update(view.viewer_id)

    def as_row(self) -> dict:
        return {
            "plays": self.plays,
            "views": self.views,
            "watched_ms": self.watched_ms,
            "completed": self.completed,
            "viewers": self.viewers.serialize_compact(),
            "devices": self.devices.serialize_compact(),
            "auth_viewers": self.auth_viewers.serialize_compact(),
        }


def aggregate(views: Iterable[ViewFigures]) -> dict[tuple[str, str, str], Aggregate]:
    """(asset id or "", dimension, value) -> Aggregate of these views."""
    groups: dict[tuple[str, str, str], Aggregate] = {}
    for view in views:
        for dimension in DIMENSIONS:
            value = dimension_value(view, dimension)
            for asset in ("", view.asset_id):
                key = (asset, dimension, value)
                agg = groups.get(key)
                if agg is None:
                    agg = groups[key] = Aggregate()
                agg.add(view)
    return groups


class Total:
    """Aggregates and rollup rows folded into one: sums add, sketches union."""

    def __init__(self) -> None:
        self.plays = self.views = self.watched_ms = self.completed = 0
        self._unions = {name: hll_union(LG_K) for name in ("viewers", "devices", "auth_viewers")}

    def add(self, agg: Aggregate) -> None:
        self.add_row(**agg.as_row())

    def add_row(
        self, plays: int, views: int, watched_ms: int, completed: int, **sketches: bytes
    ) -> None:
        self.plays += plays
        self.views += views
        self.watched_ms += watched_ms
        self.completed += completed
        for name, blob in sketches.items():
            if blob:
                self._unions[name].update(hll_sketch.deserialize(blob))

    def unique(self, name: str) -> int:
        """The estimated distinct count of `name` (viewers, devices, auth_viewers)."""
        return round(self._unions[name].get_estimate())
