"""Reading the edge's JSON access log: which lines are media segment requests of a
playback session, and which span of the asset each segment covers.

Only what a line says is used; its client address and user agent are read past and
never kept. A segment is `seg-{representation}-{number:05d}.m4s` under a package
prefix (pipeline/packaging.py's MEDIA_SEGMENT_TEMPLATE), numbered from 1, each
`segment_s` long but the last.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime

from mediamill.schemas import keys
from mediamill.schemas.edge_logs import SegmentRequest
from mediamill.schemas.errors import UnreadableLogLineError

_SEGMENT_KEY = re.compile(
    rf"^{keys.PACKAGES}/(?P<asset>[0-9a-f]{{64}})/(?P<package>[A-Za-z0-9._-]{{1,64}})"
    r"/seg-(?P<rep>[0-9]{1,3})-(?P<number>[0-9]{1,9})\.m4s$"
)
_SESSION_ID = re.compile(r"^[A-Za-z0-9-]{1,64}$")
# What a player got of a segment: all of it (200) or part (206).
DELIVERED = frozenset({200, 206})


def segment_request(line: str) -> SegmentRequest | None:
    """The segment request a log line records, or None when the line is another
    request (a manifest, a file URL, a refusal, no session); UnreadableLogLineError when the
    line is not the edge's JSON at all."""
    try:
        entry = json.loads(line)
    except ValueError:
        raise UnreadableLogLineError("not JSON") from None
    if not isinstance(entry, dict):
        raise UnreadableLogLineError("not a JSON object")
    session = entry.get("session")
    key = entry.get("key")
    status = entry.get("status")
    if not isinstance(session, str) or not isinstance(key, str) or not isinstance(status, int):
        raise UnreadableLogLineError("no session, key or status")
    if not session or status not in DELIVERED or not _SESSION_ID.match(session):
        return None
    match = _SEGMENT_KEY.match(key)
    if match is None:
        return None
    size = entry.get("bytes")
    when = _time_of(entry)
    return SegmentRequest(
        line_id=hashlib.sha256(line.strip().encode()).hexdigest(),
        session_id=session,
        asset_id=match["asset"],
        package_id=match["package"],
        representation=int(match["rep"]),
        segment_number=int(match["number"]),
        status=status,
        bytes=size if isinstance(size, int) and size >= 0 else 0,
        requested_at=when,
    )


def _time_of(entry: dict) -> datetime:
    msec = entry.get("msec")
    if isinstance(msec, int | float) and 0 < msec < 2**33:
        return datetime.fromtimestamp(float(msec), UTC)
    try:
        return datetime.fromisoformat(str(entry.get("time"))).astimezone(UTC)
    except ValueError:
        raise UnreadableLogLineError("no time") from None


def segment_span_s(
    number: int, segment_s: int, duration_ms: int | None
) -> tuple[float, float]:
    """The span of the asset (seconds) segment `number` covers."""
    start_s = (number - 1) * segment_s
    end_s = start_s + segment_s
    if duration_ms is not None:
        duration_s = duration_ms / 1000
        start_s, end_s = min(start_s, duration_s), min(end_s, duration_s)
    return float(start_s), float(end_s)


def rendition_name(representation: int, spec_ids: list[str], has_video: bool) -> str:
    """Which rendition a representation is: the package's video rungs in ladder order,
    then (for video) the audio track; for audio, the ladder in order."""
    if representation < len(spec_ids):
        return spec_ids[representation]
    if has_video and representation == len(spec_ids):
        return "audio"
    return f"representation-{representation}"
