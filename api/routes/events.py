"""Object-storage bucket notifications in: `POST /v0/events/storage`.

The target of MinIO's webhook (`notify_webhook`, see config/minio/notify-webhook.sh)
or of anything that relays S3 event notifications. It takes no API key: the caller
is MinIO, which sends its webhook `auth_token` as `Authorization: Bearer <token>`,
checked in constant time against `MEDIAMILL_BUCKET_EVENTS_TOKEN`. What happens to
each record is workers/bucket.py's business, shared with `mediamill listen-bucket`.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import JSONResponse

from mediamill.api.deps import RuntimeDep
from mediamill.api.state import app_runtime
from mediamill.schemas.errors import AuthenticationError
from mediamill.workers.bucket import handle_notification, parse_notification

router = APIRouter(tags=["events"])


def require_bucket_token(request: Request) -> None:
    """401 unless `Authorization: Bearer <MEDIAMILL_BUCKET_EVENTS_TOKEN>`."""
    expected = app_runtime(request).settings.bucket_events_token
    if expected is None:
        raise AuthenticationError(
            "bucket notifications are disabled: MEDIAMILL_BUCKET_EVENTS_TOKEN is not set"
        )
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), expected.get_secret_value().encode()
    ):
        raise AuthenticationError(
            "bucket notifications need 'Authorization: Bearer <token>' with the webhook's "
            "auth token"
        )


@router.post("/v0/events/storage", dependencies=[Depends(require_bucket_token)])
def storage_event(rt: RuntimeDep, body: dict[str, Any] = Body(...)) -> JSONResponse:  # noqa: B008
    """One S3 or MinIO notification: an ingest job per new object (exactly once per
    bucket + key + version), other events acknowledged and ignored. 202 when a job was
    made, else 200; 400 (nothing acted on) for another bucket or an unsafe key, 413 for
    more than `MEDIAMILL_BUCKET_EVENT_MAX_RECORDS` records."""
    notification = parse_notification(body, rt.settings.bucket_event_max_records)
    results = handle_notification(rt, notification)
    counts = {
        outcome: sum(r.outcome == outcome for r in results)
        for outcome in ("accepted", "duplicate", "ignored")
    }
    answer = {
        "received": len(results),
        "accepted": counts["accepted"],
        "duplicates": counts["duplicate"],
        "ignored": counts["ignored"],
        "records": [r.to_json_dict() for r in results],
    }
    return JSONResponse(answer, status_code=202 if counts["accepted"] else 200)
