"""Property-based: schemathesis generates requests from /openapi.json for every
operation and none may answer with a server error (5xx). The API runs for real
(uvicorn on loopback) on the embedded default and on PostgreSQL + Redis + S3 with a
worker process, and every request carries an admin key, so generated bodies reach
the handlers."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from support import serving

from mediamill.api.app import create_app
from mediamill.config.settings import Settings
from mediamill.storage.api_keys import create_api_key

pytestmark = pytest.mark.integration
EXAMPLES = int(os.environ.get("MEDIAMILL_SCHEMATHESIS_EXAMPLES", "20"))


@dataclass
class LiveApi:
    base_url: str
    headers: dict[str, str]
    runtime: object


@contextlib.contextmanager
def _serve(settings: Settings) -> Iterator[LiveApi]:
    """The app on uvicorn in a thread, on a free loopback port, with an admin key."""
    app = create_app(settings)
    with serving(app) as base_url:
        with app.state.runtime.db.session() as s:
            key = create_api_key(s, "admin", "schemathesis")
        yield LiveApi(base_url, {"X-API-Key": key.api_key}, app.state.runtime)


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def live_api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """embedded: SQLite, local store, in-process worker. distributed: PostgreSQL, Redis,
    the S3 endpoint (moto) and a real `mediamill worker` process."""
    data_dir: Path = tmp_path_factory.mktemp("schemathesis") / "data"
    if request.param == "embedded":
        with _serve(Settings(_env_file=None, data_dir=data_dir)) as live:
            yield live
        return
    import redis
    from integration.conftest import distributed_env, settings_from_env

    redis_url = request.getfixturevalue("redis_url")
    moto = request.getfixturevalue("moto_server")
    broker_url = redis_url.rsplit("/", 1)[0] + "/12"  # a Redis database of its own
    redis.Redis.from_url(broker_url).flushdb()
    with distributed_env(
        moto,
        broker_url,
        data_dir,
        "mm-schemathesis",
        MEDIAMILL_BUCKET_EVENTS_TOKEN="schemathesis-bucket-token-0123",
    ) as env:
        cli = [sys.executable, "-m", "mediamill"]
        subprocess.run([*cli, "db", "upgrade"], env=env, check=True, timeout=120)
        worker = subprocess.Popen(
            [*cli, "worker", "--threads", "2"], env=env, stderr=subprocess.DEVNULL
        )
        settings = settings_from_env(env)
        try:
            with _serve(settings) as live:
                yield live
                assert worker.poll() is None, "the worker process died during the run"
        finally:
            worker.terminate()
            worker.wait(timeout=60)


def test_no_operation_answers_a_server_error(live_api: LiveApi) -> None:
    """Every operation of the published schema, EXAMPLES generated requests each."""
    # The schema is behind a key like every route but /health and /ready.
    schema = schemathesis.openapi.from_url(
        f"{live_api.base_url}/openapi.json", headers=live_api.headers
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 3
    failures = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            case.call_and_validate(
                base_url=live_api.base_url, headers=live_api.headers, checks=[not_a_server_error]
            )

        try:
            check()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_playback_bodies_on_a_live_session_never_answer_a_server_error(live_api: LiveApi) -> None:
    """Generated heartbeats, event batches and beacons sent to a live playback session
    (random ids only reach the 404): every answer is a 2xx or a named 4xx."""
    import httpx
    from playback_support import packaged_asset

    asset_id = packaged_asset(live_api.runtime)
    created = httpx.post(
        f"{live_api.base_url}/v0/assets/{asset_id}/playback-sessions",
        headers={**live_api.headers, "X-Device-Id": "schemathesis"},
        trust_env=False,
    )
    assert created.status_code == 201, created.text
    session_id = created.json()["sessionId"]
    schema = schemathesis.openapi.from_url(
        f"{live_api.base_url}/openapi.json", headers=live_api.headers
    )
    failures = []
    for path in ("heartbeat", "events", "beacon"):
        operation = schema[f"/v0/playback-sessions/{{sessionId}}/{path}"]["POST"]

        def on_live_session(case, path=path):
            case.path_parameters = {"sessionId": session_id}
            if path == "beacon":  # sendBeacon carries the key in the URL
                case.query = {"apiKey": live_api.headers["X-API-Key"]}
            return case

        @given(case=operation.as_strategy().map(on_live_session))
        @settings(max_examples=EXAMPLES * 3, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            response = case.call(base_url=live_api.base_url, headers=live_api.headers)
            assert response.status_code < 500, (response.status_code, response.text)
            if response.status_code >= 400:
                body = response.json()
                assert body["name"].endswith("Error") and body["statusCode"] == response.status_code

        try:
            check()
        except Exception as exc:
            failures.append(f"POST {path}: {exc}")
    assert not failures, "\n\n".join(failures)
