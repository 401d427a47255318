"""Reading the edge's JSON access log (pipeline/edge_logs.py): which lines are segment
requests of a session, which span of the asset each covers, and which rendition."""

from __future__ import annotations

import json

import pytest

from mediamill.pipeline.edge_logs import rendition_name, segment_request, segment_span_s
from mediamill.schemas.errors import UnreadableLogLineError

ASSET = "a" * 64
SESSION = "1ffd059c-17ea-40a8-8aef-70fd0307db82"


def line(**fields) -> str:
    entry = {
        "time": "2026-12-04T01:00:00+00:00",
        "msec": 1796346000.123,
        "session": SESSION,
        "key": f"packages/{ASSET}/pkg-1/seg-1-00003.m4s",
        "status": 200,
        "bytes": 12345,
        "requestTime": 0.002,
        "method": "GET",
        "userAgent": "Mozilla/5.0",
        "client": "203.0.113.9",
        **fields,
    }
    return json.dumps(entry)


def test_a_segment_request_of_a_session() -> None:
    request = segment_request(line())
    assert request is not None
    assert (request.session_id, request.asset_id, request.package_id) == (SESSION, ASSET, "pkg-1")
    assert (request.representation, request.segment_number, request.bytes) == (1, 3, 12345)
    assert request.requested_at.timestamp() == pytest.approx(1796346000.123)
    assert len(request.line_id) == 64
    assert "client" not in request.model_dump() and "userAgent" not in str(request.model_dump())
    assert segment_request(line()) == request  # the same line, the same id
    assert segment_request(line(msec=1796346000.124)).line_id != request.line_id


@pytest.mark.parametrize(
    "fields",
    [
        {"session": ""},  # a /p/ or file URL: no session
        {"status": 403},
        {"status": 410},
        {"key": f"packages/{ASSET}/pkg-1/master.m3u8"},
        {"key": f"packages/{ASSET}/pkg-1/init-0.m4s"},
        {"key": "renditions/x/y.mp3"},
        {"session": "not a session id!"},
    ],
)
def test_other_requests_are_not_segment_requests(fields: dict) -> None:
    assert segment_request(line(**fields)) is None


@pytest.mark.parametrize(
    "text", ["", "not json", "[1, 2]", '{"session": 1}', line(msec=None, time="x")]
)
def test_what_is_not_the_edge_json_is_unreadable(text: str) -> None:
    with pytest.raises(UnreadableLogLineError):
        segment_request(text)


def test_spans_and_renditions() -> None:
    assert segment_span_s(1, 4, 9000) == (0.0, 4.0)
    assert segment_span_s(3, 4, 9000) == (8.0, 9.0)  # the last, shorter one
    assert segment_span_s(2, 4, None) == (4.0, 8.0)
    video = ["mp4-360p-600000", "mp4-240p-300000"]
    assert rendition_name(0, video, True) == "mp4-360p-600000"
    assert rendition_name(2, video, True) == "audio"
    assert rendition_name(1, ["aac-64000-2ch", "aac-128000-2ch"], False) == "aac-128000-2ch"
    assert rendition_name(7, video, True) == "representation-7"
