"""The typed job contract (schemas/job_params.py): every parameter shape the version
before it wrote validates into its model and is written back unchanged; anything
else is refused with the field named."""

from __future__ import annotations

import pytest
from job_rows_v0 import (
    SHA,
    ingest_from_path,
    ingest_from_url,
    ingest_of_bucket_event,
    ingest_of_stored,
    ingest_of_upload,
    ingest_staged,
    ingest_stored_then_died,
    ingest_with_plan,
    package_job,
    rendition_child,
    transcode_on_request,
)

from mediamill.schemas.errors import ModelInvalidError
from mediamill.schemas.job_params import (
    IngestParams,
    PackageParams,
    PathSource,
    RenditionJobParams,
    StoredSource,
    StoreSource,
    TranscodeParams,
    UrlSource,
    check_params_type,
    parse_job_params,
)
from mediamill.schemas.jobs import JobType
from mediamill.schemas.renditions import RenditionFormat


def _set(data: dict) -> dict:
    """A row as to_row writes it: a top-level null and a missing field mean the same."""
    return {k: v for k, v in data.items() if v is not None}


OLD_ROWS = [
    ("ingest", ingest_from_path("/media/a.flac", "a.flac", 10), PathSource),
    ("ingest", ingest_staged("incoming/0f3a", "a.flac", 10), StoreSource),
    ("ingest", ingest_with_plan("inbox/a.flac", "a.flac", 10), StoreSource),
    ("ingest", ingest_from_url("https://example.com/clip.ogg"), UrlSource),
    ("ingest", ingest_of_upload("incoming/u1.ab", "a.flac", 10, "u1"), StoreSource),
    ("ingest", ingest_of_bucket_event("inbox/v.flac", "v.flac", 10), StoreSource),
    ("ingest", ingest_of_stored(f"originals/{SHA}", SHA, "a.flac", 10), StoredSource),
    ("ingest", ingest_stored_then_died(f"originals/{SHA}", "incoming/x", SHA, 10), StoreSource),
]


@pytest.mark.parametrize(("job_type", "data", "source"), OLD_ROWS)
def test_old_ingest_rows_validate_and_are_written_back_unchanged(job_type, data, source) -> None:
    params = parse_job_params(job_type, data)
    assert isinstance(params, IngestParams) and isinstance(params.source, source)
    assert params.to_row() == _set(data)


def test_the_other_job_types_keep_their_shapes() -> None:
    transcode = parse_job_params("transcode", transcode_on_request())
    assert isinstance(transcode, TranscodeParams) and transcode.time_limit_ms == 60000
    child = parse_job_params("rendition", rendition_child("r-1"))
    assert isinstance(child, RenditionJobParams) and child.rendition_id == "r-1"
    package = parse_job_params("package", package_job())
    assert isinstance(package, PackageParams) and package.to_row() == package_job()
    assert parse_job_params("package", {}).to_row() == {}


def test_a_plan_keeps_its_specs_as_requested() -> None:
    plan = parse_job_params("ingest", ingest_with_plan("k", "a.flac", 1)).plan
    assert plan is not None and (plan.defaults, plan.exact, plan.package) == (False, False, False)
    assert [s.format for s in plan.renditions] == [RenditionFormat.MP3, RenditionFormat.AAC]
    assert plan.renditions[1].loudness.integrated_lufs == -16.0
    assert plan.renditions[1].sample_rate_hz == 44100


def test_what_was_staged_is_named_only_for_a_staged_store_copy() -> None:
    def staged(data: dict) -> str | None:
        return parse_job_params("ingest", data).staged_key()

    assert staged(ingest_staged("incoming/0f3a", "a", 1)) == "incoming/0f3a"
    assert staged(ingest_of_upload("incoming/u1.ab", "a", 1, "u1")) == "incoming/u1.ab"
    # A caller's own key is never the job's to delete, marked or not.
    assert staged({**ingest_staged("inbox/mine.flac", "a", 1)}) is None
    assert staged(ingest_of_bucket_event("incoming/x", "x", 1)) is None  # not marked staged
    assert staged(ingest_from_path("/media/a.flac", "a", 1)) is None


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"source": {"kind": "ftp", "url": "ftp://x"}}, "source"),
        ({"source": {"kind": "store"}}, "source.store.key"),
        ({"source": {"kind": "stored", "key": "k", "sha256": "nope"}}, "sha256"),
        ({"filename": "a"}, "source"),
        ({**ingest_staged("incoming/a", "a", 1), "sizeByte": 3}, "sizeByte"),
        ({**ingest_staged("incoming/a", "a", 1), "timeLimitMs": 1.5}, "timeLimitMs"),
        ({**ingest_with_plan("k", "a", 1), "plan": {"renditions": [{"format": "wma"}]}}, "format"),
    ],
)
def test_invalid_parameters_are_a_named_model_invalid_error(data: dict, named: str) -> None:
    with pytest.raises(ModelInvalidError, match="ingest job are invalid") as caught:
        parse_job_params("ingest", data)
    assert named in caught.value.message


def test_unknown_job_types_and_foreign_params_are_refused() -> None:
    with pytest.raises(ModelInvalidError, match="unknown job type"):
        parse_job_params("mix", {})
    with pytest.raises(ModelInvalidError, match="rendition job are invalid"):
        parse_job_params("rendition", {})
    with pytest.raises(ModelInvalidError, match="takes IngestParams, not PackageParams"):
        check_params_type(JobType.INGEST, PackageParams())
    check_params_type(JobType.PACKAGE, PackageParams())


def test_new_params_are_written_in_the_old_shape() -> None:
    params = IngestParams(
        source=StoreSource(key="incoming/u1.ab"),
        filename="a.flac",
        size_bytes=10,
        time_limit_ms=30000,
        upload_id="u1",
        staged=True,
    )
    assert params.to_row() == _set(ingest_of_upload("incoming/u1.ab", "a.flac", 10, "u1"))


def test_a_limit_below_one_ms_from_an_old_row_reads_as_no_limit() -> None:
    """Earlier versions stored a limit ≤ 0 for a header declaring a negative duration."""
    old = {**ingest_from_path("/media/a.flac", "a.flac", 10), "timeLimitMs": -5}
    params = parse_job_params("ingest", old)
    assert params.time_limit_ms is None and "timeLimitMs" not in params.to_row()
    with pytest.raises(ModelInvalidError, match="timeLimitMs"):
        parse_job_params("ingest", {**old, "timeLimitMs": "soon"})
