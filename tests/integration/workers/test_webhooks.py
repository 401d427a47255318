"""The webhook dispatcher against a real HTTP receiver on loopback: fan-out from the
outbox, Standard Webhooks signatures (verified with the `standardwebhooks` package),
retries on the schedule, Retry-After, 410 and disable-after, redirects not followed,
the SSRF guard at dispatch, and no event lost when a `mediamill worker` is killed."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from mediamill.config.settings import get_settings
from mediamill.pipeline.webhook_signing import new_secret
from mediamill.schemas.base import utcnow
from mediamill.storage import outbox, repo
from mediamill.storage import webhook_deliveries as wd
from mediamill.storage.models import WebhookDeliveryRow, WebhookEndpointRow
from mediamill.workers import webhook_http
from mediamill.workers.boot import build_runtime
from mediamill.workers.runtime import Runtime
from mediamill.workers.webhooks import Dispatcher, dispatch_once

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "mediamill"]
DISPATCH_INTERVAL_S = 0.05


# ---- a real receiver --------------------------------------------------------------------


@dataclass
class Received:
    at: float  # time.monotonic()
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    sleep_s: float = 0.0


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 answering from a script: `replies` are used in
    order, then `default`. Every request is recorded."""

    port: int = 0
    replies: list[Reply] = field(default_factory=list)
    default: Reply = field(default_factory=Reply)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def next_reply(self) -> Reply:
        with self.lock:
            return self.replies.pop(0) if self.replies else self.default

    def record(self, item: Received) -> None:
        with self.lock:
            self.received.append(item)

    def at_path(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.received if r.path == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            state.record(Received(time.monotonic(), self.path, headers, body))
            reply = state.next_reply()
            if reply.sleep_s:
                time.sleep(reply.sleep_s)
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


# ---- the runtime and helpers ------------------------------------------------------------


@pytest.fixture
def configure(embedded_env: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Runtime]:
    """A runtime on the embedded default with webhook settings overridden."""

    def make(**overrides: str) -> Runtime:
        env = {
            "MEDIAMILL_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
            "MEDIAMILL_WEBHOOK_RETRY_SCHEDULE_S": "0.2,0.4,0.8",
            "MEDIAMILL_WEBHOOK_DISPATCH_INTERVAL_S": str(DISPATCH_INTERVAL_S),
            "MEDIAMILL_WEBHOOK_DELIVERY_LEASE_S": "5",
            "MEDIAMILL_WEBHOOK_TIMEOUT_S": "5",
            "MEDIAMILL_SIGNING_SECRET": "test-signing-secret-0123456789",
            **overrides,
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        return build_runtime(get_settings())

    return make


@pytest.fixture
def rt(configure: Callable[..., Runtime]) -> Runtime:
    return configure()


@pytest.fixture
def any_rt(database_url: str | None, configure: Callable[..., Runtime]) -> Iterator[Runtime]:
    """The embedded SQLite runtime, or one on a fresh PostgreSQL database."""
    if database_url is None:
        yield configure()
        return
    runtime = configure(MEDIAMILL_DATABASE_URL=database_url)
    runtime.db.upgrade()
    yield runtime


def add_endpoint(
    rt: Runtime,
    url: str,
    types: list[str] | None = None,
    *,
    secret: str | None = None,
    previous_secret: str | None = None,
    previous_valid_s: float = 3600,
) -> WebhookEndpointRow:
    now = utcnow()
    row = WebhookEndpointRow(
        id=str(uuid.uuid4()),
        url=url,
        events={"types": types or ["*"]},
        status="active",
        secret=secret or new_secret(),
        previous_secret=previous_secret,
        previous_secret_expires_at=now + timedelta(seconds=previous_valid_s)
        if previous_secret
        else None,
        created_at=now,
        modified_at=now,
    )
    with rt.db.session() as s:
        s.add(row)
    return row


def add_event(rt: Runtime, event_type: str = "asset.analysed", data: dict | None = None) -> str:
    with rt.db.session() as s:
        return outbox.add_event(s, event_type, data or {"asset": {"id": uuid.uuid4().hex}}).id


def deliveries(rt: Runtime, endpoint_id: str) -> list[WebhookDeliveryRow]:
    with rt.db.session() as s:
        return list(
            s.query(WebhookDeliveryRow)
            .filter_by(endpoint_id=endpoint_id)
            .order_by(WebhookDeliveryRow.created_at)
        )


def endpoint(rt: Runtime, endpoint_id: str) -> WebhookEndpointRow:
    with rt.db.session() as s:
        row = s.get(WebhookEndpointRow, endpoint_id)
        assert row is not None
        return row


def wait_for(check: Callable[[], object], timeout_s: float = 15.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or check}")


@pytest.fixture
def dispatcher(rt: Runtime) -> Iterator[Dispatcher]:
    d = Dispatcher(rt)
    d.start()
    yield d
    d.stop()


class _running:  # noqa: N801
    """A Dispatcher for the duration of a `with` block."""

    def __init__(self, rt: Runtime) -> None:
        self.dispatcher = Dispatcher(rt)

    def __enter__(self) -> Dispatcher:
        self.dispatcher.start()
        return self.dispatcher

    def __exit__(self, *exc: object) -> None:
        self.dispatcher.stop()


def verify(secret: str, item: Received) -> dict:
    return Webhook(secret).verify(item.body, item.headers)


# ---- fan-out ----------------------------------------------------------------------------


def test_fan_out_follows_subscriptions_once(any_rt: Runtime, receiver: Receiver) -> None:
    rt = any_rt
    everything = add_endpoint(rt, receiver.url("/all"), ["*"])
    renditions = add_endpoint(rt, receiver.url("/r"), ["rendition.ready"])
    disabled = add_endpoint(rt, receiver.url("/off"), ["*"])
    with rt.db.session() as s:
        s.get(WebhookEndpointRow, disabled.id).status = "disabled"
    analysed = add_event(rt, "asset.analysed")
    ready = add_event(rt, "rendition.ready", {"rendition": {"id": "r1", "status": "ready"}})

    with rt.db.session() as s:
        assert wd.fan_out(s) == 2
    with rt.db.session() as s:
        assert wd.fan_out(s) == 0  # published: nothing more
        # a crash after inserting but before publishing: re-running is harmless
        for event in outbox.list_events(s):
            event.published_at = None
    with rt.db.session() as s:
        assert wd.fan_out(s) == 2
    assert {d.event_id for d in deliveries(rt, everything.id)} == {analysed, ready}
    assert [d.event_id for d in deliveries(rt, renditions.id)] == [ready]
    assert deliveries(rt, disabled.id) == []
    assert all(d.status == "pending" for d in deliveries(rt, everything.id))


def test_a_lease_lets_one_dispatcher_attempt_a_delivery(
    any_rt: Runtime, receiver: Receiver
) -> None:
    rt = any_rt
    add_endpoint(rt, receiver.url())
    add_event(rt)
    with rt.db.session() as s:
        wd.fan_out(s)
    with rt.db.session() as s:
        first = wd.claim_due(s, lease_s=0.3, limit=10)
    with rt.db.session() as s:
        assert wd.claim_due(s, lease_s=0.3, limit=10) == []
    time.sleep(0.35)  # the first dispatcher "died": its lease lapses
    with rt.db.session() as s:
        assert wd.claim_due(s, lease_s=0.3, limit=10) == first and len(first) == 1


def test_two_dispatchers_share_the_work_without_doubles(
    any_rt: Runtime, receiver: Receiver
) -> None:
    rt = any_rt
    receiver.default = Reply(200, sleep_s=0.02)
    hook = add_endpoint(rt, receiver.url())
    event_ids = {add_event(rt) for _ in range(30)}
    with _running(rt), _running(rt):
        wait_for(
            lambda: {r.headers["webhook-id"] for r in receiver.received} >= event_ids,
            timeout_s=30,
            what="every event",
        )
        wait_for(lambda: all(d.status == "delivered" for d in deliveries(rt, hook.id)))
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert sorted(ids) == sorted(event_ids)  # each exactly once: the leases held


def test_a_binary_answer_is_logged_as_text(any_rt: Runtime, receiver: Receiver) -> None:
    rt = any_rt
    receiver.default = Reply(200, body=b"\x00\xff\xfebin")
    hook = add_endpoint(rt, receiver.url())
    add_event(rt)
    dispatch_once(rt)
    [delivery] = deliveries(rt, hook.id)
    assert delivery.status == "delivered"
    assert delivery.response_excerpt == "\ufffd\ufffd\ufffdbin"


# ---- signatures and retries -------------------------------------------------------------


def test_retries_follow_the_schedule_and_every_attempt_verifies(
    rt: Runtime, receiver: Receiver, dispatcher: Dispatcher
) -> None:
    receiver.replies = [Reply(500, body=b"x" * 100_000), Reply(502), Reply(500)]
    hook = add_endpoint(rt, receiver.url(), ["asset.analysed"])
    event_id = add_event(rt, "asset.analysed", {"asset": {"id": "a1", "lufs": -14.2}})

    wait_for(lambda: len(receiver.received) >= 4, what="four attempts")
    wait_for(lambda: deliveries(rt, hook.id)[0].status == "delivered", what="delivered")
    got = receiver.received
    assert len(got) == 4
    for item in got:
        payload = verify(hook.secret, item)
        assert payload["id"] == event_id and payload["type"] == "asset.analysed"
        assert payload["data"] == {"asset": {"id": "a1", "lufs": -14.2}}
        assert payload["createdAt"].endswith("Z")
        assert item.headers["webhook-id"] == event_id
        assert item.headers["content-type"] == "application/json"
        assert item.headers["user-agent"].startswith("MediaMill")
        assert item.headers["x-mediamill-signature-256"].startswith("sha256=")
    # the gaps follow 0.2, 0.4, 0.8 s with ±10 % jitter, plus the dispatch tick
    for gap_base, (before, after) in zip([0.2, 0.4, 0.8], itertools.pairwise(got), strict=True):
        gap = after.at - before.at
        assert gap_base * 0.9 - 0.02 <= gap <= gap_base * 1.1 + DISPATCH_INTERVAL_S + 0.3, (
            gap_base,
            gap,
        )
    delivery = deliveries(rt, hook.id)[0]
    assert delivery.attempt_count == 4 and delivery.http_status == 200
    assert delivery.response_excerpt == "ok" and delivery.delivered_at is not None
    row = endpoint(rt, hook.id)
    assert row.last_success_at is not None and row.failing_since is None
    assert row.last_delivery_at is not None and row.status == "active"


def test_an_exhausted_schedule_fails_and_the_log_keeps_1_kb(
    configure: Callable[..., Runtime], receiver: Receiver
) -> None:
    rt = configure(MEDIAMILL_WEBHOOK_RETRY_SCHEDULE_S="0.05,0.05")
    receiver.default = Reply(500, body=b"e" * 5000)
    hook = add_endpoint(rt, receiver.url())
    add_event(rt)
    with _running(rt):
        wait_for(lambda: deliveries(rt, hook.id) and deliveries(rt, hook.id)[0].status == "failed")
    time.sleep(0.2)
    assert len(receiver.received) == 3  # the first attempt and two retries
    delivery = deliveries(rt, hook.id)[0]
    assert delivery.attempt_count == 3 and delivery.http_status == 500
    assert delivery.response_excerpt == "e" * 1024
    assert delivery.next_attempt_at is None
    assert endpoint(rt, hook.id).failing_since is not None


def test_a_redirect_is_a_failure_not_followed(
    configure: Callable[..., Runtime], receiver: Receiver
) -> None:
    rt = configure(MEDIAMILL_WEBHOOK_RETRY_SCHEDULE_S="0.05")
    receiver.default = Reply(302, headers={"Location": receiver.url("/elsewhere")})
    hook = add_endpoint(rt, receiver.url())
    add_event(rt)
    with _running(rt):
        wait_for(lambda: deliveries(rt, hook.id) and deliveries(rt, hook.id)[0].status == "failed")
    assert receiver.at_path("/elsewhere") == []
    assert len(receiver.at_path("/hook")) == 2
    delivery = deliveries(rt, hook.id)[0]
    assert delivery.http_status == 302 and "not followed" in (delivery.error or "")


def test_410_disables_the_endpoint_and_tells_the_others(
    rt: Runtime, receiver: Receiver, dispatcher: Dispatcher
) -> None:
    receiver.replies = [Reply(410)]
    gone = add_endpoint(rt, receiver.url("/gone"), ["asset.analysed", "endpoint.disabled"])
    watcher = add_endpoint(rt, receiver.url("/watch"), ["endpoint.disabled"])
    add_event(rt)

    wait_for(lambda: receiver.at_path("/watch"), what="endpoint.disabled at the watcher")
    row = endpoint(rt, gone.id)
    assert row.status == "disabled" and "410" in (row.disabled_reason or "")
    [delivery] = deliveries(rt, gone.id)
    assert (
        delivery.status == "failed" and delivery.http_status == 410 and delivery.attempt_count == 1
    )
    payload = verify(watcher.secret, receiver.at_path("/watch")[0])
    assert payload["type"] == "endpoint.disabled" and payload["data"]["webhook"]["id"] == gone.id
    time.sleep(0.2)
    assert len(receiver.at_path("/gone")) == 1  # not told about its own disabling


def test_retry_after_on_429_is_honoured(rt: Runtime, receiver: Receiver) -> None:
    receiver.replies = [Reply(429, headers={"Retry-After": "1"})]
    hook = add_endpoint(rt, receiver.url())
    add_event(rt)
    with _running(rt):
        wait_for(lambda: len(receiver.received) >= 2, what="the retry")
    first, second = receiver.received[:2]
    assert second.at - first.at >= 1.0  # not the 0.2 s schedule entry
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    wait_for(lambda: deliveries(rt, hook.id)[0].status == "delivered")


def test_the_retry_delay_rules() -> None:
    policy = wd.Policy(retry_schedule_s=[5.0, 300.0], disable_after_s=60)
    failed = wd.Outcome(500, None, 1)
    assert wd.retry_delay_s(policy, 1, failed, 0.0) == pytest.approx(4.5)
    assert wd.retry_delay_s(policy, 2, failed, 0.999999) == pytest.approx(330.0, abs=0.01)
    assert wd.retry_delay_s(policy, 3, failed, 0.5) is None  # the schedule is spent
    busy = wd.Outcome(503, None, 1, retry_after_s=60)
    assert wd.retry_delay_s(policy, 1, busy, 0.5) == 60  # a longer Retry-After wins
    assert wd.retry_delay_s(policy, 2, busy, 0.5) == pytest.approx(300.0)  # a shorter does not
    ignored = wd.Outcome(500, None, 1, retry_after_s=60)
    assert wd.retry_delay_s(policy, 1, ignored, 0.5) == pytest.approx(5.0)  # only 429/503


def test_retry_after_as_an_http_date() -> None:
    from email.utils import format_datetime

    now = utcnow()
    later = format_datetime(now + timedelta(seconds=120), usegmt=True)
    assert 118 <= webhook_http.parse_retry_after(later, now) <= 121
    assert webhook_http.parse_retry_after("7") == 7.0
    assert webhook_http.parse_retry_after("soon") is None


def test_an_endpoint_failing_too_long_is_disabled(
    configure: Callable[..., Runtime], receiver: Receiver
) -> None:
    rt = configure(
        MEDIAMILL_WEBHOOK_RETRY_SCHEDULE_S=",".join(["0.1"] * 20),
        MEDIAMILL_WEBHOOK_DISABLE_AFTER_S="0.5",
    )
    receiver.default = Reply(503)
    hook = add_endpoint(rt, receiver.url(), ["asset.analysed"])
    add_event(rt)
    with _running(rt):
        wait_for(lambda: endpoint(rt, hook.id).status == "disabled", what="disabled")
    row = endpoint(rt, hook.id)
    assert "failing without a success" in (row.disabled_reason or "")
    with rt.db.session() as s:
        [event] = outbox.list_events(s, "endpoint.disabled")
        assert event.data["webhook"]["id"] == hook.id
    assert 3 <= len(receiver.received) <= 12


# ---- SSRF at dispatch -------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",  # cloud metadata
        "10.1.2.3",
        "192.168.0.10",
        "100.64.0.1",  # CGNAT
        "127.0.0.1",
        "::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "fe80::1",
        "224.0.0.1",
        "240.0.0.1",
    ],
)
def test_non_public_addresses_are_refused_at_dispatch(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    monkeypatch.setattr(webhook_http, "resolve", lambda host, port: [address])
    hook = add_endpoint(rt, "https://hooks.example.com/in")
    add_event(rt)
    assert dispatch_once(rt) == 1
    [delivery] = deliveries(rt, hook.id)
    assert delivery.status == "retrying" and delivery.http_status is None
    assert "refused" in (delivery.error or "") and address in (delivery.error or "")


def test_loopback_without_the_allow_list_is_refused(
    configure: Callable[..., Runtime], receiver: Receiver
) -> None:
    rt = configure(MEDIAMILL_WEBHOOK_ALLOW_HOSTS="")
    plain = add_endpoint(rt, receiver.url())  # http:// and 127.0.0.1
    tls = add_endpoint(rt, f"https://127.0.0.1:{receiver.port}/hook")
    add_event(rt)
    dispatch_once(rt)
    assert receiver.received == []
    assert "https" in (deliveries(rt, plain.id)[0].error or "")
    assert "non-public" in (deliveries(rt, tls.id)[0].error or "")


def test_the_checked_address_is_the_one_connected_to(
    configure: Callable[..., Runtime], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host resolves once; the connection goes to that address, with the Host
    header naming the host (a second lookup could be answered differently)."""
    rt = configure(MEDIAMILL_WEBHOOK_ALLOW_HOSTS="hooks.test")
    lookups: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    monkeypatch.setattr(webhook_http, "resolve", resolve)
    hook = add_endpoint(rt, receiver.url(host="hooks.test"))
    add_event(rt)
    dispatch_once(rt)
    assert lookups == ["hooks.test"]
    [item] = receiver.received
    assert item.headers["host"] == f"hooks.test:{receiver.port}"
    assert deliveries(rt, hook.id)[0].status == "delivered"


# ---- rotation, ping, redeliver, payloads ------------------------------------------------


def test_during_a_rotation_both_secrets_verify(rt: Runtime, receiver: Receiver) -> None:
    old, new = new_secret(), new_secret()
    rotating = add_endpoint(rt, receiver.url("/rot"), secret=new, previous_secret=old)
    expired = add_endpoint(
        rt, receiver.url("/exp"), secret=new, previous_secret=old, previous_valid_s=-1
    )
    add_event(rt)
    dispatch_once(rt)
    [item] = receiver.at_path("/rot")
    assert len(item.headers["webhook-signature"].split(" ")) == 2
    verify(new, item)
    verify(old, item)
    [item] = receiver.at_path("/exp")
    verify(new, item)
    with pytest.raises(WebhookVerificationError):
        verify(old, item)
    assert rotating.id != expired.id


def test_ping_and_redeliver_keep_the_webhook_id(rt: Runtime, receiver: Receiver) -> None:
    hook = add_endpoint(rt, receiver.url(), ["asset.analysed"])
    other = add_endpoint(rt, receiver.url("/other"), ["*"])
    with rt.db.session() as s:
        delivery_id = wd.create_ping_delivery(s, hook.id)
    dispatch_once(rt)
    [ping] = receiver.at_path("/hook")
    assert verify(hook.secret, ping)["type"] == "ping"
    assert receiver.at_path("/other") == [] and deliveries(rt, other.id) == []
    with rt.db.session() as s:
        row = wd.redeliver(s, delivery_id)
        assert row.status == "pending"
    dispatch_once(rt)
    first, again = receiver.at_path("/hook")
    assert again.headers["webhook-id"] == first.headers["webhook-id"]
    assert json.loads(again.body)["id"] == json.loads(first.body)["id"]
    assert deliveries(rt, hook.id)[0].status == "delivered"


def test_payloads_carry_signed_urls(rt: Runtime, receiver: Receiver) -> None:
    hook = add_endpoint(rt, receiver.url())
    asset_id = "a" * 64
    rendition = {
        "id": "r1",
        "assetId": asset_id,
        "status": "ready",
        "storageKey": f"renditions/{asset_id}/mp3-128k.mp3",
    }
    package = {
        "id": "p1",
        "assetId": asset_id,
        "packageId": "pk1",
        "status": "ready",
        "renditions": [],
        "segmentDuration": 4,
        "duration": 6000,
    }
    job = {"id": "j1", "status": "failed", "error": {"name": "BadMediaError", "message": "no"}}
    add_event(rt, "rendition.ready", {"rendition": rendition})
    add_event(rt, "package.ready", {"package": package})
    add_event(rt, "job.failed", {"job": job})
    dispatch_once(rt)
    payloads = {p["type"]: p["data"] for p in (verify(hook.secret, r) for r in receiver.received)}
    url = payloads["rendition.ready"]["rendition"]["url"]
    assert url.startswith(rt.settings.resolved_cdn_base_url) and "mp3-128k.mp3" in url
    assert "hlsUrl" in payloads["package.ready"]["package"]
    assert "dashUrl" in payloads["package.ready"]["package"]
    assert payloads["job.failed"]["job"]["error"]["name"] == "BadMediaError"


def test_a_processed_file_reaches_the_endpoint_as_events(
    rt: Runtime, receiver: Receiver, samples: dict[str, Path]
) -> None:
    """The real pipeline in a worker (whose dispatcher delivers): every state change
    of an ingest arrives, signed, with its resource."""
    from mediamill.workers.submit import submit_local_file
    from mediamill.workers.worker import InProcessWorker

    hook = add_endpoint(rt, receiver.url())
    with InProcessWorker(rt, threads=1):
        job = submit_local_file(rt, samples["music.ogg"], stage_in_store=False)
        wait_for(
            lambda: any(json.loads(r.body)["type"] == "asset.ready" for r in receiver.received),
            timeout_s=120,
            what="asset.ready",
        )
    payloads = {}
    for item in receiver.received:
        payload = verify(hook.secret, item)
        payloads.setdefault(payload["type"], payload["data"])
    assert {"asset.created", "asset.analysed", "rendition.ready", "asset.ready"} <= set(payloads)
    asset = payloads["asset.ready"]["asset"]
    assert asset["originalAssetId"] == submit_job_asset(rt, job.id)
    assert {"lufs", "truePeak", "loudnessRange"} <= set(asset)
    assert asset["lufs"] is not None
    url = payloads["rendition.ready"]["rendition"]["url"]
    assert url.startswith(rt.settings.resolved_cdn_base_url)


def submit_job_asset(rt: Runtime, job_id: str) -> str | None:
    with rt.db.session() as s:
        return repo.get_job_row(s, job_id).asset_id


# ---- nothing lost -----------------------------------------------------------------------


def test_no_event_lost_when_the_worker_is_killed(
    embedded_env: Path, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow receiver keeps deliveries in flight; SIGKILL the worker mid-way, start
    another: every event arrives at least once (deduplicated on webhook-id)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
    env.update(
        MEDIAMILL_DATA_DIR=str(embedded_env),
        MEDIAMILL_WEBHOOK_ALLOW_HOSTS="127.0.0.1",
        MEDIAMILL_WEBHOOK_RETRY_SCHEDULE_S="0.2,0.2,0.2,0.2,0.2",
        MEDIAMILL_WEBHOOK_DISPATCH_INTERVAL_S="0.1",
        MEDIAMILL_WEBHOOK_DELIVERY_LEASE_S="2",
        MEDIAMILL_WEBHOOK_TIMEOUT_S="1",  # so the lease is 3 s (2 x timeout + 1)
    )
    for name, value in env.items():
        if name.startswith("MEDIAMILL_"):
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    rt = build_runtime(get_settings())
    receiver.default = Reply(200, sleep_s=0.4)
    hook = add_endpoint(rt, receiver.url())
    event_ids = {add_event(rt) for _ in range(20)}

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [*CLI, "worker", "--threads", "1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"worker-{time.monotonic_ns()}.log").open("w"),
        )

    worker = start()
    try:
        wait_for(lambda: len(receiver.received) >= 3, timeout_s=60, what="first deliveries")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        seen_at_kill = {r.headers["webhook-id"] for r in receiver.received}
        assert seen_at_kill < event_ids  # killed mid-way
        worker = start()
        wait_for(
            lambda: {r.headers["webhook-id"] for r in receiver.received} >= event_ids,
            timeout_s=90,
            what="every event",
        )

        def all_delivered() -> list[WebhookDeliveryRow] | None:
            rows = deliveries(rt, hook.id)
            return rows if rows and all(d.status == "delivered" for d in rows) else None

        hook_deliveries = wait_for(all_delivered, timeout_s=30, what="every delivery settled")
    finally:
        worker.kill()
        worker.wait(10)
    assert {d.event_id for d in hook_deliveries} == event_ids
    received_ids = [r.headers["webhook-id"] for r in receiver.received]
    assert set(received_ids) == event_ids  # at least once; duplicates are allowed
    # The attempts in flight when the worker died (the receiver sleeps 0.4 s before
    # answering) were sent again once their leases lapsed.
    assert any(received_ids.count(i) >= 2 for i in seen_at_kill)
