"""The parameters of every job type: the contract between whoever creates a job and
the actor that runs it.

They are stored as JSON on the job row (camelCase, as written since the first
release: `{"source": {"kind": "store", "key": ...}, "filename": ..., "sizeBytes":
...}`), validated when a job is created (a model is the only way to write them) and
when an actor loads them (`parse_job_params`). Unknown fields are refused: a job
whose parameters do not say what they mean fails with ModelInvalidError instead of
being run on a guess.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator

from mediamill.schemas import keys
from mediamill.schemas.base import CamelModel
from mediamill.schemas.errors import ModelInvalidError, describe_validation
from mediamill.schemas.jobs import JobType
from mediamill.schemas.renditions import RenditionSpec

_PARAMS = ConfigDict(**CamelModel.model_config, extra="forbid")


class _Part(CamelModel):
    model_config = _PARAMS


# ---- where an ingest's bytes come from ----------------------------------------------------


class PathSource(_Part):
    """A file on the worker's own filesystem (embedded mode: `mediamill process`)."""

    kind: Literal["path"] = "path"
    path: str = Field(min_length=1)


class StoreSource(_Part):
    """An object in the store: a caller's key, an upload's frozen bytes, a bucket
    object (in place, or copied in under a staged key)."""

    kind: Literal["store"] = "store"
    key: str = Field(min_length=1)


class StoredSource(_Part):
    """Bytes already stored under their SHA-256 by whoever hashed them while writing
    (`POST /v0/assets`): no second copy is made."""

    kind: Literal["stored"] = "stored"
    key: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class UrlSource(_Part):
    """An http(s) URL a worker fetches (checked again, hop by hop, when fetched)."""

    kind: Literal["url"] = "url"
    url: str = Field(min_length=1)


IngestSource = Annotated[
    PathSource | StoreSource | StoredSource | UrlSource, Field(discriminator="kind")
]


class StoredOriginal(_Part):
    """The original as an earlier run of the job stored it (so a rerun need not)."""

    key: str
    size_bytes: int = Field(ge=0)
    sha256: str


class BucketEventOrigin(_Part):
    """The bucket notification record an ingest came from (its object's version)."""

    bucket: str
    key: str
    version: str


class RenditionPlan(_Part):
    """What to make once the asset is analysed (`POST /v0/jobs`): the renditions asked
    for (specs as requested; resolved against the asset once, when it is known), the
    defaults or not, the package or not. `exact` applies to the listed renditions."""

    renditions: list[RenditionSpec] = Field(default_factory=list)
    defaults: bool = True
    exact: bool = False
    package: bool = True


# ---- the job types ------------------------------------------------------------------------


class JobParams(CamelModel):
    """What every job carries: its current stage's time limit, and the seconds it spent
    in each stage it left (written by the job bookkeeping, read by /metrics)."""

    model_config = _PARAMS

    time_limit_ms: int | None = Field(default=None, gt=0)
    stage_seconds: dict[str, float] | None = None

    @field_validator("time_limit_ms", mode="before")
    @classmethod
    def _no_limit_below_one(cls, value: object) -> object:
        """Rows of earlier versions hold a limit ≤ 0 where a header declared a negative
        duration (queue.time_limit_ms now clamps it): read as no limit, not refused."""
        if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
            return None
        return value

    def to_row(self) -> dict:
        """The JSON stored on the job row, in the shape written before the contract was
        typed: unset top-level fields left out (earlier versions wrote some as null,
        which reads the same), nested models (a rendition spec's unset fields
        included) dumped whole."""
        row = self.model_dump(mode="json", by_alias=True)
        return {name: value for name, value in row.items() if value is not None}


class TrackRequest(CamelModel):
    """Which audio and video track of a file with several to use (0-based, among the
    file's tracks of that kind); None: the first track flagged default."""

    model_config = _PARAMS

    audio: int | None = Field(default=None, ge=0, le=255)
    video: int | None = Field(default=None, ge=0, le=255)


class IngestParams(JobParams):
    """An `ingest` job: store the original, analyse it, make renditions and package."""

    source: IngestSource
    filename: str | None = None
    size_bytes: int = Field(default=0, ge=0)
    plan: RenditionPlan | None = None
    # The source is a copy the server staged for this job alone, deleted once stored.
    staged: bool | None = None
    stored: StoredOriginal | None = None
    upload_id: str | None = None
    asset_type: str | None = None
    legacy_track_token: str | None = None
    bucket_event: BucketEventOrigin | None = None
    # Set when the renditions are planned: whether packaging follows the transcode.
    package: bool | None = None
    tracks: TrackRequest | None = None

    def staged_key(self) -> str | None:
        """The store key of the copy the server staged for this job alone, which ingest
        deletes once the original is stored; None for any other source (a key someone
        else owns is never deleted)."""
        if not self.staged or not isinstance(self.source, StoreSource):
            return None
        return self.source.key if keys.is_staged(self.source.key) else None


class TranscodeParams(JobParams):
    """A `transcode` job: renditions asked for one at a time (`?format=...`)."""


class RenditionJobParams(JobParams):
    """A `rendition` job: one output of its parent's transcode."""

    rendition_id: str


class PackageParams(JobParams):
    """A `package` job: (re-)package an analysed asset's ready renditions."""


class AnalyseParams(JobParams):
    """An `analyse` job (written by early versions; analysis is now an ingest stage)."""


PARAMS_BY_TYPE: dict[JobType, type[JobParams]] = {
    JobType.INGEST: IngestParams,
    JobType.ANALYSE: AnalyseParams,
    JobType.TRANSCODE: TranscodeParams,
    JobType.RENDITION: RenditionJobParams,
    JobType.PACKAGE: PackageParams,
}


def check_params_type(job_type: JobType, params: JobParams) -> None:
    """Refuse (ModelInvalidError) to write a job with another type's parameters."""
    if type(params) is not PARAMS_BY_TYPE[job_type]:
        raise ModelInvalidError(
            f"a {job_type} job takes {PARAMS_BY_TYPE[job_type].__name__}, "
            f"not {type(params).__name__}"
        )


def parse_job_params(job_type: str, data: dict | None) -> JobParams:
    """The parameters stored on a job row of `job_type`, validated; ModelInvalidError
    names every field that is wrong."""
    try:
        model = PARAMS_BY_TYPE[JobType(job_type)]
    except ValueError as exc:
        raise ModelInvalidError(f"unknown job type {job_type!r}") from exc
    try:
        return model.model_validate(data or {})
    except ValidationError as exc:
        raise ModelInvalidError(
            f"the parameters of this {job_type} job are invalid: "
            f"{describe_validation(exc.errors())}"
        ) from exc
