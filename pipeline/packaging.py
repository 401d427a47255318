"""HLS and DASH over ONE set of CMAF (fMP4) segments, cut from finished renditions.

ffmpeg's DASH muxer copies the renditions' streams (no re-encode) into init and
media segments, writes a static MPD (SegmentTemplate with a SegmentTimeline) and,
with `hls_playlist`, an HLS media playlist per representation over the very same
segment files. We then write the HLS master ourselves: BANDWIDTH is the peak
segment bitrate and AVERAGE-BANDWIDTH the mean, measured on the segments written,
as the HLS spec defines them, and video variants share one audio rendition in an
`EXT-X-MEDIA` group. Every URI in every manifest is relative, so one signed path
prefix (see `pipeline/signing.py`) covers the whole package.

Video renditions carry keyframes every 2 s at identical times in every rung
(`pipeline/transcode.py`), so segments of a multiple of 2 s start at the same
instants in every rendition and a player can switch at any segment boundary.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from mediamill.pipeline.ffmpeg import run_ffmpeg
from mediamill.pipeline.transcode import KEYFRAME_INTERVAL_S
from mediamill.schemas.errors import InvalidRequestError, MediaError
from mediamill.schemas.packages import DASH_MANIFEST, MASTER_PLAYLIST
from mediamill.schemas.renditions import RenditionFormat, RenditionSpec

# Names inside a package. $RepresentationID$ and $Number$ are DASH template
# identifiers that ffmpeg expands; nothing here comes from a request.
INIT_SEGMENT_TEMPLATE = "init-$RepresentationID$.m4s"
MEDIA_SEGMENT_TEMPLATE = "seg-$RepresentationID$-$Number%05d$.m4s"
AUDIO_GROUP_ID = "audio"
_MPD_NS = {"mpd": "urn:mpeg:dash:schema:mpd:2011"}

CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".mpd": "application/dash+xml",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
}


@dataclass(frozen=True)
class Track:
    """One finished rendition file to take a stream from."""

    path: Path
    spec: RenditionSpec
    frame_rate: float | None = None  # video renditions: frames per second


@dataclass
class Variant:
    """One representation: its media playlist, segments and measured bitrates."""

    representation_id: str
    kind: str  # "video" or "audio"
    playlist: str
    codecs: str
    init_segment: str
    segments: list[tuple[str, float]] = field(default_factory=list)  # (file, duration s)
    width: int | None = None
    height: int | None = None
    frame_rate: float | None = None
    channels: int | None = None
    peak_bps: int = 0
    average_bps: int = 0

    @property
    def duration_s(self) -> float:
        return sum(d for _, d in self.segments)


@dataclass(frozen=True)
class PackageResult:
    """What a packaging run wrote into its output directory."""

    files: list[str]  # relative names, manifests included
    variants: list[Variant]
    duration_ms: int
    segment_count: int
    size_bytes: int


def package_tracks(
    video: list[Track],
    audio: list[Track],
    out_dir: Path,
    *,
    segment_s: int,
    timeout_s: float,
) -> PackageResult:
    """Package `video` rungs (H.264 streams of mp4 renditions) and `audio` renditions
    (AAC streams of m4a or mp4 renditions) into `out_dir`, which must be empty.

    With video, the audio tracks form one `EXT-X-MEDIA` group every variant refers
    to (no group when there is no audio: a video-only package); without video, each
    audio rendition is a variant of its own (an AAC ladder)."""
    if not audio and not video:
        raise InvalidRequestError("a package needs at least one rendition")
    if video and segment_s % KEYFRAME_INTERVAL_S:
        raise InvalidRequestError(
            f"video segments must be a multiple of the {KEYFRAME_INTERVAL_S:g} s keyframe "
            f"interval, not {segment_s} s"
        )
    for t in video:
        if t.spec.format is not RenditionFormat.MP4:
            raise InvalidRequestError(f"not a video rendition: {t.spec.spec_id}")
    for t in audio:
        if t.spec.format not in (RenditionFormat.AAC, RenditionFormat.MP4):
            raise InvalidRequestError(f"not an AAC rendition: {t.spec.spec_id}")
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        raise InvalidRequestError(f"package directory is not empty: {out_dir}")

    run_ffmpeg(_dash_args(video, audio, out_dir, segment_s), timeout_s=timeout_s)
    variants = _read_variants(out_dir, video, audio)
    _measure_bitrates(out_dir, variants)
    for v in variants:
        (out_dir / v.playlist).write_text(media_playlist(v))
    (out_dir / MASTER_PLAYLIST).write_text(master_playlist(variants))
    files = sorted(p.name for p in out_dir.iterdir() if p.is_file())
    durations = [v.duration_s for v in variants]
    return PackageResult(
        files=files,
        variants=variants,
        duration_ms=round(max(durations) * 1000),
        segment_count=sum(len(v.segments) for v in variants),
        size_bytes=sum((out_dir / f).stat().st_size for f in files),
    )


def _dash_args(video: list[Track], audio: list[Track], out_dir: Path, segment_s: int) -> list[str]:
    args: list[str] = []
    for t in [*video, *audio]:
        args += ["-i", str(t.path)]
    for i in range(len(video)):
        args += ["-map", f"{i}:v:0"]
    for i in range(len(audio)):
        args += ["-map", f"{len(video) + i}:a:0"]
    sets = [f"id=0,streams={','.join(str(i) for i in range(len(video)))}"] if video else []
    if audio:
        sets.append(
            f"id={len(sets)},streams=" + ",".join(str(len(video) + i) for i in range(len(audio)))
        )
    args += [
        "-c", "copy",
        "-f", "dash",
        "-seg_duration", str(segment_s),
        "-use_template", "1",
        "-use_timeline", "1",
        "-single_file", "0",
        "-dash_segment_type", "mp4",
        "-init_seg_name", INIT_SEGMENT_TEMPLATE,
        "-media_seg_name", MEDIA_SEGMENT_TEMPLATE,
        "-adaptation_sets", " ".join(sets),
        "-hls_playlist", "1",
        "-streaming", "0",
        "-y",
        str(out_dir / DASH_MANIFEST),
    ]  # fmt: skip
    return args


def _read_variants(out_dir: Path, video: list[Track], audio: list[Track]) -> list[Variant]:
    """Each representation of the MPD ffmpeg wrote, with its HLS media playlist."""
    try:
        root = ET.parse(out_dir / DASH_MANIFEST).getroot()
    except (OSError, ET.ParseError) as exc:
        raise MediaError(f"the packager wrote no readable MPD: {exc}") from exc
    tracks = [*video, *audio]
    variants = []
    for rep in root.iterfind(".//mpd:Representation", _MPD_NS):
        rep_id = rep.get("id", "")
        index = int(rep_id)
        track = tracks[index]
        kind = "video" if index < len(video) else "audio"
        playlist = f"media_{index}.m3u8"
        init, segments = _read_media_playlist(out_dir / playlist)
        variants.append(
            Variant(
                representation_id=rep_id,
                kind=kind,
                playlist=playlist,
                codecs=rep.get("codecs", ""),
                init_segment=init,
                segments=segments,
                width=int(rep.get("width")) if rep.get("width") else None,
                height=int(rep.get("height")) if rep.get("height") else None,
                frame_rate=track.frame_rate if kind == "video" else None,
                channels=track.spec.channels if kind == "audio" else None,
            )
        )
    if len(variants) != len(tracks):
        raise MediaError(f"the packager wrote {len(variants)} of {len(tracks)} representations")
    return variants


def _read_media_playlist(path: Path) -> tuple[str, list[tuple[str, float]]]:
    """(init segment, [(segment, duration s)]) of an HLS media playlist."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise MediaError(f"the packager wrote no media playlist {path.name}") from exc
    init, segments, duration = "", [], None
    for line in (raw.strip() for raw in lines):
        if line.startswith("#EXT-X-MAP:"):
            init = line.split('URI="', 1)[1].split('"', 1)[0]
        elif line.startswith("#EXTINF:"):
            duration = float(line[len("#EXTINF:") :].split(",", 1)[0])
        elif line and not line.startswith("#") and duration is not None:
            segments.append((line, duration))
            duration = None
    if not init or not segments:
        raise MediaError(f"media playlist {path.name} lists no init segment or no segments")
    return init, segments


def _measure_bitrates(out_dir: Path, variants: list[Variant]) -> None:
    """Peak and average bitrate of each variant's segments (init included in the mean,
    as a player downloads it once)."""
    for v in variants:
        sizes = [(out_dir / name).stat().st_size for name, _ in v.segments]
        peaks = [8 * size / d for size, (_, d) in zip(sizes, v.segments, strict=True) if d > 0]
        total = sum(sizes) + (out_dir / v.init_segment).stat().st_size
        v.peak_bps = math.ceil(max(peaks, default=0.0))
        v.average_bps = math.ceil(8 * total / v.duration_s) if v.duration_s > 0 else 0


def media_playlist(v: Variant) -> str:
    """A VOD media playlist over the variant's segments. Rewritten rather than kept
    from ffmpeg: its wall-clock PROGRAM-DATE-TIME tags would make every packaging
    run differ, and it does not mark the playlist VOD."""
    target_s = max(1, max(math.floor(d + 0.5) for _, d in v.segments))
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:6",
        f"#EXT-X-TARGETDURATION:{target_s}",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-MEDIA-SEQUENCE:1",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        f'#EXT-X-MAP:URI="{v.init_segment}"',
    ]
    for name, duration_s in v.segments:
        lines += [f"#EXTINF:{duration_s:.6f},", name]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def master_playlist(variants: list[Variant]) -> str:
    """The HLS master: video variants over one audio group, or audio-only variants."""
    videos = [v for v in variants if v.kind == "video"]
    audios = [v for v in variants if v.kind == "audio"]
    lines = ["#EXTM3U", "#EXT-X-VERSION:7", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if videos:
        audio = max(audios, key=lambda a: a.average_bps) if audios else None
        for a in audios:
            lines.append(
                f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{AUDIO_GROUP_ID}",'
                f'NAME="audio-{a.representation_id}",'
                f"DEFAULT={'YES' if a is audio else 'NO'},AUTOSELECT=YES,"
                f'CHANNELS="{a.channels or 2}",URI="{a.playlist}"'
            )
        for v in sorted(videos, key=lambda v: -v.peak_bps):
            fps = f",FRAME-RATE={v.frame_rate:.3f}" if v.frame_rate else ""
            if audio is None:
                bandwidth, codecs, group = v.peak_bps, v.codecs, ""
                average = v.average_bps
            else:
                bandwidth, codecs = v.peak_bps + audio.peak_bps, f"{v.codecs},{audio.codecs}"
                average, group = v.average_bps + audio.average_bps, f',AUDIO="{AUDIO_GROUP_ID}"'
            lines += [
                f"#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},AVERAGE-BANDWIDTH={average},"
                f'CODECS="{codecs}",RESOLUTION={v.width}x{v.height}{fps}{group}',
                v.playlist,
            ]
    else:
        for a in sorted(audios, key=lambda a: -a.peak_bps):
            lines += [
                f"#EXT-X-STREAM-INF:BANDWIDTH={a.peak_bps},"
                f'AVERAGE-BANDWIDTH={a.average_bps},CODECS="{a.codecs}"',
                a.playlist,
            ]
    return "\n".join(lines) + "\n"


def content_type(name: str) -> str:
    """The MIME type to store a package file with (the edge serves it as such)."""
    return CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream")
