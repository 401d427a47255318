"""api/errors.py: a database error the request's own size causes is a named 400 (a 503
"database is unavailable" would invite a client to retry for ever); a database that
cannot be reached stays a 503 with Retry-After. Real SQLite errors, no stand-ins."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from mediamill.api.errors import install_error_handlers


def app_running(sql: str, url: str) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/q")
    def query() -> dict:
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                return {"rows": conn.execute(text(sql)).scalar()}
        finally:
            engine.dispose()

    return TestClient(app, raise_server_exceptions=False)


def test_an_expression_too_large_for_sqlite_is_the_requests_fault(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    wide = "SELECT 1 WHERE " + " OR ".join(["1 = 1"] * 5000)
    r = app_running(wide, url).get("/q")
    assert (r.status_code, r.json()["name"]) == (400, "InvalidRequestError")
    assert "too large for the database" in r.json()["message"]
    assert "retry-after" not in r.headers
    assert app_running("SELECT 1 WHERE " + " OR ".join(["1 = 1"] * 50), url).get("/q").json() == {
        "rows": 1
    }


def test_a_database_that_cannot_be_opened_is_still_unavailable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing' / 'a.db'}"
    r = app_running("SELECT 1", url).get("/q")
    assert (r.status_code, r.json()["name"]) == (503, "ServiceUnavailableError")
    assert r.headers["retry-after"] == "5"


def test_bounded_message_hides_server_paths_and_cuts_long_runs() -> None:
    from mediamill.api.errors import bounded_message

    root = "/srv/mediamill/store"
    message = f"cannot open {root}/inbox/a.flac (key 'inbox/{'Q' * 5000}') under inbox{root}"
    bounded = bounded_message(message, [root])
    assert root + "/" not in bounded and "<server path>/inbox/a.flac" in bounded
    assert f"inbox{root}" in bounded  # a path inside a word is not a server path
    assert max(len(run) for run in bounded.split()) <= 83  # 80 and the '...'
    assert "Q" * 81 not in bounded
    words = " ".join(["word"] * 400)
    assert len(bounded_message(words)) == 1003 and bounded_message(words).endswith("...")
    assert bounded_message("no job 'abc'") == "no job 'abc'"


def test_echo_and_validation_descriptions_quote_at_most_80_characters() -> None:
    from mediamill.schemas.errors import describe_validation, echo

    assert echo("short") == "'short'"
    assert echo("Q" * 1000) == "'" + "Q" * 79 + "..."
    errors = [{"loc": ("body", "Q" * 5000), "msg": "Extra inputs are not permitted"}] * 12
    told = describe_validation(errors, drop=("body",))
    assert told.count("Extra inputs") == 10 and told.endswith("; and 2 more")
    assert "Q" * 81 not in told
