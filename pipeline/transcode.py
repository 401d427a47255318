"""The transcode stage: every rendition of one request from ONE decode of the original.

One ffmpeg process reads the original once; `asplit`/`split` feed one branch per
output (downmix, resample, gain or true-peak limiter; scale and frame-rate cap for
video). Outputs are written to a work directory, never to their final place, so a
killed transcode leaves nothing half-written anywhere that matters. Every output
is then measured with the analysis stage; a loudness target that was missed (a
downmix or a limiter changes loudness in ways a linear estimate cannot see) is
corrected by re-encoding that one output with the measured error taken out.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import ffmpeg

from mediamill.pipeline.analysis import analyse_file
from mediamill.pipeline.ffmpeg import ffmpeg_binary, run_ffmpeg
from mediamill.schemas.errors import UnsupportedRenditionError
from mediamill.schemas.media import AnalysisResult, LoudnessStats, MediaInfo
from mediamill.schemas.renditions import RenditionFormat, RenditionSpec

# Keyframes every KEYFRAME_INTERVAL_S in every video rendition, at the same
# timestamps, so packaging can switch renditions at any segment boundary.
KEYFRAME_INTERVAL_S = 2.0
MAX_FRAME_RATE = 60.0
# ITU-R BS.775: centre and surrounds join the front pair at -3 dB (LFE left out).
DOWNMIX_COEFFICIENT = 10 ** (-3 / 20)
# Past any downmix's summed coefficients: swresample then never normalises the matrix.
NO_NORMALISATION = 1000.0
VIDEO_AUDIO_BITRATE_BPS = 128000
X264_PRESET = "veryfast"
# Lossy encoders overshoot the input's true peak a little; aim under the ceiling.
LOSSY_TRUE_PEAK_MARGIN_DB = 0.5
LOSSLESS_TRUE_PEAK_MARGIN_DB = 0.05
# Measured on the encoded file: re-encode when the loudness is further off than this
# (acceptance: 0.2 LU), the true peak over the ceiling by more than TRUE_PEAK_OVER_DB
# (acceptance: +0.2 dB) or, under a limiter, further under it than TRUE_PEAK_UNDER_DB
# (acceptance: -0.5 dB: a limiter must not take more than it has to).
LOUDNESS_TOLERANCE_LU = 0.15
TRUE_PEAK_OVER_DB = 0.1
TRUE_PEAK_UNDER_DB = 0.4
MAX_CORRECTIONS = 4
# A lossless rendition has no ceiling unless one is asked: only clipping is prevented.
LOSSLESS_CEILING_DBTP = 0.0
_AUDIO_CODECS = {
    RenditionFormat.MP3: {"c:a": "libmp3lame"},
    RenditionFormat.OGG: {"c:a": "libvorbis"},
    RenditionFormat.OPUS: {"c:a": "libopus"},
    RenditionFormat.AAC: {"c:a": "aac", "movflags": "+faststart"},
    RenditionFormat.FLAC: {"c:a": "flac"},
    RenditionFormat.WAV: {"c:a": "pcm_s16le"},
}


@dataclass(frozen=True)
class Output:
    """One file to write: its effective spec, where, and the loudness processing: a
    gain, a true-peak limiter's threshold when one is needed, and the ceiling the
    encoded file's true peak must stay under (measured after encoding)."""

    spec: RenditionSpec
    path: Path
    gain_db: float = 0.0
    limit_dbtp: float | None = None
    ceiling_dbtp: float | None = None

    @property
    def notes(self) -> list[str]:
        """What the loudness processing did, for the rendition's `adjustments`."""
        notes = []
        if self.limit_dbtp is not None:
            notes.append(
                f"true-peak limiter at {self.limit_dbtp:.1f} dBTP: under the "
                f"{self.ceiling_dbtp:g} dBTP ceiling"
            )
        return notes


@dataclass(frozen=True)
class Produced:
    output: Output
    measured: AnalysisResult
    encodes: int  # 1 = the shared pass only


def plan_output(
    spec: RenditionSpec,
    path: Path,
    source: LoudnessStats,
    *,
    ceiling_dbtp: float | None = None,
    source_channels: int | None = None,
) -> Output:
    """The loudness processing of one output. Its ceiling is the spec's loudness target's
    true peak, else `ceiling_dbtp` for lossy formats (MEDIAMILL_RENDITION_TRUE_PEAK_DBTP),
    else 0 dBTP (no clipping). A linear gain to the loudness target, if any; a true-peak
    limiter only when the peaks could cross the ceiling after it: the original's true
    peak plus the gain, plus what a downmix of `source_channels` can add at worst."""
    gain_db = 0.0
    if spec.loudness is not None:
        if source.integrated_lufs is None:
            raise UnsupportedRenditionError("a silent original cannot be normalised to a loudness")
        gain_db = spec.loudness.integrated_lufs - source.integrated_lufs
        ceiling = spec.loudness.true_peak_dbtp
    elif spec.format.lossy and ceiling_dbtp is not None:
        ceiling = ceiling_dbtp
    else:
        ceiling = LOSSLESS_CEILING_DBTP
    margin = LOSSY_TRUE_PEAK_MARGIN_DB if spec.format.lossy else LOSSLESS_TRUE_PEAK_MARGIN_DB
    peak = source.true_peak_dbtp if source.true_peak_dbtp is not None else -math.inf
    peak += gain_db + downmix_headroom_db(source_channels, spec.channels)
    limit = ceiling - margin if peak > ceiling - margin else None
    return Output(spec, path, gain_db=gain_db, limit_dbtp=limit, ceiling_dbtp=ceiling)


def downmix_headroom_db(in_channels: int | None, out_channels: int | None) -> float:
    """At most how much a downmix raises a channel's peak over the original's: the
    BS.775 coefficients that reach one output channel, summed (stereo from 5.1: 1 + 0.707
    + 0.707, +7.7 dB; a bound, never under it). As many channels or more: 0 dB."""
    if not in_channels or not out_channels or in_channels <= out_channels:
        return 0.0
    others = in_channels - out_channels  # centre and surrounds, each at -3 dB
    return 20 * math.log10(1 + others * DOWNMIX_COEFFICIENT / out_channels)


def build_args(source: Path, outputs: list[Output], media: MediaInfo) -> list[str]:
    """The ffmpeg arguments for all `outputs` from one read of `source`."""
    src = ffmpeg.input(str(source))
    # Every output carries audio (an mp4 rung its AAC track) unless the original has
    # none: then the rungs are video only, and an audio-only output cannot be made.
    has_audio = media.channels is not None
    audio_users = [o for o in outputs if has_audio or o.spec.format is not RenditionFormat.MP4]
    video_users = [o for o in outputs if o.spec.format is RenditionFormat.MP4]
    if audio_users and not has_audio:
        raise UnsupportedRenditionError("the original has no audio stream")
    tracks = media.tracks
    audio_index = tracks.audio.index if tracks and tracks.audio else 0
    video_index = tracks.video.index if tracks and tracks.video else 0
    audio = src[f"a:{audio_index}"] if has_audio else None
    audio_branches = (
        audio.filter_multi_output("asplit", len(audio_users))
        if audio is not None and len(audio_users) > 1
        else None
    )
    video_branches = None
    if video_users:
        if media.video is None:
            raise UnsupportedRenditionError("the original has no video stream")
        video = src[f"v:{video_index}"]
        video_branches = (
            video.filter_multi_output("split", len(video_users)) if len(video_users) > 1 else None
        )
    streams = []
    v_index = a_index = 0
    for out in outputs:
        carried = []
        if audio is not None:
            a = audio_branches[a_index] if audio_branches is not None else audio
            a_index += 1
            carried.append(_audio_chain(a, out, media))
        if out.spec.format is RenditionFormat.MP4:
            v = video_branches[v_index] if video_branches is not None else video
            v_index += 1
            streams.append(
                ffmpeg.output(
                    _video_chain(v, out.spec, media),
                    *carried,
                    str(out.path),
                    **_video_args(out.spec, media, with_audio=bool(carried)),
                )
            )
        else:
            streams.append(ffmpeg.output(*carried, str(out.path), **_audio_args(out.spec)))
    merged = ffmpeg.merge_outputs(*streams).overwrite_output()
    return merged.compile(cmd=ffmpeg_binary())[1:]


def _audio_chain(a, out: Output, media: MediaInfo):
    spec = out.spec
    channels = spec.channels or 2
    rate = spec.sample_rate_hz or media.sample_rate_hz or 48000
    target = "mono" if channels == 1 else "stereo"
    if is_unnamed_layout(media.channel_layout):
        a = a.filter("pan", unnamed_downmix(media.channels or 1, channels))
    # One explicit rematrix for every format, in float: swresample's standard downmix
    # (ITU-R BS.775: centre and surrounds at -3 dB, LFE left out), as `ffmpeg -ac 2`
    # makes it, never normalised: normalising (what swresample does by itself for
    # integer formats) took 7.7 LU off every 5.1 source. Clipping is the limiter's
    # job, only where the peaks could cross the ceiling (`plan_output`).
    a = a.filter(
        "aresample", osr=rate, ochl=target, osf="flt", rematrix_maxval=NO_NORMALISATION
    ).filter("aformat", channel_layouts=target)
    if out.gain_db:
        a = a.filter("volume", volume=f"{out.gain_db:.4f}dB")
    if out.limit_dbtp is not None:
        # alimiter sees sample peaks; at 4x the rate those are the true peaks.
        limit = 10 ** (out.limit_dbtp / 20)
        a = (
            a.filter("aresample", rate * 4)
            .filter(
                "alimiter",
                limit=f"{limit:.6f}",
                level=0,
                attack=1,
                release=50,
                asc=0,
                level_in=1,
                level_out=1,
            )
            .filter("aresample", rate)
        )
    return a


def is_unnamed_layout(layout: str | None) -> bool:
    """True for a layout whose channels have no positions ("12 channels", or a custom
    order such as "4 channels (FL+FR+USR3+NONE)"): swresample has no standard downmix
    for it, and the ffmpeg CLI would guess one that drops a channel as "LFE"."""
    return layout is None or re.match(r"\d+ channels\b", layout) is not None


def unnamed_downmix(in_channels: int, out_channels: int) -> str:
    """A `pan` matrix for channels without positions, so none is dropped or favoured:
    mono is the mean of every channel; stereo takes the even-numbered channels (0, 2,
    ...) to the left and the odd ones to the right, each side their mean (a single
    channel feeds both). Means cannot clip, and a signal copied into every channel keeps
    its level."""

    # "<" makes pan renormalise the gains to a sum of 1: the mean, and no "=" for
    # ffmpeg-python to escape.
    def mean(out: str, indices: list[int]) -> str:
        return f"{out}<" + "+".join(f"c{i}" for i in indices)

    everything = list(range(in_channels))
    if out_channels == 1:
        return f"mono|{mean('c0', everything)}"
    left = everything[0::2]
    right = everything[1::2] or left
    return f"stereo|{mean('c0', left)}|{mean('c1', right)}"


def _audio_args(spec: RenditionSpec) -> dict[str, str]:
    args = dict(_AUDIO_CODECS[spec.format])
    if spec.bitrate_bps is not None:
        args["b:a"] = str(spec.bitrate_bps)
    return args


def _frame_rate(media: MediaInfo) -> float:
    rate = media.video.frame_rate if media.video and media.video.frame_rate else 30.0
    return min(rate, MAX_FRAME_RATE)


def _video_chain(v, spec: RenditionSpec, media: MediaInfo):
    # Width follows the aspect ratio, rounded to an even number (-2).
    v = v.filter("scale", -2, spec.height)
    if media.video and media.video.frame_rate and media.video.frame_rate > MAX_FRAME_RATE:
        v = v.filter("fps", MAX_FRAME_RATE)
    return v


def _video_args(spec: RenditionSpec, media: MediaInfo, *, with_audio: bool) -> dict[str, str]:
    gop = max(1, round(_frame_rate(media) * KEYFRAME_INTERVAL_S))
    bitrate = spec.bitrate_bps or 1_000_000
    audio = {"c:a": "aac", "b:a": str(VIDEO_AUDIO_BITRATE_BPS)} if with_audio else {}
    return {
        "c:v": "libx264",
        "preset": X264_PRESET,
        "profile:v": "high",
        "pix_fmt": "yuv420p",
        "b:v": str(bitrate),
        "maxrate": str(int(bitrate * 1.1)),
        "bufsize": str(bitrate * 2),
        "g": str(gop),
        "keyint_min": str(gop),
        "sc_threshold": "0",
        "force_key_frames": f"expr:gte(t,n_forced*{KEYFRAME_INTERVAL_S:g})",
        **audio,
        "movflags": "+faststart",
    }


def time_limit_s(media: MediaInfo, outputs: int, base_s: float, per_media_s: float) -> float:
    """Wall-clock limit for one ffmpeg run: scales with duration and the number of outputs."""
    duration_s = (media.duration_ms or 0) / 1000
    return base_s + per_media_s * duration_s * max(1, outputs)


def produce(
    source: Path,
    outputs: list[Output],
    media: MediaInfo,
    *,
    timeout_s: float,
    on_progress: Callable[[float], None] | None = None,
    measure: Callable[[Path], AnalysisResult] | None = None,
) -> list[Produced]:
    """Encode all outputs in one pass, measure each (with `measure`: workers pass one
    that decodes in a child process), and correct missed loudness targets."""
    measure = measure or analyse_file
    duration_s = (media.duration_ms or 0) / 1000
    run_ffmpeg(
        build_args(source, outputs, media),
        timeout_s=timeout_s,
        on_progress=on_progress,
        duration_s=duration_s,
    )

    def finish(out: Output) -> Produced:
        measured = measure(out.path)
        tried: list[tuple[Output, AnalysisResult]] = []
        kept: list[Path] = []  # each earlier encode's file, in case it was the best
        while len(tried) < MAX_CORRECTIONS and (fixed := _correction(out, measured, tried)):
            tried.append((out, measured))
            kept.append(out.path.with_name(f"{out.path.stem}.try{len(tried)}{out.path.suffix}"))
            os.replace(out.path, kept[-1])
            out = fixed
            run_ffmpeg(build_args(source, [out], media), timeout_s=timeout_s)
            measured = measure(out.path)
        encodes = len(tried) + 1
        attempts = [*tried, (out, measured)]
        best = _best_attempt(attempts)
        if best != len(attempts) - 1:  # an earlier encode came closer: it is the rendition
            os.replace(kept[best], out.path)
        for path in kept:
            path.unlink(missing_ok=True)
        chosen, chosen_measured = attempts[best]
        return Produced(replace(chosen, path=out.path), chosen_measured, encodes)

    # Decoding (PyAV) and the meter (numpy, ffmpeg's biquads) release the GIL, so
    # outputs are measured side by side, one per core.
    with ThreadPoolExecutor(max_workers=max(1, min(len(outputs), os.cpu_count() or 1))) as pool:
        return list(pool.map(finish, outputs))


def _loudness_slope(tried: list[tuple[Output, AnalysisResult]], out: Output,
                    measured: AnalysisResult) -> float:  # fmt: skip
    """LU gained per dB of gain over the last correction, from 0.25 to 1: under a
    limiter a dB of gain brings less than a dB of loudness, so the next asks more."""
    if not tried:
        return 1.0
    before, before_measured = tried[-1]
    la, lb = before_measured.loudness.integrated_lufs, measured.loudness.integrated_lufs
    if la is None or lb is None or abs(out.gain_db - before.gain_db) < 0.05:
        return 1.0
    return min(1.0, max(0.25, (lb - la) / (out.gain_db - before.gain_db)))


def _peak(measured: AnalysisResult) -> float:
    peak = measured.loudness.true_peak_dbtp
    return peak if peak is not None else -math.inf


def _next_limit(tried: list[tuple[Output, AnalysisResult]], out: Output, peak: float) -> float:
    """The limiter threshold to try next, aiming the encoded peak 0.2 dB under the
    ceiling. An encoder's overshoot is not a constant (AAC's grew from 0.5 to 2 dB as
    the limiter bit harder), so once one threshold came out over and another under, the
    next lies between them (regula falsi); before that, step by the miss."""
    ceiling = out.ceiling_dbtp if out.ceiling_dbtp is not None else 0.0
    aim = ceiling - 0.2
    margin = LOSSY_TRUE_PEAK_MARGIN_DB if out.spec.format.lossy else 0.0
    limit = out.limit_dbtp if out.limit_dbtp is not None else ceiling - margin
    points = [(o.limit_dbtp, _peak(m)) for o, m in tried if o.limit_dbtp is not None]
    points.append((limit, peak))
    over = [(lim, p) for lim, p in points if p > aim]
    under = [(lim, p) for lim, p in points if p <= aim]
    if over and under:
        lo = max(under, key=lambda x: x[0])  # the highest threshold that came out under
        hi = min(over, key=lambda x: x[0])  # the lowest that came out over
        if hi[0] > lo[0] and hi[1] > lo[1]:
            return lo[0] + (aim - lo[1]) * (hi[0] - lo[0]) / (hi[1] - lo[1])
    return min(limit + aim - peak, ceiling)


def _within(out: Output, measured: AnalysisResult) -> tuple[bool, bool]:
    """(meets every bound, stays under the ceiling) for one encode as measured."""
    loud = measured.loudness
    peak = _peak(measured)
    ceiling = out.ceiling_dbtp if out.ceiling_dbtp is not None else math.inf
    under = peak <= ceiling + TRUE_PEAK_OVER_DB + 0.1
    target = out.spec.loudness
    loud_ok = (
        target is None
        or loud.integrated_lufs is None
        or (abs(loud.integrated_lufs - target.integrated_lufs) <= LOUDNESS_TOLERANCE_LU + 0.05)
    )
    limited_ok = out.limit_dbtp is None or peak >= ceiling - TRUE_PEAK_UNDER_DB - 0.1
    return under and loud_ok and limited_ok, under


def _best_attempt(attempts: list[tuple[Output, AnalysisResult]]) -> int:
    """Which encode to keep: the last that meets every bound; else the one closest under
    the ceiling (an encoder's overshoot is noisy, so a later try is not always nearer);
    else the one with the lowest peak."""
    verdicts = [_within(o, m) for o, m in attempts]
    fits = [i for i, (ok, _) in enumerate(verdicts) if ok]
    if fits:
        return fits[-1]
    under = [i for i, (_, u) in enumerate(verdicts) if u]
    if under:
        return max(under, key=lambda i: _peak(attempts[i][1]))
    return min(range(len(attempts)), key=lambda i: _peak(attempts[i][1]))


def _correction(
    out: Output, measured: AnalysisResult, tried: list[tuple[Output, AnalysisResult]] = ()
) -> Output | None:
    """A re-planned output when the encoded file missed its loudness target, went over
    its true-peak ceiling, or sits well under it because a limiter took too much.
    `tried`: the earlier encodes of this output and what they measured."""
    tried = list(tried)
    loud = measured.loudness
    if loud.integrated_lufs is None:
        return None  # silence, or no audio at all
    target = out.spec.loudness
    error_lu = loud.integrated_lufs - target.integrated_lufs if target is not None else 0.0
    peak = _peak(measured)
    over_db = peak - out.ceiling_dbtp if out.ceiling_dbtp is not None else -math.inf
    slope = _loudness_slope(tried, out, measured)
    gain_db, limit = out.gain_db - error_lu / slope, out.limit_dbtp
    too_low = limit is not None and over_db < -TRUE_PEAK_UNDER_DB
    if over_db > TRUE_PEAK_OVER_DB or too_low:
        limit = _next_limit(tried, out, peak)
    elif abs(error_lu) <= LOUDNESS_TOLERANCE_LU:
        return None
    return replace(out, gain_db=gain_db, limit_dbtp=limit)
