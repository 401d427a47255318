#!/usr/bin/env python3
"""Generate test and demo media with ffmpeg's lavfi sources (no files shipped).

Usage: make_sample.py OUT [--kind music|speech|sine|surround|video] [--duration-s S]
       [--rate HZ] [--channels N] [--variant N]
The codec follows OUT's extension (.flac .wav .mp3 .ogg .opus .m4a .mp4).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import ffmpeg
import numpy as np
import soundfile

from mediamill.pipeline.ffmpeg import ffmpeg_binary, run_ffmpeg

AUDIO_CODEC_ARGS = {
    ".flac": {"acodec": "flac"},
    ".wav": {"acodec": "pcm_s16le"},
    ".mp3": {"acodec": "libmp3lame", "audio_bitrate": "192k"},
    ".ogg": {"acodec": "libvorbis", "audio_bitrate": "160k"},
    ".opus": {"acodec": "libopus", "audio_bitrate": "128k"},
    ".m4a": {"acodec": "aac", "audio_bitrate": "192k"},
}


def _music_channel(
    duration_s: float, rate: int, seed: int, variant: int = 0
) -> ffmpeg.nodes.FilterableStream:
    """Chords plus pink noise with a slow tremolo: broadband, with a loudness range.
    `variant` changes the noise (and a little the pitch), so tracks differ in content."""
    tones = [
        ffmpeg.input(f"sine=frequency={f}:sample_rate={rate}:duration={duration_s}", f="lavfi")
        for f in (110 * seed, 220 + variant, 277.18, 329.63, 440, 880 + seed)
    ]
    noise_seed = seed + 1000 * variant
    noise = ffmpeg.input(
        f"anoisesrc=color=pink:sample_rate={rate}:duration={duration_s}:amplitude=0.3:"
        f"seed={noise_seed}",
        f="lavfi",
    )
    mix = ffmpeg.filter([*tones, noise], "amix", inputs=len(tones) + 1, normalize=0)
    return mix.filter("tremolo", f=0.2 * seed, d=0.6).filter("volume", 0.25)


def _music(
    duration_s: float, rate: int, channels: int = 2, variant: int = 0
) -> ffmpeg.nodes.FilterableStream:
    """Mono, or one different mix per channel (real stereo or 5.1, not copies)."""
    if channels == 1:
        return _music_channel(duration_s, rate, 1, variant)
    layout = {2: "stereo", 6: "5.1"}[channels]
    mixes = [_music_channel(duration_s, rate, seed, variant) for seed in range(1, channels + 1)]
    return ffmpeg.filter(mixes, "join", inputs=channels, channel_layout=layout)


def _speech(duration_s: float, rate: int, channels: int = 2) -> ffmpeg.nodes.FilterableStream:
    """Band-limited noise bursts separated by silence, like speech with pauses."""
    noise = ffmpeg.input(
        f"anoisesrc=color=brown:sample_rate={rate}:duration={duration_s}:amplitude=0.5:seed=3",
        f="lavfi",
    )
    gated = noise.filter("volume", volume="if(lt(mod(t,1.7),1.1),1,0)", eval="frame")
    return gated.filter("bandpass", f=700, width_type="h", w=1200)


def _sine(duration_s: float, rate: int, channels: int = 2) -> ffmpeg.nodes.FilterableStream:
    return ffmpeg.input(f"sine=frequency=997:sample_rate={rate}:duration={duration_s}", f="lavfi")


def make_sample(
    out: Path,
    *,
    kind: str = "music",
    duration_s: float = 10.0,
    rate: int = 48000,
    channels: int = 2,
    timeout_s: float = 600.0,
    variant: int = 0,
) -> Path:
    """Write a generated sample to `out` and return it. `variant` (music only) makes
    distinct content from the same recipe: 0 is the classic sample."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ext = out.suffix.lower()
    if kind == "video":
        video = ffmpeg.input(f"testsrc2=size=1280x720:rate=30:duration={duration_s}", f="lavfi")
        audio = _music(duration_s, rate, channels)
        stream = ffmpeg.output(
            video,
            audio,
            str(out),
            vcodec="libx264",
            preset="ultrafast",
            pix_fmt="yuv420p",
            acodec="aac",
            audio_bitrate="128k",
            ac=channels,
            g=60,
        )
    else:
        source = {"music": _music, "speech": _speech, "sine": _sine, "surround": _music}[kind]
        if kind == "surround":
            channels = 6
        if kind == "music":
            audio = _music(duration_s, rate, channels, variant)
        else:
            audio = source(duration_s, rate, channels)
        stream = ffmpeg.output(audio, str(out), ac=channels, ar=rate, **AUDIO_CODEC_ARGS[ext])
    args = stream.overwrite_output().compile(cmd=ffmpeg_binary())[1:]
    run_ffmpeg(args, timeout_s=timeout_s)
    return out


# Encoder arguments for multichannel files: FLAC stops at 8 channels and ffmpeg's AAC
# encoder at its standard layouts; Opus's mapping family 255 takes up to 255 channels.
MULTICHANNEL_CODEC_ARGS = {
    ".wav": ["-c:a", "pcm_s16le"],
    ".flac": ["-c:a", "flac"],
    ".opus": ["-c:a", "libopus", "-b:a", "512k", "-mapping_family", "255"],
    ".m4a": ["-c:a", "aac", "-b:a", "512k"],
}


def write_multichannel(
    out: Path, samples: np.ndarray, rate: int, layout: str | None = None
) -> Path:
    """Write `samples` (frames x channels, float, within +-1) to `out` with the channel
    layout `layout` (an ffmpeg name such as "7.1.4"), or with unnamed channels when
    None (WAV, Opus). The codec follows the extension (MULTICHANNEL_CODEC_ARGS)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    channels = samples.shape[1]
    if layout is None and out.suffix.lower() == ".wav":
        # ffmpeg would write the default layout of the count into the WAV's channel
        # mask; libsndfile writes none.
        soundfile.write(out, samples, rate, subtype="PCM_16")
        return out
    raw = out.with_name(out.name + ".f32")
    np.ascontiguousarray(samples, dtype="<f4").tofile(raw)
    try:
        run_ffmpeg(
            [
                "-y", "-f", "f32le", "-ar", str(rate),
                "-ch_layout", layout or f"{channels}c", "-i", str(raw),
                *MULTICHANNEL_CODEC_ARGS[out.suffix.lower()], str(out),
            ],
            timeout_s=120,
        )
    finally:
        raw.unlink(missing_ok=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument(
        "--kind", default="music", choices=["music", "speech", "sine", "surround", "video"]
    )
    p.add_argument("--duration-s", type=float, default=10.0)
    p.add_argument("--rate", type=int, default=48000)
    p.add_argument("--channels", type=int, default=2)
    p.add_argument("--variant", type=int, default=0, help="music: distinct content per value")
    a = p.parse_args()
    print(
        make_sample(
            a.out,
            kind=a.kind,
            duration_s=a.duration_s,
            rate=a.rate,
            channels=a.channels,
            variant=a.variant,
        )
    )


if __name__ == "__main__":
    main()
