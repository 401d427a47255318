"""Prometheus metrics of one API process: HTTP latency observed per request, and
job and queue gauges read from the database and the broker at scrape time (the
database is the truth, and workers are other processes)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class ApiMetrics:
    """Owns a registry of its own, so several apps in one process never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_latency = Histogram(
            "mediamill_http_request_duration_seconds",
            "HTTP request latency by method, route template and status",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_latency.labels(method, route, str(status)).observe(seconds)

    def add_state_collector(self, read: Callable[[], dict[str, dict]]) -> None:
        """`read()` returns {"jobs": {(type, status): n}, "stageSeconds": {stage: (n, sum)},
        "queueDepth": {queue: n}}; called on every scrape."""
        self.registry.register(_StateCollector(read))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, read: Callable[[], dict[str, dict]]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            state = self.read()
        except Exception:  # a scrape must not fail because the DB hiccupped
            log.warning("metrics: reading job state failed", exc_info=True)
            return
        jobs = GaugeMetricFamily(
            "mediamill_jobs", "Jobs by type and status", labels=["type", "status"]
        )
        for (job_type, status), n in sorted(state.get("jobs", {}).items()):
            jobs.add_metric([job_type, status], n)
        yield jobs
        count = GaugeMetricFamily(
            "mediamill_stage_duration_seconds_count",
            "Finished stages by stage (from the job rows)",
            labels=["stage"],
        )
        total = GaugeMetricFamily(
            "mediamill_stage_duration_seconds_sum",
            "Total seconds spent in finished stages, by stage",
            labels=["stage"],
        )
        for stage, (n, seconds) in sorted(state.get("stageSeconds", {}).items()):
            count.add_metric([stage], n)
            total.add_metric([stage], seconds)
        yield count
        yield total
        depth = GaugeMetricFamily(
            "mediamill_queue_depth", "Messages waiting in the broker queue", labels=["queue"]
        )
        for queue, n in sorted(state.get("queueDepth", {}).items()):
            depth.add_metric([queue], n)
        yield depth
        live = GaugeMetricFamily(
            "mediamill_workers_live",
            "Worker processes whose heartbeat is within MEDIAMILL_WORKER_STALE_S",
        )
        live.add_metric([], state.get("workersLive", {}).get("", 0))
        yield live
