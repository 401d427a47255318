"""The edge-log ingest (workers/edge_logs.py) on SQLite and a local store: segment
requests of known sessions become spans watched and bytes per rendition, each line
once however often it is read; the sweeper sends the actor for new and grown logs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from playback_support import packaged_asset
from support import MakeRuntime

from mediamill.config.settings import Settings
from mediamill.storage import repo
from mediamill.workers import playback
from mediamill.workers.edge_logs import (
    EDGE_LOG_ACTOR,
    LineReader,
    deliveries,
    ingest_lines,
    ingest_log_object,
    sweep_edge_logs,
)
from mediamill.workers.queue import QUEUE_NAME


@pytest.fixture
def rt(make_runtime: MakeRuntime, tmp_path: Path):
    return make_runtime(
        Settings(_env_file=None, data_dir=tmp_path / "data", signing_secret="s" * 32)
    )


def _session(rt) -> tuple[str, str]:
    asset_id = packaged_asset(rt, duration_ms=9000)
    with rt.db.session() as s:
        row = repo.get_package_row(s, asset_id, "pkg-test")
        row.renditions = {"specIds": ["aac-64000-2ch", "aac-128000-2ch"]}
    sid = playback.create_playback_session(rt, asset_id, "d", None, "c").session_id
    return asset_id, sid


def _line(asset_id: str, sid: str, rep: int, number: int, size: int, msec: float) -> str:
    return json.dumps(
        {
            "time": "2026-12-04T01:00:00+00:00", "msec": msec, "session": sid,
            "key": f"packages/{asset_id}/pkg-test/seg-{rep}-{number:05d}.m4s",
            "status": 200, "bytes": size, "requestTime": 0.001, "method": "GET",
            "userAgent": "UA", "client": "203.0.113.1",
        }
    )  # fmt: skip


def test_segments_become_spans_and_bytes_per_rendition_each_line_once(rt) -> None:
    asset_id, sid = _session(rt)
    lines = [
        _line(asset_id, sid, 0, 1, 1000, 1.0),
        _line(asset_id, sid, 0, 2, 1100, 2.0),
        _line(asset_id, sid, 1, 3, 2000, 3.0),  # switched up for the last, short segment
        _line(asset_id, "00000000-0000-0000-0000-000000000000", 0, 1, 5, 4.0),
        json.dumps({"session": "", "key": "renditions/x.mp3", "status": 200, "msec": 5.0}),
        "garbage",
    ]
    found = ingest_lines(rt, lines)
    assert (found.lines, found.segment_requests, found.new_requests) == (6, 3, 3)
    assert (found.unknown_sessions, found.unreadable_lines) == (1, 1)
    again = ingest_lines(rt, lines[:3])
    assert (again.segment_requests, again.new_requests) == (3, 0)
    got = {d.rendition: d for d in deliveries(rt, [sid])}
    assert set(got) == {"aac-64000-2ch", "aac-128000-2ch"}
    low, high = got["aac-64000-2ch"], got["aac-128000-2ch"]
    assert (low.segments, low.bytes) == (2, 2100)
    assert (low.watched_from_s, low.watched_to_s) == (0.0, 8.0)
    assert (high.segments, high.bytes) == (1, 2000)
    assert (high.watched_from_s, high.watched_to_s) == (8.0, 9.0)


def test_log_objects_are_swept_when_new_or_grown(rt) -> None:
    asset_id, sid = _session(rt)
    key = "edge-logs/edge-1/access.json.log"
    rt.store.put(key, io.BytesIO((_line(asset_id, sid, 0, 1, 10, 1.0) + "\n").encode()))

    def sent() -> list[str]:
        queue = rt.broker.queues[QUEUE_NAME]
        found = []
        while not queue.empty():
            message = json.loads(queue.get_nowait())
            assert message["actor_name"] == EDGE_LOG_ACTOR
            found.append(message["args"][0])
        return found

    assert sweep_edge_logs(rt) == 1 and sent() == [key]
    assert ingest_log_object(rt, key).new_requests == 1
    assert sweep_edge_logs(rt) == 0  # ingested, unchanged
    grown = _line(asset_id, sid, 0, 1, 10, 1.0) + "\n" + _line(asset_id, sid, 0, 2, 20, 2.0)
    rt.store.put(key, io.BytesIO(grown.encode()))
    assert sweep_edge_logs(rt) == 1 and sent() == [key]
    again = ingest_log_object(rt, key)
    assert (again.lines, again.new_requests) == (1, 1)  # read on from where it stopped
    assert deliveries(rt, [sid])[0].bytes == 30
    longer = _line(asset_id, sid, 0, 3, 55555, 3.0) + "\n" + _line(asset_id, sid, 0, 1, 10, 1.0)
    rt.store.put(key, io.BytesIO((longer + "\n").encode()))
    replaced = ingest_log_object(rt, key)  # a new log under the old name, read whole
    assert (replaced.lines, replaced.new_requests) == (2, 1)  # its second line was known


@pytest.mark.parametrize("chunk_bytes", [7, 1000, 64 * 1024])
def test_lines_are_read_in_bounded_pieces(chunk_bytes: int) -> None:
    data = b"one\ntwo\n" + b"x" * 100_000 + b'\n{"l":1}\n{"l":2}\nthree'
    reader = LineReader(io.BytesIO(data), chunk_bytes=chunk_bytes)
    lines = list(reader)
    assert lines[0:2] == ["one", "two"]
    assert len(lines[2]) == 16 * 1024 + 1  # cut, then refused as unreadable
    assert lines[3:] == ['{"l":1}', '{"l":2}', "three"]
    assert reader.complete_bytes == len(data) - len(b"three")  # "three" is read again
