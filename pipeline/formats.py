"""Which containers and codecs MediaMill accepts, and their MIME types.

ffmpeg recognises far more than we should process (a text file is a `tty`
video to it); anything outside these sets is an `UnsupportedMediaError`.
"""

from __future__ import annotations

AUDIO_CODECS = frozenset(
    {
        "aac",
        "ac3",
        "eac3",
        "alac",
        "flac",
        "mp2",
        "mp3",
        "mp3float",
        "opus",
        "vorbis",
        "wavpack",
        "wmav1",
        "wmav2",
        "wmapro",
        "amr_nb",
        "amr_wb",
        "dts",
        "truehd",
        "pcm_s8",
        "pcm_u8",
        "pcm_s16le",
        "pcm_s16be",
        "pcm_s24le",
        "pcm_s24be",
        "pcm_s32le",
        "pcm_s32be",
        "pcm_f32le",
        "pcm_f32be",
        "pcm_f64le",
        "pcm_f64be",
        "pcm_alaw",
        "pcm_mulaw",
        "libopus",
        "libvorbis",
    }
)

VIDEO_CODECS = frozenset(
    {
        "h264",
        "hevc",
        "av1",
        "vp8",
        "vp9",
        "mpeg4",
        "mpeg2video",
        "mpeg1video",
        "prores",
        "mjpeg",
        "dnxhd",
        "theora",
        "wmv2",
        "wmv3",
        "vc1",
        "libdav1d",
        "libvpx",
        "libvpx-vp9",
    }
)

# ffmpeg demuxer name -> our container name.
CONTAINERS = {
    "mp3": "mp3",
    "flac": "flac",
    "ogg": "ogg",
    "wav": "wav",
    "w64": "w64",
    "aiff": "aiff",
    "caf": "caf",
    "aac": "aac",
    "ac3": "ac3",
    "eac3": "eac3",
    "wv": "wavpack",
    "asf": "asf",
    "avi": "avi",
    "flv": "flv",
    "mpegts": "mpegts",
    "mpeg": "mpeg",
    "mov,mp4,m4a,3gp,3g2,mj2": "mp4",
    "matroska,webm": "matroska",
}

_AUDIO_MIME = {
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "wav": "audio/wav",
    "w64": "audio/x-w64",
    "aiff": "audio/aiff",
    "caf": "audio/x-caf",
    "aac": "audio/aac",
    "ac3": "audio/ac3",
    "eac3": "audio/eac3",
    "wavpack": "audio/x-wavpack",
    "asf": "audio/x-ms-wma",
    "mp4": "audio/mp4",
    "matroska": "audio/x-matroska",
    "webm": "audio/webm",
}

_VIDEO_MIME = {
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "matroska": "video/x-matroska",
    "webm": "video/webm",
    "avi": "video/x-msvideo",
    "flv": "video/x-flv",
    "mpegts": "video/mp2t",
    "mpeg": "video/mpeg",
    "asf": "video/x-ms-asf",
    "ogg": "video/ogg",
}

_WEBM_CODECS = frozenset({"vp8", "vp9", "av1", "opus", "vorbis"})


def container_name(demuxer: str, major_brand: str | None, codecs: set[str]) -> str | None:
    """Our name for a container, refining ffmpeg's families (mp4/mov, matroska/webm)."""
    name = CONTAINERS.get(demuxer)
    if name == "mp4" and major_brand and major_brand.strip() == "qt":
        return "mov"
    if name == "matroska" and codecs and codecs <= _WEBM_CODECS:
        return "webm"
    return name


def mime_type(container: str, has_video: bool) -> str:
    """The MIME type of an original, from our container name."""
    if has_video:
        return _VIDEO_MIME.get(container, "video/octet-stream")
    return _AUDIO_MIME.get(container, "audio/octet-stream")
