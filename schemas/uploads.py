"""Upload sessions: the EncoraStream ingest lifecycle (create, PUT the bytes to the
upload URL, complete, watch), with MediaMill's camelCase names.

`status` is the session's own state; `transcodeStatus` is the state of the ingest
job that `complete` started (`pending` until then, as EncoraStream names it).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import ConfigDict, Field, field_validator

from mediamill.schemas.base import CamelModel, RequestModel

# `type/subtype`, as a Content-Type header names media (parameters are not taken).
CONTENT_TYPE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+\-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+\-]*$"


class UploadStatus(StrEnum):
    AWAITING_UPLOAD = "awaiting_upload"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in {UploadStatus.COMPLETED, UploadStatus.FAILED, UploadStatus.CANCELLED}


class TranscodeStatus(StrEnum):
    """The ingest job's status, or `pending` before `complete` made the job."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class CreateUpload(RequestModel):
    """`POST /v0/uploads`. EncoraStream's snake_case names are accepted too."""

    model_config = ConfigDict(extra="forbid")

    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field(max_length=128, pattern=CONTENT_TYPE_PATTERN)
    size_bytes: int = Field(ge=1)
    asset_type: str | None = Field(default=None, min_length=1, max_length=128)
    legacy_track_token: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._\-]+$"
    )

    @field_validator("legacy_track_token")
    @classmethod
    def _addressable(cls, value: str | None) -> str | None:
        """`.` and `..` name no path segment a URL can carry (clients fold them away)."""
        if value in {".", ".."}:
            raise ValueError("a legacyTrackToken cannot be '.' or '..'")
        return value


class Upload(CamelModel):
    """An upload session. `uploadUrl` is set while the bytes may still be PUT (status
    `awaiting_upload`, before `uploadUrlExpiresAt`); send `uploadHeaders` with the PUT."""

    id: str
    filename: str
    content_type: str
    size_bytes: int
    asset_type: str | None = None
    legacy_track_token: str | None = None
    status: UploadStatus
    transcode_status: TranscodeStatus
    upload_url: str | None = None
    upload_method: str = "PUT"
    upload_headers: dict[str, str] = Field(default_factory=dict)
    upload_url_expires_at: datetime
    job_id: str | None = None
    asset_id: str | None = None
    error_message: str | None = None
    created_at: datetime
    updated_at: datetime
