"""Issue 15 item 6: names that cannot be addressed are refused at the door, and no
error body echoes more than 200 characters of input or an absolute server path.

The class test walks every operation of the OpenAPI schema and sends tens of KB in each
path parameter, query parameter, header and JSON body at once, with an admin key:
every answer is below 500, short, and quotes at most 80 characters of what was sent
(the issue's bound is 200)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from api_support import Api

pytestmark = pytest.mark.integration

HUGE = "Q" * 60_000
# httpx refuses a URL over 64 KiB: a path parameter gets 30,000 characters, each query
# parameter 4,000 (headers and bodies get 60,000).
IN_PATH = "Q" * 30_000
LONG = "Q" * 4_000
MAX_ECHO_CHARS = 80  # the issue asks for at most 200


def _operations(api: Api) -> list[tuple[str, str, dict[str, Any]]]:
    schema = api.client.app.openapi()  # type: ignore[attr-defined]
    return [
        (method.upper(), path, op)
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
    ]


def _longest_echo(text: str) -> int:
    return max((len(m) for m in re.findall(r"Q+", text)), default=0)


def _assert_bounded(api: Api, label: str, status: int, text: str) -> None:
    assert status < 500, (label, status, text[:300])
    assert _longest_echo(text) <= MAX_ECHO_CHARS, (label, status, text[:300])
    if status >= 400:
        assert len(text) < 4096, (label, status, len(text))
    data_dir = str(api.rt.settings.resolved_data_dir)
    assert data_dir not in text, (label, text[:300])


def test_every_route_bounds_what_it_echoes(api: Api) -> None:
    operations = _operations(api)
    assert len(operations) >= 30
    for method, path, op in operations:
        url = path
        params: dict[str, str] = {}
        headers = dict(api.admin)
        in_path = [p for p in op.get("parameters", []) if p["in"] == "path"]
        for p in op.get("parameters", []):
            if p["in"] == "path":  # the URL's budget shared by the path's parameters
                url = url.replace("{" + p["name"] + "}", IN_PATH[: len(IN_PATH) // len(in_path)])
            elif p["in"] == "query":
                params[p["name"]] = LONG
            elif p["in"] == "header":
                headers[p["name"]] = HUGE
        bodies: list[Any] = [None]
        if "requestBody" in op:
            bodies = [{HUGE: HUGE}, {"source": {"key": HUGE}}, {"url": f"https://{HUGE}"}]
        for body in bodies:
            r = api.client.request(method, url, params=params, headers=headers, json=body)
            _assert_bounded(api, f"{method} {path} {str(body)[:40]}", r.status_code, r.text)


@pytest.mark.parametrize(
    "body",
    [
        {"source": {"key": f"inbox/{'Q' * 900}.flac"}},  # a valid key, 1 KB long
        {"source": {"url": f"https://example.com/{'Q' * 3000}"}},
        {"source": {"key": "inbox/a.flac"}, "filename": "Q" * 5000},
        {"source": {"key": "originals/" + "Q" * 900}},
        {"source": {"key": "inbox/a.flac"}, "renditions": [{"format": "Q" * 5000}]},
    ],
)
def test_job_bodies_echo_at_most_80_characters(api: Api, body: dict[str, Any]) -> None:
    r = api.client.post("/v0/jobs", json=body, headers=api.admin)
    assert 400 <= r.status_code < 500, r.text[:300]
    _assert_bounded(api, str(body)[:60], r.status_code, r.text)


@pytest.mark.parametrize("token", ["a/b", "/lead", "trail/", "..", ".", "a\\b"])
def test_a_legacy_track_token_that_no_route_can_address_is_refused(api: Api, token: str) -> None:
    """`/` would make `/v0/legacy/tracks/{token}` unreachable: refused when created."""
    r = api.client.post(
        "/v0/legacy/assets",
        json={"legacyTrackToken": token, "originalAssetId": "a" * 64},
        headers=api.admin,
    )
    assert r.status_code == 400, r.text
    assert r.json()["name"] == "InvalidRequestError"
    assert "legacyTrackToken" in r.json()["message"]
    upload = api.client.post(
        "/v0/assets", content=b"RIFF", headers={**api.admin, "legacyTrackToken": token}
    )
    assert upload.status_code == 400, upload.text


@pytest.mark.parametrize("port", ["0", "00", "65536", "99999"])
def test_a_webhook_url_with_port_zero_or_out_of_range_is_refused(api: Api, port: str) -> None:
    r = api.client.post(
        "/v0/webhooks",
        json={"url": f"https://hooks.example.com:{port}/in", "events": ["asset.ready"]},
        headers=api.admin,
    )
    assert r.status_code == 400, r.text
    assert "port" in r.json()["message"]


def test_a_60_kb_id_is_a_short_named_400(api: Api) -> None:
    for url in (f"/v0/jobs/{HUGE}", f"/v0/uploads/{HUGE}", f"/v0/webhooks/{HUGE}"):
        r = api.client.get(url, headers=api.read)
        assert r.status_code == 400, (url[:20], r.status_code, r.text[:200])
        assert r.json()["name"] == "InvalidRequestError" and len(r.text) < 400


def test_store_errors_name_no_server_path(api: Api, tmp_path: Path) -> None:
    """A key that conflicts with a stored one, and a missing key: the answers quote the
    key, never where the store keeps it."""
    root = str(getattr(api.rt.store, "root", ""))
    for key in ("inbox/missing.flac", "inbox/x.flac/below"):
        r = api.client.post("/v0/jobs", json={"source": {"key": key}}, headers=api.admin)
        assert 400 <= r.status_code < 500 and root not in r.text, r.text
