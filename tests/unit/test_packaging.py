"""Packaging: HLS + DASH over one set of CMAF segments, checked with the m3u8 and
mpegdash parsers and read back end to end by ffmpeg's HLS and DASH demuxers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import m3u8
import pytest
from mpegdash.parser import MPEGDASHParser
from support import make_sample

from mediamill.pipeline.analysis import analyse_file
from mediamill.pipeline.ffmpeg import ffmpeg_binary
from mediamill.pipeline.packaging import Track, package_tracks
from mediamill.pipeline.transcode import plan_output, produce
from mediamill.schemas.errors import InvalidRequestError
from mediamill.schemas.packages import package_id_for
from mediamill.schemas.renditions import parse_audio_profile, parse_video_ladder

DURATION_S = 9.5  # 4 + 4 + 1.5 s segments
SEGMENT_S = 4


def _renditions(src: Path, specs, out_dir: Path) -> tuple[list[Track], float]:
    source = analyse_file(src)
    outputs = [
        plan_output(s, out_dir / f"r{i}.{s.format.extension}", source.loudness)
        for i, s in enumerate(specs)
    ]
    produce(src, outputs, source.media, timeout_s=300)
    rate = source.media.video.frame_rate if source.media.video else None
    return [Track(o.path, o.spec, rate) for o in outputs], source.media.duration_ms / 1000


@pytest.fixture(scope="module")
def video_package(tmp_path_factory):
    d = tmp_path_factory.mktemp("video-package")
    src = make_sample(d / "clip.mp4", kind="video", duration_s=DURATION_S)
    tracks, duration_s = _renditions(src, parse_video_ladder("720:2000000,360:600000"), d)
    result = package_tracks(tracks, tracks[:1], d / "pkg", segment_s=SEGMENT_S, timeout_s=120)
    return d / "pkg", result, tracks, duration_s


@pytest.fixture(scope="module")
def audio_package(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio-package")
    src = make_sample(d / "music.flac", kind="music", duration_s=DURATION_S)
    specs = parse_audio_profile("aac:64000:2,aac:128000:2,aac:96000:1")
    tracks, duration_s = _renditions(src, specs, d)
    result = package_tracks([], tracks, d / "pkg", segment_s=SEGMENT_S, timeout_s=120)
    return d / "pkg", result, tracks, duration_s


def _avc_codecs(path: Path) -> str:
    """RFC 6381 `avc1.PPCCLL` from the stream's avcC record (profile, constraints, level)."""
    with av.open(str(path)) as c:
        extradata = c.streams.video[0].codec_context.extradata
    return "avc1." + extradata[1:4].hex()


def _aac_codecs(path: Path) -> str:
    with av.open(str(path)) as c:
        profile = c.streams.audio[0].codec_context.profile
    assert profile == "LC"
    return "mp4a.40.2"


def _relative(uri: str) -> bool:
    return "://" not in uri and not uri.startswith("/")


def _hls_segments(pkg: Path, playlist_uri: str) -> tuple[m3u8.M3U8, list[float]]:
    media = m3u8.load(str(pkg / playlist_uri))
    assert media.is_endlist and media.playlist_type == "vod"
    assert media.segment_map and _relative(media.segment_map[0].uri)
    assert (pkg / media.segment_map[0].uri).is_file()
    for seg in media.segments:
        assert _relative(seg.uri) and (pkg / seg.uri).is_file(), seg.uri
        assert seg.duration <= media.target_duration + 0.5
    return media, [seg.duration for seg in media.segments]


def _dash_files(pkg: Path) -> dict[str, tuple[str, list[str], float]]:
    """Representation id -> (codecs, files the SegmentTemplate expands to, seconds)."""
    mpd = MPEGDASHParser.parse(str(pkg / "manifest.mpd"))
    assert mpd.type == "static"
    found = {}
    for aset in mpd.periods[0].adaptation_sets:
        for rep in aset.representations:
            tpl = rep.segment_templates[0]
            rid = rep.id
            files = [tpl.initialization.replace("$RepresentationID$", rid)]
            number, total = tpl.start_number or 1, 0
            for s in tpl.segment_timelines[0].Ss:
                for _ in range((s.r or 0) + 1):
                    files.append(
                        tpl.media.replace("$RepresentationID$", rid).replace(
                            "$Number%05d$", f"{number:05d}"
                        )
                    )
                    number += 1
                    total += s.d
            found[rid] = (rep.codecs, files, total / tpl.timescale)
    return found


def test_video_package_hls_master_and_dash_share_one_set_of_segments(video_package):
    pkg, result, tracks, duration_s = video_package
    master = m3u8.load(str(pkg / "master.m3u8"))
    assert master.is_variant and len(master.playlists) == 2
    (audio_media,) = [m for m in master.media if m.type == "AUDIO"]
    assert audio_media.group_id == "audio" and _relative(audio_media.uri)
    _, audio_durations = _hls_segments(pkg, audio_media.uri)
    assert sum(audio_durations) == pytest.approx(duration_s, abs=0.05)
    aac = _aac_codecs(tracks[0].path)
    hls_files = set()
    video_boundaries = []
    for playlist, track in zip(master.playlists, tracks, strict=True):  # highest first
        info = playlist.stream_info
        assert _relative(playlist.uri)
        assert info.codecs == f"{_avc_codecs(track.path)},{aac}"
        with av.open(str(track.path)) as c:
            stream = c.streams.video[0]
            assert info.resolution == (stream.width, stream.height)
        assert info.frame_rate == pytest.approx(30.0)
        assert info.audio == "audio"
        assert info.bandwidth >= info.average_bandwidth > 0
        media, durations = _hls_segments(pkg, playlist.uri)
        assert sum(durations) == pytest.approx(duration_s, abs=0.05)
        assert all(d == pytest.approx(SEGMENT_S) for d in durations[:-1])
        video_boundaries.append(durations)
        hls_files |= {media.segment_map[0].uri, *(s.uri for s in media.segments)}
        # BANDWIDTH is the peak segment bitrate (video + audio), as HLS defines it.
        seg_bps = [8 * (pkg / s.uri).stat().st_size / s.duration for s in media.segments]
        assert info.bandwidth >= max(seg_bps)
    assert video_boundaries[0] == video_boundaries[1], "segments aligned across renditions"
    audio_media_pl = m3u8.load(str(pkg / audio_media.uri))
    hls_files |= {audio_media_pl.segment_map[0].uri, *(s.uri for s in audio_media_pl.segments)}

    dash = _dash_files(pkg)
    assert len(dash) == 3
    dash_files = set()
    for codecs, files, seconds in dash.values():
        assert codecs in {_avc_codecs(t.path) for t in tracks} | {aac}
        assert seconds == pytest.approx(duration_s, abs=0.05)
        dash_files |= set(files)
    assert dash_files == hls_files, "one copy of the media serves both protocols"
    media_files = {f for f in result.files if f.endswith(".m4s")}
    assert media_files == hls_files
    assert result.segment_count == len({f for f in hls_files if f.startswith("seg-")})
    assert result.duration_ms == pytest.approx(duration_s * 1000, abs=50)
    assert result.size_bytes == sum((pkg / f).stat().st_size for f in result.files)


def _decode_with_ffmpeg(manifest: Path) -> dict[int, tuple[str, int, float]]:
    """Decode every stream of `manifest` with the ffmpeg CLI (its HLS or DASH demuxer):
    stream index -> (media type, frames, seconds decoded), from `-f framecrc`."""
    out = subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-i", str(manifest), "-map", "0", "-f", "framecrc", "-"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    kinds, bases, frames = {}, {}, {}
    for line in out.splitlines():
        if line.startswith("#tb "):
            index, base = line[4:].split(": ")
            num, den = base.split("/")
            bases[int(index)] = int(num) / int(den)
        elif line.startswith("#media_type "):
            index, kind = line[len("#media_type ") :].split(": ")
            kinds[int(index)] = kind
        elif line and not line.startswith("#"):
            index, _dts, _pts, duration, *_ = (f.strip() for f in line.split(","))
            n, total = frames.get(int(index), (0, 0))
            frames[int(index)] = (n + 1, total + int(duration))
    return {i: (kinds[i], n, total * bases[i]) for i, (n, total) in frames.items()}


@pytest.mark.parametrize("manifest", ["master.m3u8", "manifest.mpd"])
def test_ffmpeg_reads_the_package_back_and_decodes_it(video_package, manifest):
    pkg, _, tracks, duration_s = video_package
    streams = _decode_with_ffmpeg(pkg / manifest)
    videos = [v for v in streams.values() if v[0] == "video"]
    audios = [v for v in streams.values() if v[0] == "audio"]
    assert len(videos) == len(tracks) and len(audios) >= 1
    for _, frames, seconds in videos:
        assert frames == pytest.approx(duration_s * 30, abs=2)
        assert seconds == pytest.approx(duration_s, abs=0.1)
    for _, _, seconds in audios:
        assert seconds == pytest.approx(duration_s, abs=0.1)


def test_audio_only_package_is_an_aac_ladder(audio_package):
    pkg, _, tracks, duration_s = audio_package
    master = m3u8.load(str(pkg / "master.m3u8"))
    assert not master.media
    assert len(master.playlists) == 3
    bandwidths = [p.stream_info.bandwidth for p in master.playlists]
    assert bandwidths == sorted(bandwidths, reverse=True)
    for playlist in master.playlists:
        assert playlist.stream_info.codecs == "mp4a.40.2"
        assert playlist.stream_info.resolution is None
        _, durations = _hls_segments(pkg, playlist.uri)
        assert sum(durations) == pytest.approx(duration_s, abs=0.05)
    assert {t.spec.bitrate_bps for t in tracks} == {64000, 128000, 96000}
    for codecs, _, seconds in _dash_files(pkg).values():
        assert codecs == _aac_codecs(tracks[0].path)
        assert seconds == pytest.approx(duration_s, abs=0.05)
    for manifest in ("master.m3u8", "manifest.mpd"):
        streams = _decode_with_ffmpeg(pkg / manifest)
        assert {kind for kind, _, _ in streams.values()} == {"audio"}
        assert len(streams) == 3
        for _, _, seconds in streams.values():
            assert seconds == pytest.approx(duration_s, abs=0.1)


def test_package_id_derives_from_the_ladder():
    a = package_id_for(["mp4-720p-2000000-2ch", "mp4-360p-600000-2ch"], 4)
    assert a == package_id_for(["mp4-360p-600000-2ch", "mp4-720p-2000000-2ch"], 4)
    assert a != package_id_for(["mp4-720p-2000000-2ch"], 4)
    assert a != package_id_for(["mp4-720p-2000000-2ch", "mp4-360p-600000-2ch"], 6)
    assert a.startswith("pkg-") and len(a) == 20


def test_refuses_segments_that_split_keyframe_intervals_and_a_dirty_directory(
    video_package, tmp_path
):
    _, _, tracks, _ = video_package
    with pytest.raises(InvalidRequestError, match="multiple"):
        package_tracks(tracks, tracks[:1], tmp_path / "a", segment_s=5, timeout_s=60)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "stale.m4s").write_bytes(b"x")
    with pytest.raises(InvalidRequestError, match="not empty"):
        package_tracks(tracks, tracks[:1], tmp_path / "b", segment_s=4, timeout_s=60)


def test_a_video_without_audio_is_a_video_only_package(tmp_path):
    """Screen recordings and B-roll: video-only rungs (no AAC track), packaged with no
    audio group in the HLS master and a single (video) adaptation set in the MPD."""
    src = tmp_path / "silent.mp4"
    subprocess.run(
        [ffmpeg_binary(), "-v", "error", "-f", "lavfi", "-i",
         "testsrc2=size=640x360:rate=30:duration=5", "-c:v", "libx264", "-pix_fmt", "yuv420p",
         str(src)],
        check=True, timeout=60,
    )  # fmt: skip
    specs = [s.model_copy(update={"channels": None}) for s in parse_video_ladder("360:600000")]
    tracks, _ = _renditions(src, [*specs, *parse_video_ladder("240:300000")], tmp_path)
    with av.open(str(tracks[0].path)) as c:
        assert len(c.streams.audio) == 0 and len(c.streams.video) == 1
    result = package_tracks(tracks, [], tmp_path / "pkg", segment_s=4, timeout_s=120)
    master = m3u8.load(str(tmp_path / "pkg" / "master.m3u8"))
    assert not master.media and len(master.playlists) == 2
    for playlist in master.playlists:
        assert playlist.stream_info.codecs.startswith("avc1.") and "," not in (
            playlist.stream_info.codecs
        )
        assert playlist.stream_info.audio is None
    assert {v.kind for v in result.variants} == {"video"}
    mpd = MPEGDASHParser.parse(str(tmp_path / "pkg" / "manifest.mpd"))
    assert len(mpd.periods[0].adaptation_sets) == 1
    with pytest.raises(InvalidRequestError, match="at least one rendition"):
        package_tracks([], [], tmp_path / "empty", segment_s=4, timeout_s=60)
