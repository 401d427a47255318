"""api/errors.py on PostgreSQL: an error of SQLSTATE class 54 (program limit exceeded),
which psycopg raises as an OperationalError like an outage, is the request's fault."""

from __future__ import annotations

import pytest
from unit.api.test_errors import app_running

pytestmark = pytest.mark.integration


def test_a_postgresql_program_limit_is_a_400(postgres_url: str) -> None:
    r = app_running("SELECT length(repeat('x', 2000000000))", postgres_url).get("/q")
    assert (r.status_code, r.json()["name"]) == (400, "InvalidRequestError")
    assert app_running("SELECT length(repeat('x', 20))", postgres_url).get("/q").json() == {
        "rows": 20
    }
