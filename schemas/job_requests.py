"""Request bodies of the jobs API (`POST /v0/jobs`).

Unknown fields are refused (a misspelt `rendition` must not silently give the
defaults). What can be checked without the media is checked here; what depends on
the original (quality caps, `exact`) is decided when the asset has been analysed.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator

from mediamill.schemas.base import CamelModel, RequestModel
from mediamill.schemas.job_params import RenditionPlan, TrackRequest
from mediamill.schemas.renditions import RenditionFormat, RenditionSpec

MAX_RENDITIONS_PER_JOB = 32
_STRICT = ConfigDict(**CamelModel.model_config, extra="forbid")


class RenditionRequest(RenditionSpec):
    """One rendition asked for: a RenditionSpec body, with the checks no original can
    change (channels given for audio, a bitrate for lossy formats: any the encoder
    delivers, checked against the most capable original when the job is submitted)."""

    model_config = _STRICT

    @model_validator(mode="after")
    def _requestable(self) -> RenditionRequest:
        if self.format is not RenditionFormat.MP4 and self.channels is None:
            raise ValueError(f"channels (1 or 2) must be given for {self.format}")
        if self.format.lossy and self.bitrate_bps is None:
            raise ValueError(f"a bitrate must be given for {self.format}")
        return self

    def spec(self) -> RenditionSpec:
        return RenditionSpec.model_validate(self.model_dump())


class JobSource(CamelModel):
    """Where the original comes from: an object already in the store (`key`), or an
    http(s) URL (`url`) fetched by a worker. Exactly one."""

    model_config = _STRICT

    key: str | None = Field(default=None, min_length=1, max_length=1024)
    url: str | None = Field(default=None, min_length=1, max_length=2048)

    @model_validator(mode="after")
    def _one(self) -> JobSource:
        if (self.key is None) == (self.url is None):
            raise ValueError("give exactly one of key and url")
        return self


class CreateJobRequest(RequestModel):
    """`POST /v0/jobs`: ingest an original, then make renditions and a package.

    Nothing but `source` given: the default renditions and the package, as for any
    upload. `renditions` given: those are made instead of the defaults, unless
    `defaultRenditions` is true. `package` (default true) adds the package ladder's
    renditions and the HLS + DASH package; false makes no package. `exact` applies to
    the listed renditions (the Content Automation API's rule: a quality the original
    cannot support fails the job with LowQualityError instead of being capped).
    """

    model_config = _STRICT

    source: JobSource
    filename: str | None = Field(default=None, min_length=1, max_length=255)
    renditions: list[RenditionRequest] | None = Field(
        default=None, max_length=MAX_RENDITIONS_PER_JOB
    )
    default_renditions: bool | None = None
    exact: bool = False
    package: bool = True
    # Which audio / video track of a file with several (0-based); default: the first
    # track flagged default. The asset records the choice (`tracks`).
    tracks: TrackRequest | None = None

    def plan(self) -> RenditionPlan | None:
        """The job's plan, or None for the default behaviour. Specs stay as requested
        (duplicates dropped): they are resolved once, against the analysed asset."""
        if self.renditions is None and self.default_renditions is not False and self.package:
            return None
        specs: dict[str, RenditionSpec] = {}
        for requested in self.renditions or []:
            spec = requested.spec()
            specs.setdefault(spec.spec_id, spec)
        defaults = (
            self.default_renditions
            if self.default_renditions is not None
            else self.renditions is None
        )
        return RenditionPlan(
            renditions=list(specs.values()),
            defaults=defaults,
            exact=self.exact,
            package=self.package,
        )
