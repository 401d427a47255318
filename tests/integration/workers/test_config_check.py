"""The configuration is checked once, at start: `mediamill config check`, and serve,
worker, process and listen-bucket refusing to start with one line per problem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import fresh_postgres_database

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "mediamill"]
DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAMILL_")}
    clean["MEDIAMILL_DATA_DIR"] = str(tmp_path / "data")
    clean["MEDIAMILL_STARTUP_WAIT_S"] = "1"
    return clean


def mm(env: dict[str, str], *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout_s
    )


def test_config_check_reports_the_embedded_default(env: dict[str, str]) -> None:
    proc = mm(env, "config", "check", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["mode"] == "embedded" and report["problems"] == []
    assert report["effective"]["resolved_database_url"].endswith("/data/mediamill.db")
    table = mm(env, "config", "check")
    assert table.returncode == 0 and "mode      embedded" in table.stdout
    assert table.stdout.rstrip().endswith("configuration ok")


def test_every_problem_is_named_and_secrets_are_masked(env: dict[str, str]) -> None:
    env = {
        **env,
        "MEDIAMILL_BROKER_URL": DEAD_REDIS,
        "MEDIAMILL_DATABASE_URL": "postgresql+psycopg://mm:hunter2-db@127.0.0.1:1/mm",
        "MEDIAMILL_SIGNING_SECRET": "hunter2",
        "MEDIAMILL_SIGNING_MODE": "cloudfront",
    }
    proc = mm(env, "config", "check", "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["mode"] == "distributed" and not report["ok"]
    problems = report["problems"]
    assert problems[0] == "MEDIAMILL_SIGNING_SECRET must be at least 16 characters"
    assert any(p.startswith("signing mode cloudfront needs") for p in problems)
    assert any(p.startswith("the database does not answer") for p in problems)
    assert any(p.startswith("the broker does not answer") for p in problems)
    assert len(problems) == len(set(problems)) == 4, problems
    assert "hunter2" not in proc.stdout  # neither the secret nor the URL's password
    assert report["effective"]["signing_secret"] == "**********"


@pytest.mark.parametrize(
    "command",
    [["worker"], ["serve", "--port", "1"], ["process", "x"], ["listen-bucket", "mediamill"]],
)
def test_processes_refuse_to_start_with_one_line_per_problem(
    env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    (tmp_path / "x").write_bytes(b"not media")
    env = {
        **env,
        "MEDIAMILL_BROKER_URL": DEAD_REDIS,
        "MEDIAMILL_SIGNING_MODE": "cloudfront",
    }
    started = time.monotonic()
    proc = subprocess.run(
        [*CLI, *command], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert all(line.startswith("error: ConfigError: ") for line in lines), proc.stderr
    assert [line.split(": ", 2)[2][:30] for line in lines] == [
        "MEDIAMILL_SIGNING_SECRET must ",
        "signing mode cloudfront needs ",
        "the broker does not answer: Co",
    ], proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 30  # the bounded wait, not a hang


def test_an_unmigrated_database_is_named(env: dict[str, str]) -> None:
    with fresh_postgres_database() as url:
        proc = mm({**env, "MEDIAMILL_DATABASE_URL": url}, "serve", "--port", "1")
        assert proc.returncode == 1
        assert "run `mediamill db upgrade`" in proc.stderr, proc.stderr
        assert mm({**env, "MEDIAMILL_DATABASE_URL": url}, "db", "upgrade").returncode == 0
        ok = mm({**env, "MEDIAMILL_DATABASE_URL": url}, "config", "check", "--json")
        assert ok.returncode == 0 and json.loads(ok.stdout)["mode"] == "single node", ok.stdout
