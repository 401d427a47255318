"""Renditions for real: one ffmpeg decode feeds every output; each output is decoded
again and its codec, layout, rate, bitrate, duration and loudness asserted.

Bitrate tolerance: +-10 % for CBR (mp3) and +-25 % for the VBR/ABR encoders
(Vorbis, Opus, AAC), whose rate follows the material; measured over whole files
including container overhead.
"""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from support import make_sample

from mediamill.pipeline import transcode as transcode_module
from mediamill.pipeline.analysis import analyse_file
from mediamill.pipeline.quality import resolve
from mediamill.pipeline.transcode import plan_output, produce
from mediamill.schemas.media import Asset
from mediamill.schemas.renditions import LoudnessTarget, RenditionFormat, RenditionSpec

CODECS = {
    "mp3": "mp3",
    "ogg": "vorbis",
    "opus": "opus",
    "aac": "aac",
    "flac": "flac",
    "wav": "pcm_s16le",
}
CBR_TOLERANCE = 0.10
VBR_TOLERANCE = 0.25


def make(source: Path, specs: list[RenditionSpec], out_dir: Path, exact: bool = False):
    analysis = analyse_file(source)
    asset = Asset.from_analysis("f" * 64, source.stat().st_size, analysis)
    outputs = []
    for i, requested in enumerate(specs):
        effective, _ = resolve(requested, asset, exact)
        outputs.append(
            plan_output(effective, out_dir / f"{i}.{effective.format.extension}", analysis.loudness)
        )
    return analysis, produce(source, outputs, analysis.media, timeout_s=600)


@pytest.fixture
def ffmpeg_runs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every ffmpeg command the transcode stage runs."""
    runs: list[list[str]] = []
    real = transcode_module.run_ffmpeg

    def counting(args, **kw):
        runs.append(list(args))
        return real(args, **kw)

    monkeypatch.setattr(transcode_module, "run_ffmpeg", counting)
    return runs


def test_every_audio_format_from_one_decode(
    samples: dict[str, Path], tmp_path: Path, ffmpeg_runs: list[list[str]]
) -> None:
    specs = [
        RenditionSpec(format=RenditionFormat(f), bitrate_bps=b, channels=c)
        for f, b, c in [
            ("mp3", 128000, 2),
            ("ogg", 160000, 2),
            ("opus", 96000, 2),
            ("aac", 128000, 2),
            ("flac", None, 2),
            ("wav", None, 1),
            ("mp3", 64000, 1),
            ("opus", 64000, 1),
        ]
    ]
    source, made = make(samples["music.flac"], specs, tmp_path)
    assert len(ffmpeg_runs) == 1, "all renditions come from one ffmpeg process"
    assert sum(a == "-i" for a in ffmpeg_runs[0]) == 1, "reading the original once"
    for spec, result in zip(specs, made, strict=True):
        m = result.measured.media
        assert m.codec == CODECS[spec.format.value], spec.spec_id
        assert m.channels == spec.channels, spec.spec_id
        assert m.sample_rate_hz == 48000, spec.spec_id
        assert abs(m.duration_ms - source.media.duration_ms) <= 50, (spec.spec_id, m.duration_ms)
        if spec.format.lossy:
            tolerance = CBR_TOLERANCE if spec.format is RenditionFormat.MP3 else VBR_TOLERANCE
            assert abs(m.bitrate_bps - spec.bitrate_bps) <= tolerance * spec.bitrate_bps, (
                spec.spec_id,
                m.bitrate_bps,
            )
        assert result.measured.loudness.integrated_lufs is not None
        assert result.encodes == 1


def test_downmix_from_5_1_to_stereo_and_mono(samples: dict[str, Path], tmp_path: Path) -> None:
    specs = [
        RenditionSpec(format=RenditionFormat.MP3, bitrate_bps=128000, channels=c) for c in (2, 1)
    ]
    _, made = make(samples["surround.flac"], specs, tmp_path)
    assert [r.measured.media.channels for r in made] == [2, 1]
    assert [r.measured.media.channel_layout for r in made] == ["stereo", "mono"]


def test_sample_rate_is_applied(samples: dict[str, Path], tmp_path: Path) -> None:
    specs = [
        RenditionSpec(
            format=RenditionFormat.MP3, bitrate_bps=128000, channels=2, sample_rate_hz=44100
        ),
        RenditionSpec(format=RenditionFormat.FLAC, channels=2, sample_rate_hz=32000),
    ]
    source, made = make(samples["music.flac"], specs, tmp_path)
    assert [r.measured.media.sample_rate_hz for r in made] == [44100, 32000]
    for r in made:
        assert abs(r.measured.media.duration_ms - source.media.duration_ms) <= 50


@pytest.mark.parametrize(
    ("target_lufs", "ceiling_dbtp"), [(-14.0, -1.0), (-23.0, -1.0), (-9.0, -1.0)]
)
@pytest.mark.parametrize("fmt", ["mp3", "aac", "flac"])
def test_loudness_target_is_met_and_the_ceiling_respected(
    samples: dict[str, Path], tmp_path: Path, target_lufs: float, ceiling_dbtp: float, fmt: str
) -> None:
    target = LoudnessTarget(integrated_lufs=target_lufs, true_peak_dbtp=ceiling_dbtp)
    spec = RenditionSpec(
        format=RenditionFormat(fmt),
        channels=2,
        loudness=target,
        bitrate_bps=128000 if fmt != "flac" else None,
    )
    _, (made,) = make(samples["speech.wav"], [spec], tmp_path)
    loud = made.measured.loudness
    assert abs(loud.integrated_lufs - target_lufs) <= 1.0, loud
    assert loud.true_peak_dbtp <= ceiling_dbtp + 0.2, loud
    # -9 LUFS from speech peaking near -6 dBTP cannot be a linear gain: a limiter ran.
    if target_lufs == -9.0:
        assert made.output.limit_dbtp is not None
    if target_lufs == -23.0:
        assert made.output.limit_dbtp is None, "a gain that fits needs no limiter"


def keyframe_times(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return [
            round(float(p.pts * stream.time_base), 3)
            for p in c.demux(stream)
            if p.is_keyframe and p.pts is not None
        ]


def test_video_ladder_one_decode_aligned_keyframes_no_upscale(
    tmp_path: Path, ffmpeg_runs: list[list[str]]
) -> None:
    source_path = make_sample(tmp_path / "src.mp4", kind="video", duration_s=6.0)
    ladder = [
        RenditionSpec(format=RenditionFormat.MP4, height=h, bitrate_bps=b, channels=2)
        for h, b in ((1080, 5_000_000), (720, 3_000_000), (480, 1_500_000), (360, 800_000))
    ]
    source, made = make(source_path, ladder, tmp_path)
    assert len(ffmpeg_runs) == 1
    heights = [r.measured.media.video.height for r in made]
    assert heights == [720, 720, 480, 360], "1080 is capped at the original's 720"
    keyframes = [keyframe_times(r.output.path) for r in made]
    assert keyframes[0] == [0.0, 2.0, 4.0]
    assert all(k == keyframes[0] for k in keyframes), keyframes
    for r in made:
        v = r.measured.media.video
        assert v.codec == "h264" and v.width % 2 == 0 and v.height % 2 == 0
        assert abs(v.width / v.height - 16 / 9) < 0.01
        assert v.frame_rate == pytest.approx(30.0)
        assert r.measured.media.codec == "aac" and r.measured.media.channels == 2
        assert abs(r.measured.media.duration_ms - source.media.duration_ms) <= 50


def test_frame_rate_is_capped_at_60(tmp_path: Path) -> None:
    from mediamill.pipeline.ffmpeg import run_ffmpeg

    src = tmp_path / "fast.mp4"
    run_ffmpeg(
        [
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=120:duration=2",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=2",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
            str(src),
        ],
        timeout_s=120,
    )
    spec = RenditionSpec(format=RenditionFormat.MP4, height=240, bitrate_bps=400_000, channels=2)
    _, (made,) = make(src, [spec], tmp_path)
    assert made.measured.media.video.frame_rate == pytest.approx(60.0)
