"""Tracking session tokens (pipeline/tracking_token.py): base64 of a JSON object that
anyone may read, that nobody without the secret can forge or edit, and that expires."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from mediamill.pipeline.tracking_token import make_token, read_token
from mediamill.schemas.errors import TrackingSessionExpiredError, TrackingSessionInvalidError
from mediamill.schemas.playback import TrackingSession

SECRET = "a-secret-of-32-characters-or-so!"
NOW_S = 1_800_000_000


def _session(user_id: str | None = None) -> TrackingSession:
    return TrackingSession(
        session_id="550e8400-e29b-41d4-a716-446655440000",
        start_time=datetime.fromtimestamp(NOW_S, UTC),
        source="mediamill.api.playout.test",
        playout_id="site-1",
        user_id=user_id,
    )


def _decoded(token: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


def test_a_token_is_readable_base64_json_and_reads_back() -> None:
    token = make_token(_session(), NOW_S + 60, SECRET)
    fields = _decoded(token)
    assert fields["sessionId"] == "550e8400-e29b-41d4-a716-446655440000"
    assert fields["source"] == "mediamill.api.playout.test"
    assert fields["startTime"].startswith("2027-01-15T")
    assert "userId" not in fields  # nothing personal unless sent
    claims = read_token(token, SECRET, now_s=NOW_S + 59)
    assert claims.session == _session() and claims.expires_at_s == NOW_S + 60


def test_an_edited_token_is_refused() -> None:
    fields = _decoded(make_token(_session("user-1"), NOW_S + 60, SECRET))
    for field, value in [("userId", "user-2"), ("expiresAt", NOW_S + 10**6), ("sessionId", "x")]:
        edited = {**fields, field: value}
        token = base64.urlsafe_b64encode(json.dumps(edited).encode()).decode()
        with pytest.raises(TrackingSessionInvalidError, match="forged or edited"):
            read_token(token, SECRET, now_s=NOW_S)


def test_a_token_signed_with_another_secret_is_refused() -> None:
    token = make_token(_session(), NOW_S + 60, "another-secret-entirely-0123456")
    with pytest.raises(TrackingSessionInvalidError):
        read_token(token, SECRET, now_s=NOW_S)


def test_an_expired_token_is_its_own_error() -> None:
    token = make_token(_session(), NOW_S + 60, SECRET)
    with pytest.raises(TrackingSessionExpiredError, match="expired"):
        read_token(token, SECRET, now_s=NOW_S + 61)


@pytest.mark.parametrize(
    "token",
    ["", "not base64 at all!", "bm90IGpzb24", base64.b64encode(b"[1,2]").decode(), "é", "A" * 5000],
)
def test_what_is_not_a_token_is_refused_by_name(token: str) -> None:
    with pytest.raises(TrackingSessionInvalidError):
        read_token(token, SECRET, now_s=NOW_S)
