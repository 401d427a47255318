"""Content Automation API legacy support through HTTP on the embedded default: legacy
track tokens resolving to assets (GET/HEAD with and without a rendition, mapping
more assets), and legacy assets (create, verify, modify, sign, list with filters)."""

from __future__ import annotations

import json

import pytest
from integration.test_api_assets import (
    assert_error,
    sha256_of,
    store_asset_directly,
    stored_file,
    upload,
    verify_file_url,
    wait_jobs_done,
    wait_until,
)

from mediamill.storage.models import LegacyAssetRow, LegacyTrackTokenRow

pytestmark = pytest.mark.integration


# ---- legacy tracks ---------------------------------------------------------------------------


def test_a_track_token_behaves_like_its_asset(api, samples) -> None:
    path = samples["music.ogg"]
    sha = upload(api, path, wait_s=60, headers={"legacyTrackToken": "370456"}).json()[
        "originalAssetId"
    ]
    wait_jobs_done(api.rt, sha)
    r = api.client.get("/v0/legacy/tracks/370456", headers=api.read, follow_redirects=False)
    assert r.status_code == 302
    key = verify_file_url(api.rt, r.headers["location"])
    assert key == f"originals/{sha}" and sha256_of(stored_file(api.rt, key)) == sha

    head = api.client.head("/v0/legacy/tracks/370456", headers=api.read)
    assert head.status_code == 200 and head.headers["x-original-asset-id"] == sha
    assert head.content == b""

    meta = api.client.get("/v0/legacy/tracks/370456/originalAssets", headers=api.read)
    assert meta.status_code == 200
    body = meta.json()
    assert body["originalAssetId"] == sha and body["legacyTrackTokens"] == ["370456"]
    assert body["lufs"] is not None and body["duration"] > 0

    # A rendition through the token: 409 (HEAD too) until made, then 302 to it.
    query = "?bitrate=64000&channels=1&format=mp3"
    first = api.client.get(f"/v0/legacy/tracks/370456{query}", headers=api.read)
    assert_error(first, 409, "ModelNotReadyError")
    assert int(first.headers["retry-after"]) >= 1

    def redirected():
        r = api.client.get(
            f"/v0/legacy/tracks/370456{query}", headers=api.read, follow_redirects=False
        )
        assert r.status_code in {302, 409}, r.text
        return r if r.status_code == 302 else None

    ready = wait_until(redirected, 120, "the mp3 rendition")
    key = verify_file_url(api.rt, ready.headers["location"])
    assert key.startswith(f"renditions/{sha}/mp3-64000-1ch") and key.endswith(".mp3")
    head = api.client.head(f"/v0/legacy/tracks/370456{query}", headers=api.read)
    assert head.status_code == 200
    r = api.client.get("/v0/legacy/tracks/370456?bitrate=64000&format=mp3", headers=api.read)
    assert_error(r, 400, "InvalidRequestError")
    r = api.client.get(
        "/v0/legacy/tracks/370456?bitrate=320000&channels=2&format=flac&exact=true",
        headers=api.read,
    )
    assert_error(r, 409, "LowQualityError")  # a lossy original

    for route in ("/v0/legacy/tracks/999", "/v0/legacy/tracks/999/originalAssets"):
        body = assert_error(api.client.get(route, headers=api.read), 404, "ModelNotFoundError")
        assert "999" in body["message"]
    assert api.client.head("/v0/legacy/tracks/999", headers=api.read).status_code == 404
    assert api.client.head("/v0/legacy/tracks/370456").status_code == 401


def test_head_of_a_track_not_ready_is_409(api, samples) -> None:
    """Like the GET: 409 while the asset is not analysed, after starting its analysis
    (here no job was on it)."""
    pending = store_asset_directly(api.rt, samples["mono.flac"], analysed=False)
    r = api.client.post("/v0/legacy/tracks/555/originalAssets", json=[pending], headers=api.admin)
    assert r.status_code == 201
    assert api.client.head("/v0/legacy/tracks/555", headers=api.read).status_code == 200
    head = api.client.head(
        "/v0/legacy/tracks/555?bitrate=128000&channels=1&format=mp3", headers=api.read
    )
    assert head.status_code == 409 and int(head.headers["retry-after"]) >= 1
    wait_jobs_done(api.rt, pending)
    meta = api.client.get("/v0/legacy/tracks/555/originalAssets", headers=api.read).json()
    assert meta["status"] == "analysed"


def test_mapping_a_token_to_original_assets(api, samples) -> None:
    first = store_asset_directly(api.rt, samples["mono.flac"], analysed=True)
    second = store_asset_directly(api.rt, samples["short.wav"], analysed=True)
    r = api.client.post(
        "/v0/legacy/tracks/1153552/originalAssets",
        json=[first, second.upper(), first],
        headers=api.admin,
    )
    assert r.status_code == 201
    assert r.json() == [
        {"originalAssetId": first, "legacyTrackToken": "1153552"},
        {"originalAssetId": second, "legacyTrackToken": "1153552"},
    ]
    # The most recently mapped asset is the one the token serves.
    served = api.client.get("/v0/legacy/tracks/1153552/originalAssets", headers=api.read)
    assert served.json()["originalAssetId"] == second
    assert served.json()["legacyTrackTokens"] == ["1153552"]
    again = api.client.post(
        "/v0/legacy/tracks/1153552/originalAssets", json=[second], headers=api.admin
    )
    assert again.status_code == 201
    with api.rt.db.session() as s:
        assert s.query(LegacyTrackTokenRow).filter_by(token="1153552").count() == 2

    unknown = "c" * 64
    r = api.client.post(
        "/v0/legacy/tracks/42/originalAssets", json=[first, unknown], headers=api.admin
    )
    assert unknown in assert_error(r, 404, "ModelNotFoundError")["message"]
    with api.rt.db.session() as s:  # all or nothing
        assert s.query(LegacyTrackTokenRow).filter_by(token="42").count() == 0
    for body in ([], None):
        r = api.client.post(
            "/v0/legacy/tracks/42/originalAssets",
            content=json.dumps(body),
            headers={**api.admin, "content-type": "application/json"},
        )
        assert_error(r, 409, "ArgumentNullOrEmptyError")
    for body in (["nope"], {"ids": [first]}, [1, 2]):
        r = api.client.post("/v0/legacy/tracks/42/originalAssets", json=body, headers=api.admin)
        assert_error(r, 400, "InvalidRequestError")
    r = api.client.post("/v0/legacy/tracks/42/originalAssets", json=[first], headers=api.read)
    assert_error(r, 403, "PermissionDeniedError")


# ---- legacy assets ---------------------------------------------------------------------------


def test_legacy_asset_create_verify_modify_and_sign(api, samples) -> None:
    r = api.client.post(
        "/v0/legacy/assets", json={"originalFileName": "1032920.wav"}, headers=api.admin
    )
    body = assert_error(r, 409, "ArgumentNullOrEmptyError")
    assert body["message"] == "legacyTrackToken cannot be null or empty"
    for token in ("", "  ", None):
        r = api.client.post(
            "/v0/legacy/assets", json={"legacyTrackToken": token}, headers=api.admin
        )
        assert_error(r, 409, "ArgumentNullOrEmptyError")
    r = api.client.post(
        "/v0/legacy/assets",
        json={"legacyTrackToken": "1032920", "originalFileName": "1032920.wav"},
        headers=api.admin,
    )
    assert r.status_code == 201
    assert r.json() == {
        "legacyTrackToken": "1032920",
        "legacyAssetId": None,
        "originalFileName": "1032920.wav",
    }
    numeric = api.client.post(
        "/v0/legacy/assets", json={"legacyTrackToken": 1032921}, headers=api.admin
    )
    assert numeric.status_code == 201 and numeric.json()["legacyTrackToken"] == "1032921"
    dup = api.client.post(
        "/v0/legacy/assets", json={"legacyTrackToken": "1032920"}, headers=api.admin
    )
    assert_error(dup, 409, "ConflictError")
    bad = api.client.post(
        "/v0/legacy/assets",
        json={"legacyTrackToken": "7", "legacyAssetId": "xyz"},
        headers=api.admin,
    )
    assert "legacyAssetId" in assert_error(bad, 400, "InvalidRequestError")["message"]
    read_only = api.client.post(
        "/v0/legacy/assets", json={"legacyTrackToken": "8"}, headers=api.read
    )
    assert_error(read_only, 403, "PermissionDeniedError")

    head = api.client.head("/v0/legacy/assets/trackToken:1032920", headers=api.read)
    assert head.status_code == 200 and "x-legacy-asset-id" not in head.headers
    assert api.client.head("/v0/legacy/assets/trackToken:404", headers=api.read).status_code == 404
    r = api.client.get("/v0/legacy/assets/trackToken:1032920", headers=api.read)
    assert "not set" in assert_error(r, 409, "ModelInvalidError")["message"]

    path = samples["speech.wav"]
    legacy_id = sha256_of(path)
    r = api.client.put(
        "/v0/legacy/assets/trackToken:1032920",
        json={"legacyAssetId": legacy_id.upper(), "originalFileName": "1032920.ogg"},
        headers=api.admin,
    )
    assert r.status_code == 202
    assert r.json() == {
        "legacyTrackToken": "1032920",
        "legacyAssetId": legacy_id,
        "originalFileName": "1032920.ogg",
    }
    head = api.client.head("/v0/legacy/assets/trackToken:1032920", headers=api.read)
    assert head.status_code == 200 and head.headers["x-legacy-asset-id"] == legacy_id
    # Known id, bytes not uploaded yet: no URL can be signed.
    r = api.client.get("/v0/legacy/assets/trackToken:1032920", headers=api.read)
    assert legacy_id in assert_error(r, 409, "ModelInvalidError")["message"]
    assert upload(api, path).status_code == 201
    r = api.client.get(
        "/v0/legacy/assets/trackToken:1032920", headers=api.read, follow_redirects=False
    )
    assert r.status_code == 302
    key = verify_file_url(api.rt, r.headers["location"])
    assert key == f"originals/{legacy_id}"
    assert sha256_of(stored_file(api.rt, key)) == legacy_id

    # A PUT changes only what it names; null clears.
    r = api.client.put(
        "/v0/legacy/assets/trackToken:1032920",
        json={"originalFileName": None},
        headers=api.admin,
    )
    assert r.json() == {
        "legacyTrackToken": "1032920",
        "legacyAssetId": legacy_id,
        "originalFileName": None,
    }
    with api.rt.db.session() as s:
        row = s.get(LegacyAssetRow, "1032920")
        assert row.original_filename is None and row.legacy_asset_id == legacy_id
    same_token = api.client.put(
        "/v0/legacy/assets/trackToken:1032920",
        json={"legacyTrackToken": "1032920"},
        headers=api.admin,
    )
    assert same_token.status_code == 202
    for key_text, body, status, name in (
        ("trackToken:1032920", {"legacyTrackToken": "other"}, 400, "InvalidRequestError"),
        ("trackToken:1032920", {"legacyTrackToken": ""}, 409, "ArgumentNullOrEmptyError"),
        ("trackToken:1032920", {"legacyAssetId": "abc"}, 400, "InvalidRequestError"),
        ("trackToken:1032920", ["not", "an", "object"], 400, "InvalidRequestError"),
        ("trackToken:", {"originalFileName": "x"}, 409, "ArgumentNullOrEmptyError"),
        ("legacyAssetId:abc", {"originalFileName": "x"}, 400, "InvalidRequestError"),
        ("trackToken:404", {"originalFileName": "x"}, 404, "ModelNotFoundError"),
    ):
        r = api.client.put(f"/v0/legacy/assets/{key_text}", json=body, headers=api.admin)
        assert_error(r, status, name)
    body = assert_error(
        api.client.get("/v0/legacy/assets/trackToken:404", headers=api.read),
        404,
        "ModelNotFoundError",
    )
    assert body["message"] == "legacy asset 404 was not found"
    assert_error(
        api.client.get("/v0/legacy/assets/id:1", headers=api.read), 400, "InvalidRequestError"
    )
    assert_error(
        api.client.put("/v0/legacy/assets/trackToken:1032920", json={}, headers=api.read),
        403,
        "PermissionDeniedError",
    )


def _create(api, token: str, name: str | None, asset_id: str | None = None) -> None:
    r = api.client.post(
        "/v0/legacy/assets",
        json={"legacyTrackToken": token, "originalFileName": name, "legacyAssetId": asset_id},
        headers=api.admin,
    )
    assert r.status_code == 201, r.text


def _tokens(api, query: str = "", **params) -> tuple[list[str], dict]:
    r = api.client.get(f"/v0/legacy/assets{query}", params=params or None, headers=api.read)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"options", "results", "total"}
    return [x["legacyTrackToken"] for x in body["results"]], body


def test_legacy_assets_list_pages_filters_and_sorts(api) -> None:
    names = {
        "1032900": "1032900.wav",
        "1032901": "Intro_Take.WAV",
        "1032902": "1032902.wav",
        "1032903": "outro.flac",
        "1032904": "1032904.wav",
        "2000000": None,
        "2000001": "100%_mix.wav",
    }
    for token, name in names.items():
        _create(api, token, name, ("ab" * 32) if token == "1032903" else None)

    tokens, body = _tokens(api)
    assert tokens == list(names) and body["total"] == 7
    assert body["options"] == {"count": 100, "filters": {}, "sort": {}, "start": 0}
    assert body["results"][3] == {
        "legacyTrackToken": "1032903",
        "originalFileName": "outro.flac",
        "legacyAssetId": "ab" * 32,
    }
    assert _tokens(api, "?filters=&count=&start=")[0] == list(names)
    tokens, body = _tokens(api, count="3", start="2")
    assert tokens == ["1032902", "1032903", "1032904"] and body["total"] == 7
    assert body["options"]["count"] == 3 and body["options"]["start"] == 2
    assert _tokens(api, count="3", start="6")[0] == ["2000001"]
    assert _tokens(api, count="3", start="60")[0] == []
    assert _tokens(api, count="500")[1]["options"]["count"] == 100
    assert _tokens(api, count="0")[0] == [] and _tokens(api, count="0")[1]["total"] == 7

    def filtered(filters: dict) -> list[str]:
        tokens, body = _tokens(api, filters=json.dumps(filters))
        assert body["options"]["filters"] == filters and body["total"] == len(tokens)
        return tokens

    assert filtered({"mandatory": {"exact": {"legacyTrackToken": "1032902"}}}) == ["1032902"]
    assert filtered({"mandatory": {"contains": {"originalFileName": "take"}}}) == ["1032901"]
    assert filtered({"mandatory": {"endsWith": {"originalFileName": ".wav"}}}) == [
        "1032900",
        "1032901",
        "1032902",
        "1032904",
        "2000001",
    ]
    assert filtered(
        {
            "mandatory": {"startsWith": {"legacyTrackToken": "1032"}},
            "optional": {"exact": {"originalFileName": ["OUTRO.flac", "1032904.wav"]}},
        }
    ) == ["1032903", "1032904"]
    assert filtered({"mandatory": {"contains": {"originalFileName": "%"}}}) == ["2000001"]
    assert filtered({"mandatory": {"contains": {"originalFileName": "_"}}}) == [
        "1032901",
        "2000001",
    ]
    assert filtered({"mandatory": {"exact": {"legacyAssetId": "AB" * 32}}}) == ["1032903"]
    assert filtered({"keyword": {"term": "intro outro"}}) == ["1032901", "1032903"]
    assert filtered({"keyword": {"fields": ["legacyTrackToken"], "term": '"2000 001" 20000'}}) == [
        "2000000",
        "2000001",
    ]
    # Express clients send filters as bracketed query parameters.
    tokens, body = _tokens(
        api,
        "?filters[mandatory][startsWith][legacyTrackToken]=2000"
        "&filters[optional][exact][originalFileName][]=100%25_mix.wav",
    )
    assert tokens == ["2000001"]
    assert body["options"]["filters"] == {
        "mandatory": {"startsWith": {"legacyTrackToken": "2000"}},
        "optional": {"exact": {"originalFileName": ["100%_mix.wav"]}},
    }
    tokens, body = _tokens(api, sort="-legacyTrackToken", count="2")
    assert tokens == ["2000001", "2000000"]
    assert body["options"]["sort"] == {"legacyTrackToken": -1}
    # Byte order, and SQLite puts NULL first.
    assert _tokens(api, sort="originalFileName,-legacyTrackToken")[0] == [
        "2000000",
        "2000001",
        "1032900",
        "1032902",
        "1032904",
        "1032901",
        "1032903",
    ]

    for params in (
        {"filters": "{not json"},
        {"filters": "[1]"},
        {"filters": json.dumps({"mandatory": {"greaterThan": {"legacyTrackToken": "1"}}})},
        {"filters": json.dumps({"mandatory": {"exact": {"title": "x"}}})},
        {"filters": json.dumps({"field": ["legacyTrackToken"]})},
        {"filters": json.dumps({"keyword": {"fields": ["legacyTrackToken"]}})},
        {"count": "-1"},
        {"count": "ten"},
        {"start": "-5"},
        {"sort": "title"},
    ):
        r = api.client.get("/v0/legacy/assets", params=params, headers=api.read)
        assert_error(r, 400, "InvalidRequestError")


def test_legacy_assets_list_bounds_start_and_caps_count(api) -> None:
    """`start` past what the database's integers hold is a 400, not an overflow in the
    query (a 500); any `count` past 100 is capped, however many digits it has."""
    _create(api, "3000000", "a.wav", None)
    for start in ("100000000000000000000", "9223372036854775808", "9" * 5000):
        r = api.client.get("/v0/legacy/assets", params={"start": start}, headers=api.read)
        assert "start must be at most" in assert_error(r, 400, "InvalidRequestError")["message"]
    tokens, body = _tokens(api, start="2147483647")
    assert tokens == [] and body["total"] == 1 and body["options"]["start"] == 2147483647
    tokens, body = _tokens(api, start="000", count="9" * 5000)
    assert tokens == ["3000000"] and body["options"] == {
        "count": 100,
        "filters": {},
        "sort": {},
        "start": 0,
    }
    assert_error(api.client.get("/v0/legacy/assets"), 401, "AuthenticationError")


@pytest.mark.security
def test_hostile_filters_are_named_400s_never_5xx(api) -> None:
    """Issue 15: 3,000 nested brackets in `?filters=` were a 500 (RecursionError), and
    5,000 `contains` values a 503 "database is unavailable" (SQLite's expression tree
    limit), which invites retries for ever. Both are bounded with a named 400, and an
    error quotes at most a short piece of what was sent."""
    _create(api, "4000000", "a.wav", None)
    deep_list = "[" * 3000 + "]" * 3000
    deep_object = '{"mandatory": ' * 3000 + "{}" + "}" * 3000
    many = {"mandatory": {"contains": {"originalFileName": [f"v{i}" for i in range(2000)]}}}
    keyword = {"keyword": {"term": " ".join(f"t{i}" for i in range(200))}}
    cases = [
        ({"filters": deep_list}, "nests deeper than 6 levels"),
        ({"filters": deep_object[:16000]}, "nests deeper than 6 levels"),
        ({"filters": json.dumps(many)}, "longer than 16384 characters"),
        (
            {"filters": json.dumps({"mandatory": {"contains": {"originalFileName": ["x"] * 101}}})},
            "compare 101 values",
        ),
        ({"filters": json.dumps(keyword)}, "at most 100"),
        ({"filters[" + "][".join(["a"] * 3000) + "]": "x"}, "nest deeper than 6 levels"),
        ({"filters[mandatory][" + "é" * 1000 + "": "x"}, "malformed filter parameter"),
    ]
    for params, named in cases:
        r = api.client.get("/v0/legacy/assets", params=params, headers=api.read)
        message = assert_error(r, 400, "InvalidRequestError")["message"]
        assert named in message and len(message) < 300, message
    within = {"mandatory": {"contains": {"originalFileName": [f"v{i}" for i in range(99)] + ["a"]}}}
    tokens, _ = _tokens(api, filters=json.dumps(within))
    assert tokens == ["4000000"]
