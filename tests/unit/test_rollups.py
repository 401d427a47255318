"""pipeline/rollups.py: sums add and sketches union. Item 3's bounds on generated data:
unique counts over an hour, a day and 90 days of hourly sketches within 1% of the exact
count up to 10,000 distinct, and within 2% at 1,000,000."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from datasketches import hll_sketch

from mediamill.pipeline.rollups import LG_K, Aggregate, Total, aggregate
from mediamill.schemas.analytics import ViewFigures

T0 = datetime(2026, 9, 1, tzinfo=UTC)


def figures(
    viewer: str,
    device: str,
    *,
    counted: bool = True,
    country: str | None = "HU",
    asset: str = "a",
    authenticated: bool = False,
) -> ViewFigures:
    return ViewFigures(
        asset_id=asset,
        started_at=T0,
        viewer_id=viewer,
        authenticated=authenticated,
        device_id=device,
        country=country,
        device_class="desktop",
        source=None,
        counted=counted,
        watched_ms=30_000,
        completed=False,
    )


def test_aggregate_groups_by_asset_and_dimension() -> None:
    groups = aggregate(
        [
            figures("v1", "d1", asset="a"),
            figures("v1", "d2", asset="b", country=None, authenticated=True),
            figures("v2", "d3", asset="a", counted=False),
        ]
    )
    whole = groups[("", "", "")]
    assert (whole.plays, whole.views, whole.watched_ms) == (3, 2, 60_000)
    assert round(whole.viewers.get_estimate()) == 1 and round(whole.devices.get_estimate()) == 2
    assert round(whole.auth_viewers.get_estimate()) == 1
    assert groups[("", "location", "unknown")].views == 1
    assert groups[("a", "location", "HU")].plays == 2 and groups[("a", "location", "HU")].views == 1


def test_totals_of_rows_equal_the_aggregate_of_everything() -> None:
    halves = [aggregate([figures(f"v{i}", f"d{i}") for i in range(k, k + 50)]) for k in (0, 25)]
    total = Total()
    for groups in halves:
        total.add(groups[("", "", "")])
    assert total.views == 100 and total.unique("viewers") == 75 and total.unique("devices") == 75


def _hourly(
    hours: int, per_hour: int, distinct: int, seed: int
) -> list[tuple[bytes, set[int] | None]]:
    """`hours` serialized sketches of `per_hour` ids drawn from `distinct` ids; the ids
    themselves kept for the first 24 hours only (enough for the hour and day truth)."""
    rng = random.Random(seed)
    out = []
    for h in range(hours):
        sk = hll_sketch(LG_K)
        ids = [rng.randrange(distinct) for _ in range(per_hour)]
        for i in ids:
            sk.update(f"viewer-{i}")
        out.append((sk.serialize_compact(), set(ids) if h < 24 else None))
    return out


def _union(blobs: list[bytes]) -> int:
    total = Total()
    for blob in blobs:
        total.add_row(viewers=blob)
    return total.unique("viewers")


def _within(estimate: int, exact: int, share: float) -> bool:
    return abs(estimate - exact) <= exact * share


def test_unique_counts_up_to_ten_thousand_within_one_percent() -> None:
    hours = _hourly(90 * 24, 40, 10_000, seed=1)
    every = set(range(10_000))
    assert _within(_union([b for b, _ in hours]), len(every), 0.01)  # 90 days: all 10,000
    day_ids = set().union(*(ids for _, ids in hours[:24]))
    assert _within(_union([b for b, _ in hours[:24]]), len(day_ids), 0.01)
    assert _union([hours[0][0]]) == len(hours[0][1])  # an hour: small, exact


def test_unique_counts_at_a_million_within_two_percent() -> None:
    per_hour = 1_000_000 // (90 * 24) + 1
    rng = random.Random(2)
    blobs, seen = [], 0
    day_exact = set()
    for h in range(90 * 24):
        sk = hll_sketch(LG_K)
        for i in range(seen, seen + per_hour):  # each id once: 1,000,000 distinct in all
            sk.update(f"viewer-{i}")
        if h < 24:
            day_exact.update(range(seen, seen + per_hour))
        seen += per_hour
        blobs.append(sk.serialize_compact())
    rng.shuffle(blobs[24:])
    assert seen >= 1_000_000
    assert _within(_union(blobs), seen, 0.02)  # 90 days
    assert _within(_union(blobs[:24]), len(day_exact), 0.01)  # a day
    assert _within(_union(blobs[:1]), per_hour, 0.01)  # an hour


def test_an_empty_aggregate_serializes_and_unions_to_zero() -> None:
    row = Aggregate().as_row()
    total = Total()
    total.add_row(**row)
    assert total.unique("viewers") == 0 and total.views == 0


def test_retention_counts_each_percent_and_quantiles_merge() -> None:
    from mediamill.pipeline.rollups import retention_of

    assert retention_of([]) == [0] * 101
    counts = retention_of([(1 << 101) - 1, 0b111, 1 << 100])
    assert counts[:4] == [2, 2, 2, 1] and counts[50] == 1 and counts[100] == 2
    halves = []
    for part in (range(0, 500), range(500, 1000)):
        agg = Aggregate()
        for ms in part:
            v = figures(f"v{ms}", f"d{ms}")
            agg.add(v.model_copy(update={"startup_ms": ms}))
        halves.append(agg)
    total = Total()
    for agg in halves:
        total.add(agg)
    assert abs(total.startup_ms(0.5) - 500) <= 1000 * 0.02
    assert abs(total.startup_ms(0.95) - 950) <= 1000 * 0.02
    assert Total().startup_ms(0.5) is None
