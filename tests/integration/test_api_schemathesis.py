"""Property-based: schemathesis generates requests from /openapi.json for every
operation and none may answer with a server error (5xx). The API runs for real
(uvicorn on loopback, embedded default with its in-process worker) and every request
carries an admin key, so generated bodies reach the handlers."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from mediamill.api.app import create_app
from mediamill.config.settings import Settings
from mediamill.storage.api_keys import create_api_key

pytestmark = pytest.mark.integration
EXAMPLES = int(os.environ.get("MEDIAMILL_SCHEMATHESIS_EXAMPLES", "20"))


@dataclass
class LiveApi:
    base_url: str
    headers: dict[str, str]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    data_dir: Path = tmp_path_factory.mktemp("schemathesis") / "data"
    app = create_app(Settings(_env_file=None, data_dir=data_dir))
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    with app.state.runtime.db.session() as s:
        key = create_api_key(s, "admin", "schemathesis")
    try:
        yield LiveApi(f"http://127.0.0.1:{port}", {"X-API-Key": key.api_key})
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_no_operation_answers_a_server_error(live_api: LiveApi) -> None:
    """Every operation of the published schema, EXAMPLES generated requests each."""
    schema = schemathesis.openapi.from_url(f"{live_api.base_url}/openapi.json")
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
