"""The classes the attack on a running service tried and found closed (issue 15 item 9),
kept as tests so a regression fails CI: every route's key check, traversal in keys,
SSRF forms in URL sources and webhook URLs, and abuse of bodies and headers. (Edge
token cross-use: test_token_domains.py; the items' own reproductions: the other files
here, and the tests marked `security` elsewhere.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from api_support import Api

pytestmark = pytest.mark.integration

# Routes open to anyone (liveness, readiness, metrics, version) or to MinIO's bearer
# token rather than an API key.
OPEN = {("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics"), ("GET", "/v0/version")}
BEARER_ONLY = {("POST", "/v0/events/storage")}


def _operations(api: Api) -> list[tuple[str, str]]:
    schema = api.client.app.openapi()  # type: ignore[attr-defined]
    return [(m.upper(), path) for path, ops in schema["paths"].items() for m in ops]


def _concrete(path: str) -> str:
    """A path with each parameter filled by a plausible id."""
    return re.sub(r"\{[^}]+\}", "a" * 64, path)


# ---- auth ----------------------------------------------------------------------------------


def test_every_keyed_route_refuses_no_key_a_wrong_key_and_a_read_key_where_it_writes(
    api: Api,
) -> None:
    wrong = {"X-API-Key": "mm_not_a_real_key_0123456789"}
    checked = 0
    for method, path in _operations(api):
        if (method, path) in OPEN:
            continue
        url = _concrete(path)
        body = {} if method in {"POST", "PUT", "PATCH"} else None
        for headers in ({}, wrong):
            r = api.client.request(method, url, headers=headers, json=body)
            expected = 401
            assert r.status_code == expected, (method, path, r.status_code, r.text[:200])
        if (method, path) in BEARER_ONLY:
            r = api.client.request(method, url, headers=api.admin, json=body)
            assert r.status_code == 401, (method, path)  # an API key is not MinIO's token
        elif method not in {"GET", "HEAD"}:
            r = api.client.request(method, url, headers=api.read, json=body)
            assert r.status_code == 403, (method, path, r.status_code, r.text[:200])
            body = r.json()  # IBM's error shape under /analytics/v1/, ours elsewhere
            name = body["errors"][0]["title"] if "errors" in body else body["name"]
            assert name == "PermissionDeniedError"
        checked += 1
    assert checked >= 30


# ---- traversal -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "inbox/../../etc/passwd",
        "/etc/passwd",
        "inbox/..",
        "inbox/./a.flac",
        "inbox\\..\\a.flac",
        "%2e%2e/etc/passwd",
        "inbox/%2e%2e/a",
        "inbox//a.flac",
        ".tmp/x",
        "inbox/.hidden",
        "inbox/a\x00.flac",
        "~/a.flac",
    ],
)
def test_traversal_in_a_source_key_is_a_400(api: Api, key: str) -> None:
    r = api.client.post("/v0/jobs", json={"source": {"key": key}}, headers=api.admin)
    assert r.status_code == 400, (key, r.status_code, r.text)
    assert r.json()["name"] == "InvalidRequestError"


# ---- SSRF ----------------------------------------------------------------------------------

SSRF_URLS = [
    "http://127.0.0.1/a.flac",
    "http://127.1/a.flac",
    "http://0177.0.0.1/a.flac",
    "http://0x7f.0.0.1/a.flac",
    "http://0x7f000001/a.flac",
    "http://2130706433/a.flac",
    "http://017700000001/a.flac",
    "http://localhost/a.flac",
    "http://LOCALHOST./a.flac",
    "http://0.0.0.0/a.flac",
    "http://0/a.flac",
    "http://[::1]/a.flac",
    "http://[::]/a.flac",
    "http://[::ffff:127.0.0.1]/a.flac",
    "http://[::ffff:7f00:1]/a.flac",
    "http://[0:0:0:0:0:ffff:169.254.169.254]/latest",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[2002:a9fe:a9fe::1]/latest",
    "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/a.flac",
    "http://[fe80::1]/a.flac",
    "http://[fc00::1]/a.flac",
    "http://10.0.0.1/a.flac",
    "http://10.255.255.255/a.flac",
    "http://172.16.0.1/a.flac",
    "http://172.31.255.255/a.flac",
    "http://192.168.0.1/a.flac",
    "http://100.64.0.1/a.flac",
    "http://198.18.0.1/a.flac",
    "http://224.0.0.1/a.flac",
    "http://255.255.255.255/a.flac",
    "http://240.0.0.1/a.flac",
    "http://user:pass@93.184.215.14/a.flac",
    "http://93.184.215.14@127.0.0.1/a.flac",
    "http://93.184.215.14:0/a.flac",
    "http://93.184.215.14:99999/a.flac",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "ftp://93.184.215.14/a.flac",
    "dict://127.0.0.1:11211/stat",
    "data:audio/flac;base64,AAAA",
    "//127.0.0.1/a.flac",
    "http:///a.flac",
    "http://93.184.215.14/a b.flac",
    "http://a..example.com/a.flac",
    f"http://{'a' * 64}.example.com/a.flac",
    "http://93.184.215.14/a\r\nHost: evil/",
]


@pytest.mark.parametrize("url", SSRF_URLS)
def test_an_ssrf_form_is_refused_as_a_source(api: Api, url: str) -> None:
    r = api.client.post("/v0/jobs", json={"source": {"url": url}}, headers=api.admin)
    assert r.status_code == 400, (url, r.status_code, r.text)


@pytest.mark.parametrize("url", [u.replace("http://", "https://", 1) for u in SSRF_URLS])
def test_an_ssrf_form_is_refused_as_a_webhook(api: Api, url: str) -> None:
    body = {"url": url, "events": ["asset.ready"]}
    r = api.client.post("/v0/webhooks", json=body, headers=api.admin)
    assert r.status_code == 400, (url, r.status_code, r.text)


# ---- bodies and headers --------------------------------------------------------------------


def test_hostile_json_bodies_are_4xx_never_5xx(api: Api) -> None:
    headers = {**api.admin, "Content-Type": "application/json"}
    bodies = [
        b"[" * 100_000 + b"]" * 100_000,  # past Python's recursion limit
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b'{"source": {"key": "inbox/a.flac"}, "sizeBytes": ' + b"9" * 5000 + b"}",
        b'{"source": {"key": "inbox/a.flac"}, "exact": 1e999999}',
        b'{"source": {"key": "inbox/a.flac"}, "filename": "\\ud800"}',
        b"\xff\xfe{\x00}\x00",
        b"not json at all",
        b"",
        b"null",
        b'"a string"',
        json.dumps({"source": {"key": "inbox/a.flac"}, "renditions": [{}] * 10_000}).encode(),
    ]
    for path in ("/v0/jobs", "/v0/uploads", "/v0/webhooks", "/v0/legacy/assets"):
        for body in bodies:
            r = api.client.post(path, content=body, headers=headers)
            assert 400 <= r.status_code < 500, (path, body[:40], r.status_code, r.text[:200])


def test_hostile_headers_are_4xx_never_5xx(api: Api, tmp_path: Path) -> None:
    cases = [
        {"assetLength": "9" * 5000},
        {"assetLength": "-1"},
        {"assetType": "audio/" + "x" * 5000},
        {"legacyTrackToken": "\x7f" * 10},
        {"Content-Type": "multipart/form-data; boundary=" + "x" * 5000},
        {"Idempotency-Key": "k" * 5000},
    ]
    for extra in cases:
        r = api.client.post("/v0/assets", content=b"x" * 100, headers={**api.admin, **extra})
        assert 400 <= r.status_code < 500, (extra, r.status_code, r.text[:200])


def test_a_refused_key_is_told_what_was_wrong_with_it(api: Api) -> None:
    """Missing, malformed, unknown and revoked keys each get their own 401 message
    (issue 16 item 7); only the holder of a revoked key's token learns it was revoked."""
    from mediamill.storage.api_keys import create_api_key, revoke_api_key

    with api.rt.db.session() as s:
        key = create_api_key(s, "read", "to revoke")
    with api.rt.db.session() as s:
        assert revoke_api_key(s, key.client_id)
    cases = [
        ({}, "an API key is required"),
        ({"X-API-Key": "no-dot-in-it"}, "malformed API key: X-API-Key is"),
        ({"x-client-id": key.client_id}, "malformed API key: x-client-id and"),
        ({"X-API-Key": "mm_nobody.not-a-token"}, "unknown API key"),
        ({"X-API-Key": f"{key.client_id}.wrong-token"}, "unknown API key"),
        ({"X-API-Key": key.api_key}, "this API key was revoked at"),
    ]
    for headers, told in cases:
        r = api.client.get("/v0/jobs", headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["name"] == "AuthenticationError"
        assert r.json()["message"].startswith(told), (headers, r.json()["message"])
    assert api.client.get("/v0/jobs", headers=api.read).status_code == 200
