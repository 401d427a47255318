"""The webhook dispatcher: outbox events out to subscribers, at least once.

Every worker process runs one (a thread started and stopped with the worker, like
the sweeper). Each tick it (1) fans unpublished outbox events out as deliveries, in
one transaction, so a crash re-runs it harmlessly; (2) leases due deliveries with a
conditional UPDATE (two dispatchers never attempt the same one at once, a dead
one's lease lapses) and attempts each on a thread of its own, outside any
transaction; (3) records the outcome: delivered, retried on the schedule with
jitter (a larger `Retry-After` on 429/503 wins), or failed. A 410 disables the
endpoint, and so does failing without a success for `webhook_disable_after_s`.

The payload is `{id, type, createdAt, data}`, signed per Standard Webhooks with the
event id as `webhook-id` (the same on every retry: receivers deduplicate on it).
Signed URLs are made at send time, so they are fresh on every attempt.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from datetime import UTC, datetime
from typing import Any

from mediamill.pipeline.webhook_signing import signature_headers
from mediamill.schemas.errors import MediaMillError
from mediamill.schemas.packages import Package
from mediamill.storage import webhook_deliveries as wd
from mediamill.workers.delivery import sign_file_url, sign_package_urls
from mediamill.workers.health import OutageLog
from mediamill.workers.runtime import Runtime
from mediamill.workers.url_source import parse_allow_hosts
from mediamill.workers.webhook_http import post_webhook

log = logging.getLogger(__name__)

FAN_OUT_BATCH = 100
DEFAULT_CONCURRENCY = 4


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _text(value: str | None) -> str | None:
    """Storable text: PostgreSQL refuses NUL characters, which an answer may hold."""
    return value.replace("\x00", "\ufffd") if value is not None else None


def enrich(rt: Runtime, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """The event's data with signed URLs added: a ready rendition's `url`, a package's
    `hlsUrl` and `dashUrl`. When signing is not configured the URLs are left out."""
    data = json.loads(json.dumps(data))  # a copy we may change
    rendition = data.get("rendition")
    if isinstance(rendition, dict) and rendition.get("storageKey"):
        try:
            signed = sign_file_url(rt, rendition["storageKey"], rendition.get("assetId"))
            rendition["url"], rendition["urlExpiresAt"] = signed.url, signed.expires_at_epoch_s
        except MediaMillError as exc:
            log.debug("webhook %s: no signed rendition URL: %s", event_type, exc)
    package = data.get("package")
    if isinstance(package, dict) and package.get("status") == "ready":
        try:
            urls = sign_package_urls(rt, Package.model_validate(package))
            package["hlsUrl"], package["dashUrl"] = urls.hls.url, urls.dash.url
            package["urlExpiresAt"] = urls.hls.expires_at_epoch_s
        except (MediaMillError, ValueError) as exc:
            log.debug("webhook %s: no signed package URLs: %s", event_type, exc)
    return data


def payload_body(rt: Runtime, attempt: wd.Attempt) -> bytes:
    """The JSON body of one delivery: `{id, type, createdAt, data}`."""
    payload = {
        "id": attempt.event_id,
        "type": attempt.event_type,
        "createdAt": _iso(attempt.event_created_at),
        "data": enrich(rt, attempt.event_type, attempt.event_data),
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def lease_s(rt: Runtime) -> float:
    """How long a claim lasts: the setting, but never shorter than an attempt can take
    (connect and read each up to the timeout)."""
    settings = rt.settings
    return max(settings.webhook_delivery_lease_s, 2 * settings.webhook_timeout_s + 1)


def policy_of(rt: Runtime) -> wd.Policy:
    settings = rt.settings
    return wd.Policy(
        retry_schedule_s=wd.parse_schedule(settings.webhook_retry_schedule_s),
        disable_after_s=settings.webhook_disable_after_s,
    )


def attempt_delivery(rt: Runtime, delivery_id: str) -> str | None:
    """Send one claimed delivery and record the outcome. Returns its new status."""
    with rt.db.session() as s:
        attempt = wd.load_attempt(s, delivery_id)
    if attempt is None:
        return None
    settings = rt.settings
    try:
        body = payload_body(rt, attempt)
        headers = signature_headers(attempt.secrets, attempt.event_id, int(time.time()), body)
        result = post_webhook(
            attempt.url,
            body,
            headers,
            allow_hosts=parse_allow_hosts(settings.webhook_allow_hosts),
            timeout_s=settings.webhook_timeout_s,
            max_response_bytes=settings.webhook_max_response_bytes,
        )
        outcome = wd.Outcome(
            http_status=result.status,
            response_excerpt=_text(result.excerpt.decode("utf-8", "replace")) or None,
            duration_ms=result.duration_ms,
            error=_text(result.error),
            retry_after_s=result.retry_after_s,
        )
    except Exception as exc:  # a bug must not wedge the delivery: retried like a failure
        log.warning("webhook delivery %s could not be attempted", delivery_id, exc_info=True)
        outcome = wd.Outcome(None, None, 0, f"internal error: {exc!r}")
    with rt.db.session() as s:
        status = wd.record_attempt(s, delivery_id, outcome, policy_of(rt), random.random())
    log.info(
        "webhook %s %s -> %s: %s (%s)",
        attempt.event_type,
        attempt.event_id,
        attempt.url,
        outcome.http_status or outcome.error,
        status,
    )
    return status


def fan_out(rt: Runtime, batch: int = FAN_OUT_BATCH) -> int:
    """Publish unpublished outbox events as deliveries until none are left."""
    total = 0
    while True:
        with rt.db.session() as s:
            published = wd.fan_out(s, batch)
        total += published
        if published < batch:
            return total


def dispatch_once(rt: Runtime, limit: int = 100) -> int:
    """One synchronous round (fan out, then attempt what is due, one by one); for
    tests and tools. Returns the number of attempts made."""
    fan_out(rt)
    with rt.db.session() as s:
        claimed = wd.claim_due(s, lease_s(rt), limit)
    for delivery_id in claimed:
        attempt_delivery(rt, delivery_id)
    return len(claimed)


class Dispatcher(threading.Thread):
    """Fans out and attempts deliveries every `webhook_dispatch_interval_s`, each
    attempt on its own thread, at most `concurrency` at once."""

    def __init__(
        self, rt: Runtime, interval_s: float | None = None, concurrency: int = DEFAULT_CONCURRENCY
    ) -> None:
        super().__init__(name="mediamill-webhooks", daemon=True)
        self.rt = rt
        self.interval_s = interval_s or rt.settings.webhook_dispatch_interval_s
        self.concurrency = concurrency
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._in_flight = 0
        self.outage = OutageLog(log, "webhook dispatch")

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            try:
                self.tick()
            except Exception as exc:  # the database is down: try again next tick
                self.outage.failed(exc)
            else:
                self.outage.succeeded()

    def tick(self) -> int:
        """Fan out, then start attempts for the due deliveries there is room for."""
        fan_out(self.rt)
        with self._lock:
            room = self.concurrency - self._in_flight
        if room <= 0 or self.stopped.is_set():
            return 0
        with self.rt.db.session() as s:
            claimed = wd.claim_due(s, lease_s(self.rt), room)
        for delivery_id in claimed:
            with self._lock:
                self._in_flight += 1
            threading.Thread(
                target=self._attempt, args=(delivery_id,), name="mediamill-webhook", daemon=True
            ).start()
        return len(claimed)

    def _attempt(self, delivery_id: str) -> None:
        try:
            attempt_delivery(self.rt, delivery_id)
        except Exception:
            log.warning("webhook delivery %s failed to record", delivery_id, exc_info=True)
        finally:
            with self._lock:
                self._in_flight -= 1

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop ticking. Attempts in flight finish on their own (or, if the process
        exits first, their leases lapse and another dispatcher sends them again)."""
        self.stopped.set()
        if self.is_alive():
            self.join(timeout_s)
