"""Object-storage bucket notifications, as S3 and MinIO send them.

S3 (and Ceph, and MinIO's `listen_bucket_notification`) send
`{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name"}, "object":
{"key", "size", "eTag", "versionId", "sequencer"}}}]}`. MinIO's webhook wraps one
record as `{"EventName": "s3:ObjectCreated:Put", "Key": "bucket/object", "Records":
[...]}` and spells record event names with the `s3:` prefix. Object keys in records
are URL-encoded (`+` for a space). Only the fields MediaMill acts on are modelled;
everything else is ignored, so a newer event version still parses.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class S3Bucket(_Lenient):
    name: str = Field(min_length=1, max_length=255)


class S3Object(_Lenient):
    key: str = Field(min_length=1, max_length=4096)  # URL-encoded: up to 3x the 1024 bytes
    size_bytes: int | None = Field(default=None, ge=0, alias="size")
    etag: str | None = Field(default=None, max_length=128, alias="eTag")
    version_id: str | None = Field(default=None, max_length=128, alias="versionId")
    sequencer: str | None = Field(default=None, max_length=128)

    @field_validator("etag")
    @classmethod
    def _unquoted(cls, value: str | None) -> str | None:
        """S3 sends the ETag bare in notifications and quoted in headers; keep it bare."""
        return value.strip('"') if value else value


class S3Entity(_Lenient):
    bucket: S3Bucket
    object: S3Object


class S3EventRecord(_Lenient):
    event_version: str | None = Field(default=None, alias="eventVersion")
    event_source: str | None = Field(default=None, alias="eventSource")
    event_name: str = Field(alias="eventName", max_length=128)
    s3: S3Entity | None = None

    @property
    def event_type(self) -> str:
        """The event name without MinIO's `s3:` prefix: `ObjectCreated:Put`."""
        return self.event_name.removeprefix("s3:")

    @property
    def object_created(self) -> bool:
        return self.event_type.startswith("ObjectCreated:")


class BucketNotification(_Lenient):
    """One notification body: S3's `Records`, plus MinIO's webhook `EventName` / `Key`
    (informational; the records are what counts). S3's `s3:TestEvent` has no records."""

    # A backstop: the route refuses more than MEDIAMILL_BUCKET_EVENT_MAX_RECORDS first.
    records: list[S3EventRecord] = Field(default_factory=list, alias="Records", max_length=10_000)
    event_name: str | None = Field(default=None, alias="EventName")
    key: str | None = Field(default=None, alias="Key")
