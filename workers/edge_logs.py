"""Edge log ingest: the segment requests the edge logged become positions watched and
bytes delivered per rendition, for the playback sessions they name (players that send
no heartbeats too).

`ingest_lines` is the use case (`mediamill ingest-edge-logs FILE...`); the
`ingest_edge_log` actor ingests one log object dropped under the store's
`MEDIAMILL_EDGE_LOGS_PREFIX`, which the sweeper finds (`sweep_edge_logs`). Every line
is stored at most once (storage/edge_logs.py), so a file ingested twice, or a log that
grew and is read again, counts each request once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from dramatiq import Message

from mediamill.pipeline.edge_logs import rendition_name, segment_request, segment_span_s
from mediamill.schemas.base import utcnow
from mediamill.schemas.edge_logs import EdgeLogIngest, SegmentRequest, SessionDelivery
from mediamill.schemas.errors import UnreadableLogLineError
from mediamill.storage import edge_logs as rows
from mediamill.storage.blobs.base import skip_bytes
from mediamill.workers import runtime
from mediamill.workers.queue import QUEUE_NAME
from mediamill.workers.runtime import Runtime

log = logging.getLogger(__name__)

EDGE_LOG_ACTOR = "ingest_edge_log"
BATCH_LINES = 2000
HEAD_BYTES = 1024  # a log is the same log while its first KiB is the same
MAX_LINE_CHARS = 16 * 1024


def ingest_lines(rt: Runtime, lines: Iterable[str], seen: set[str] | None = None) -> EdgeLogIngest:
    """Store the segment requests of known sessions among `lines`, in batches; the
    session ids they name are added to `seen` when given."""
    total = EdgeLogIngest()
    batch: list[SegmentRequest] = []
    shapes: dict[tuple[str, str], rows.PackageShape | None] = {}
    for line in lines:
        if not line.strip():
            continue
        total.lines += 1
        if len(line) > MAX_LINE_CHARS:
            total.unreadable_lines += 1
            continue
        try:
            request = segment_request(line)
        except UnreadableLogLineError:
            total.unreadable_lines += 1
            continue
        if request is not None:
            batch.append(request)
            if seen is not None:
                seen.add(request.session_id)
        if len(batch) >= BATCH_LINES:
            total = total.add(_store(rt, batch, shapes))
            batch = []
    if batch:
        total = total.add(_store(rt, batch, shapes))
    return total


def _store(
    rt: Runtime,
    batch: list[SegmentRequest],
    shapes: dict[tuple[str, str], rows.PackageShape | None],
) -> EdgeLogIngest:
    with rt.db.session() as s:
        known = rows.known_sessions(s, (r.session_id for r in batch))
        values = []
        for r in batch:
            if r.session_id not in known:
                continue
            where = (r.asset_id, r.package_id)
            if where not in shapes:
                shapes[where] = rows.package_shape(s, *where)
            shape = shapes[where]
            if shape is None:
                continue
            from_s, to_s = segment_span_s(r.segment_number, shape.segment_s, shape.duration_ms)
            rendition = rendition_name(r.representation, shape.spec_ids, shape.has_video)
            values.append(
                {
                    "line_id": r.line_id,
                    "session_id": r.session_id,
                    "asset_id": r.asset_id,
                    "package_id": r.package_id,
                    "representation": r.representation,
                    "rendition": rendition,
                    "segment_number": r.segment_number,
                    "status": r.status,
                    "bytes": r.bytes,
                    "from_s": from_s,
                    "to_s": to_s,
                    "requested_at": r.requested_at,
                }
            )
        new = rows.add_segment_requests(s, values)
    return EdgeLogIngest(
        segment_requests=len(values),
        new_requests=new,
        unknown_sessions=len(batch) - len(values),
    )


class LineReader:
    """The lines of a binary stream (any store's), decoded leniently, in bounded memory:
    a line longer than MAX_LINE_CHARS is cut there (and then refused as unreadable) and
    the rest of it skipped. `complete_bytes` counts the bytes read through the last
    newline: where a later read of the same, grown, log goes on."""

    def __init__(self, stream: BinaryIO, chunk_bytes: int = 64 * 1024) -> None:
        self.stream, self.chunk_bytes = stream, chunk_bytes
        self.complete_bytes = 0

    def __iter__(self) -> Iterator[str]:
        pending = b""
        skipping = False  # inside the rest of an overlong line
        while chunk := self.stream.read(self.chunk_bytes):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                self.complete_bytes += len(raw) + 1
                if skipping:
                    skipping = False
                    continue
                yield raw.decode("utf-8", errors="replace")
            if len(pending) > MAX_LINE_CHARS:
                if not skipping:
                    yield pending[: MAX_LINE_CHARS + 1].decode("utf-8", errors="replace")
                self.complete_bytes += len(pending)
                pending, skipping = b"", True
        if pending and not skipping:  # a last line still being written: read again later
            yield pending.decode("utf-8", errors="replace")


def ingest_log_object(rt: Runtime, key: str) -> EdgeLogIngest:
    """Ingest one log object of the store from where the last read of it stopped (the
    start, if it begins otherwise now: a new log under the old name), and remember how
    far it got,
    so a log that keeps growing is read once, not again from its start each time."""
    size = rt.store.size(key)
    with rt.store.open(key) as stream:
        head = stream.read(HEAD_BYTES)
    with rt.db.session() as s:
        start = rows.log_file_offset(s, key, head)
    if start > size:
        start = 0
    with rt.store.open(key) as stream:
        skip_bytes(stream, start)
        reader = LineReader(stream)
        found = ingest_lines(rt, reader)
    with rt.db.session() as s:
        rows.record_log_file(
            s,
            key,
            size_bytes=size,
            offset_bytes=start + reader.complete_bytes,
            head=head,
            lines=found.lines,
            new_requests=found.new_requests,
            at=utcnow(),
        )
    log.info(
        "edge log %s from byte %d: %d lines, %d segment requests (%d new)",
        key,
        start,
        found.lines,
        found.segment_requests,
        found.new_requests,
    )
    return found


def ingest_edge_log(key: str) -> None:
    """The actor: ingest the log object `key`."""
    ingest_log_object(runtime.current(), key)


def sweep_edge_logs(rt: Runtime) -> int:
    """Send the actor for each log object under the edge-log prefix that is new or grew;
    how many were sent."""
    listed = [key for key in rt.store.list(rt.settings.edge_logs_prefix) if not key.endswith("/")]
    if not listed:
        return 0
    with rt.db.session() as s:
        ingested = rows.ingested_sizes(s, listed)
    sent = 0
    for key in listed:
        if ingested.get(key) == rt.store.size(key):
            continue
        rt.broker.enqueue(
            Message(
                queue_name=QUEUE_NAME,
                actor_name=EDGE_LOG_ACTOR,
                args=(key,),
                kwargs={},
                options={},
            )
        )
        sent += 1
    return sent


def deliveries(rt: Runtime, session_ids: Iterable[str]) -> list[SessionDelivery]:
    """What the edge delivered to these sessions, per rendition."""
    with rt.db.session() as s:
        return rows.deliveries(s, session_ids)
