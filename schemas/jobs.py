"""Jobs and events: the resources an operator watches and a subscriber receives."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from mediamill.schemas.base import CamelModel


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}


class JobType(StrEnum):
    INGEST = "ingest"
    ANALYSE = "analyse"
    TRANSCODE = "transcode"
    RENDITION = "rendition"  # a child: one output of its parent's transcode
    PACKAGE = "package"  # (re-)packaging an analysed asset's ready renditions


class JobStage(StrEnum):
    STORE = "store"
    ANALYSE = "analyse"
    TRANSCODE = "transcode"
    PACKAGE = "package"
    DONE = "done"


class JobError(CamelModel):
    name: str
    message: str


class Job(CamelModel):
    """The Job resource of DESIGN.md. `progress` is the current stage's, 0..1."""

    id: str
    type: JobType
    asset_id: str | None = None
    parent_id: str | None = None
    status: JobStatus
    stage: JobStage
    progress: float = 0.0
    attempts: int = 0
    error: JobError | None = None
    result: dict[str, Any] | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    children: list[Job] = Field(default_factory=list)


class EventType(StrEnum):
    ASSET_CREATED = "asset.created"
    ASSET_ANALYSED = "asset.analysed"
    ASSET_DELETED = "asset.deleted"
    JOB_FAILED = "job.failed"
    RENDITION_READY = "rendition.ready"
    RENDITION_FAILED = "rendition.failed"
    PACKAGE_READY = "package.ready"


class Event(CamelModel):
    id: str
    type: str
    created_at: datetime
    data: dict[str, Any]
