"""`mediamill webhooks ...` as a user runs it: real processes on a temp data dir, the
same storage and checks as the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "mediamill"]
PUBLIC = "https://93.184.215.14/hooks/mediamill"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
    clean["MEDIAMILL_DATA_DIR"] = str(tmp_path / "data")
    clean["MEDIAMILL_WEBHOOK_ALLOW_HOSTS"] = "localhost"
    return clean


def mm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)


def ok(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    proc = mm(env, *args)
    assert proc.returncode == 0, proc.stderr
    return proc


def add_deliveries(env: dict[str, str], endpoint_id: str, statuses: list[str]) -> list[str]:
    """Delivery rows written straight into the CLI's database (as a dispatcher would)."""
    from mediamill.config.settings import Settings
    from mediamill.storage.db import database_for
    from mediamill.storage.models import WebhookDeliveryRow

    settings = Settings(data_dir=Path(env["MEDIAMILL_DATA_DIR"]))
    db = database_for(settings.resolved_database_url)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ids = [str(uuid.uuid4()) for _ in statuses]
    try:
        with db.session() as s:
            for i, (delivery_id, status) in enumerate(zip(ids, statuses, strict=True)):
                s.add(
                    WebhookDeliveryRow(
                        id=delivery_id,
                        endpoint_id=endpoint_id,
                        event_id=str(uuid.uuid4()),
                        event_type="asset.ready",
                        status=status,
                        attempt_count=3,
                        http_status=500 if status != "delivered" else 204,
                        error=None if status == "delivered" else "HTTP 500",
                        created_at=t0 + timedelta(minutes=i),
                        modified_at=t0 + timedelta(minutes=i),
                    )
                )
    finally:
        db.dispose()
    return ids


def test_add_prints_the_secret_once_and_list_shows_the_hint(env: dict[str, str]) -> None:
    proc = ok(env, "webhooks", "add", PUBLIC, "--events", "asset.ready", "job.failed")
    secret = next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("secret"))
    assert secret.startswith("whsec_")
    assert "shown only now" in proc.stderr
    created = json.loads(
        ok(
            env, "webhooks", "add", "http://localhost:8080/in", "--events", "*",
            "--description", "dev receiver", "--json",
        ).stdout
    )  # fmt: skip
    assert (
        created["secret"].startswith("whsec_") and created["secretHint"] == created["secret"][-4:]
    )
    assert created["events"] == ["*"] and created["description"] == "dev receiver"

    listed = json.loads(ok(env, "webhooks", "list", "--json").stdout)
    assert listed["data"][0]["id"] == created["id"]
    assert len(listed["data"]) == 2 and listed["nextCursor"] is None
    assert secret not in json.dumps(listed) and created["secret"] not in json.dumps(listed)
    assert {w["secretHint"] for w in listed["data"]} == {secret[-4:], created["secret"][-4:]}
    table = ok(env, "webhooks", "list")
    assert secret not in table.stdout and "active" in table.stdout


def test_add_refuses_what_the_api_refuses(env: dict[str, str]) -> None:
    for args, word in (
        (["https://169.254.169.254/x", "--events", "*"], "link-local"),
        (["https://127.0.0.1/x", "--events", "*"], "loopback"),
        (["http://93.184.215.14/x", "--events", "*"], "https"),
        ([PUBLIC, "--events", "asset.exploded"], "asset.exploded"),
    ):
        proc = mm(env, "webhooks", "add", *args)
        assert proc.returncode == 1, proc.stdout
        assert "InvalidRequestError" in proc.stderr and word in proc.stderr, proc.stderr
    assert json.loads(ok(env, "webhooks", "list", "--json").stdout)["data"] == []
    proc = mm(env, "webhooks", "add", PUBLIC)
    assert proc.returncode == 2 and "--events" in proc.stderr


def test_deliveries_and_redeliver(env: dict[str, str]) -> None:
    hook = json.loads(ok(env, "webhooks", "add", PUBLIC, "--events", "*", "--json").stdout)
    ids = add_deliveries(env, hook["id"], ["delivered", "failed", "retrying", "failed"])

    log = json.loads(ok(env, "webhooks", "deliveries", hook["id"], "--json").stdout)
    assert [d["id"] for d in log["data"]] == ids[::-1]
    failed = json.loads(
        ok(env, "webhooks", "deliveries", hook["id"], "--status", "failed", "--json").stdout
    )
    assert [d["id"] for d in failed["data"]] == [ids[3], ids[1]]
    assert failed["data"][0]["httpStatus"] == 500 and failed["data"][0]["attemptCount"] == 3
    table = ok(env, "webhooks", "deliveries", hook["id"], "--status", "failed")
    assert "HTTP 500" in table.stdout

    proc = ok(env, "webhooks", "redeliver", hook["id"], ids[1])
    assert ids[1] in proc.stdout and "queued again" in proc.stdout
    pending = json.loads(
        ok(env, "webhooks", "deliveries", hook["id"], "--status", "pending", "--json").stdout
    )
    assert [d["id"] for d in pending["data"]] == [ids[1]]
    assert pending["data"][0]["attemptCount"] == 0 and pending["data"][0]["nextRetryAt"]

    missing = mm(env, "webhooks", "redeliver", hook["id"], str(uuid.uuid4()))
    assert missing.returncode == 1 and "ModelNotFoundError" in missing.stderr
    unknown = mm(env, "webhooks", "deliveries", str(uuid.uuid4()))
    assert unknown.returncode == 1 and "ModelNotFoundError" in unknown.stderr
