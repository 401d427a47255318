#!/usr/bin/env python3
"""Generate a corpus of hostile inputs: files every job must refuse with a named error.

Usage: make_hostile_corpus.py OUT_DIR

Covers zero bytes, random bytes, text and HTML, truncated FLAC/MP3/MP4/WAV/Ogg,
wrong extensions, valid headers with garbage bodies, absurd declared durations,
sample rates, channel counts and dimensions, huge metadata, hostile file names
(path traversal, shell metacharacters, a leading dash, an ffmpeg protocol) and
decompression "bombs" (a few hundred KB of FLAC that decode to ten hours).
Samples are made with ffmpeg (list arguments only), everything else by writing
or patching bytes. Expected errors are the pipeline's: it stores originals under
their SHA-256 and probes content, never the file name. So a few entries, valid
media under a misleading name or with a huge but legal tag, must SUCCEED
(`SUCCEEDS`). Prints one line per file: expected outcome, size, name.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests"))
from make_sample import make_sample, write_multichannel  # noqa: E402
from media_corpus import make_bad_inputs  # noqa: E402

from mediamill.pipeline.ffmpeg import run_ffmpeg  # noqa: E402

SUCCEEDS = "succeeds"
Expected = str | frozenset[str]
Corpus = dict[str, tuple[Path, Expected]]

CORRUPT = "CorruptMediaError"
UNSUPPORTED = "UnsupportedMediaError"
# Over the default limits of config/settings.py (pipeline/limits.py).
TOO_LONG = "DurationTooLongError"
BOMB = "DecompressionBombError"
BAD_MEDIA = frozenset({CORRUPT, UNSUPPORTED})
MIB = 1024 * 1024
HUGE_TAG_BYTES = 4 * MIB
BOMB_HOURS = 10
BOMB_RATE_HZ = 48000
FLAC_MAX_BLOCK = 65535
HTML = (
    b"<!doctype html><html><head><title>Not found</title></head><body>"
    + (b"<p>404 - the page you asked for does not exist.</p>" * 100)
    + b"</body></html>\n"
)


def expected_failures(corpus: Corpus) -> dict[str, frozenset[str]]:
    """The entries that must fail, each with the error names acceptable for it."""
    return {
        name: frozenset({want}) if isinstance(want, str) else want
        for name, (_path, want) in corpus.items()
        if want != SUCCEEDS
    }


def wav_bytes(
    pcm: bytes,
    *,
    rate_hz: int = 48000,
    channels: int = 2,
    bits: int = 16,
    audio_format: int = 1,
    data_size: int | None = None,
    riff_size: int | None = None,
) -> bytes:
    """A canonical 44-byte-header WAV (format 1: integer PCM, 3: float); every header
    field can be made to lie."""
    block_align = channels * bits // 8
    data_size = len(pcm) if data_size is None else data_size
    riff_size = 36 + len(pcm) if riff_size is None else riff_size
    fmt = struct.pack(
        "<HHIIHH",
        audio_format,
        channels & 0xFFFF,
        rate_hz & 0xFFFFFFFF,
        (rate_hz * block_align) & 0xFFFFFFFF,
        block_align & 0xFFFF,
        bits,
    )
    return (
        b"RIFF"
        + struct.pack("<I", riff_size & 0xFFFFFFFF)
        + b"WAVEfmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"data"
        + struct.pack("<I", data_size & 0xFFFFFFFF)
        + pcm
    )


def wav_extensible(pcm: bytes, *, channels: int, channel_mask: int, rate_hz: int = 48000) -> bytes:
    """A WAVE_FORMAT_EXTENSIBLE 16-bit PCM WAV with the channel mask given, whether or
    not it names as many channels as there are (a layout no decoder can name)."""
    guid_pcm = bytes.fromhex("0100000000001000800000aa00389b71")
    block = channels * 2
    fmt = struct.pack(
        "<HHIIHHHHI", 0xFFFE, channels, rate_hz, rate_hz * block, block, 16, 22, 16, channel_mask
    ) + guid_pcm
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(pcm)) + pcm
    return b"RIFF" + struct.pack("<I", len(body)) + body


def sine_pcm(freq_hz: float, duration_s: float, rate_hz: int = 48000, channels: int = 2) -> bytes:
    """16-bit interleaved PCM of a sine at -12 dBFS."""
    t = np.arange(int(duration_s * rate_hz)) / rate_hz
    mono = (0.25 * 32767 * np.sin(2 * np.pi * freq_hz * t)).astype("<i2")
    return np.repeat(mono[:, None], channels, axis=1).tobytes()


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
        table.append(crc)
    return table


_CRC16 = _crc16_table()


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
    return crc


def _utf8_number(n: int) -> bytes:
    """FLAC's UTF-8-like coding of a frame number (up to 21 bits here)."""
    if n < 0x80:
        return bytes([n])
    if n < 0x800:
        return bytes([0xC0 | n >> 6, 0x80 | n & 0x3F])
    if n < 0x10000:
        return bytes([0xE0 | n >> 12, 0x80 | n >> 6 & 0x3F, 0x80 | n & 0x3F])
    return bytes([0xF0 | n >> 18, 0x80 | n >> 12 & 0x3F, 0x80 | n >> 6 & 0x3F, 0x80 | n & 0x3F])


def flac_silence_bomb(duration_s: float, *, declare_length: bool) -> bytes:
    """A legal stereo 16-bit 48 kHz FLAC of silence written frame by frame: each
    65535-sample frame is 18 bytes (two CONSTANT subframes), so ten hours fit in
    about 500 KB. Without `declare_length` STREAMINFO says "length unknown"."""
    frames = int(duration_s * BOMB_RATE_HZ) // FLAC_MAX_BLOCK
    total = frames * FLAC_MAX_BLOCK if declare_length else 0
    info = struct.pack(">HH", FLAC_MAX_BLOCK, FLAC_MAX_BLOCK) + b"\0" * 6
    # 20 bits rate, 3 bits channels-1, 5 bits bps-1, 36 bits total samples.
    packed = BOMB_RATE_HZ << 44 | 1 << 41 | 15 << 36 | total
    info += packed.to_bytes(8, "big") + b"\0" * 16  # MD5 unknown
    out = [b"fLaC", bytes([0x80, 0, 0, 34]), info]  # last metadata block: STREAMINFO
    for n in range(frames):
        # Fixed blocking; block size in 16 bits at the end; 48 kHz; 2 channels, 16 bits.
        header = bytes([0xFF, 0xF8, 0x7A, 0x18]) + _utf8_number(n)
        header += struct.pack(">H", FLAC_MAX_BLOCK - 1)
        header += bytes([_crc8(header)])
        frame = header + b"\0\0\0\0\0\0"  # two CONSTANT subframes of value 0
        out.append(frame + struct.pack(">H", _crc16(frame)))
    return b"".join(out)


def flac_with_block(flac: bytes, block_type: int, body: bytes) -> bytes:
    """`flac` with one more metadata block right after STREAMINFO (not the last one)."""
    assert flac[:4] == b"fLaC" and flac[4] & 0x7F == 0
    info_end = 8 + 34
    head = bytes([flac[4] & 0x7F]) + flac[5:8]  # STREAMINFO, no longer the last block
    block = bytes([block_type]) + len(body).to_bytes(3, "big") + body
    return b"fLaC" + head + flac[8:info_end] + block + flac[info_end:]


def vorbis_comment(tags: dict[str, str]) -> bytes:
    """A FLAC VORBIS_COMMENT block body."""
    vendor = b"hostile"
    body = struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", len(tags))
    for key, value in tags.items():
        entry = f"{key}={value}".encode()
        body += struct.pack("<I", len(entry)) + entry
    return body


def flac_total_samples(flac: bytes, total: int) -> bytes:
    """Rewrite STREAMINFO's 36-bit total sample count."""
    data = bytearray(flac)
    at = 8 + 10  # STREAMINFO body offset + (block sizes, frame sizes)
    packed = int.from_bytes(data[at : at + 8], "big")
    packed = packed & ~((1 << 36) - 1) | total & ((1 << 36) - 1)
    data[at : at + 8] = packed.to_bytes(8, "big")
    return bytes(data)


def syncsafe(n: int) -> bytes:
    """ID3v2's 28-bit size, 7 bits per byte."""
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


def id3v2(frames: bytes, declared_size: int | None = None) -> bytes:
    """An ID3v2.4 tag holding `frames`, declaring its own size (or a lie)."""
    size = len(frames) if declared_size is None else declared_size
    return b"ID3\x04\x00\x00" + syncsafe(size) + frames


def id3_txxx(description: str, value: bytes) -> bytes:
    body = b"\x03" + description.encode() + b"\0" + value  # UTF-8 text
    return b"TXXX" + syncsafe(len(body)) + b"\0\0" + body


def patch_boxes(mp4: bytes, box: bytes, patch: Callable[[bytearray, int], None]) -> bytes:
    """Apply `patch(data, body_offset)` at every occurrence of the `box` type."""
    data = bytearray(mp4)
    start = 0
    while (at := data.find(box, start)) >= 0:
        patch(data, at + 4)
        start = at + 4
    return bytes(data)


def garbage_mdat(mp4: bytes, noise: Callable[[int], bytes]) -> bytes:
    """The same boxes with the media data (`mdat` payload) replaced by noise."""
    at = mp4.find(b"mdat")
    end = at - 4 + int.from_bytes(mp4[at - 4 : at], "big")
    return mp4[: at + 4] + noise(end - at - 4) + mp4[end:]


def huge_mp4_duration(data: bytearray, body: int) -> None:
    """mvhd/mdhd: set the duration to the largest value the box version can hold."""
    if data[body] == 1:  # version 1: 64-bit times, duration after 4+8+8+4 bytes
        data[body + 24 : body + 32] = (2**62).to_bytes(8, "big")
    else:
        data[body + 16 : body + 20] = (2**32 - 1).to_bytes(4, "big")


def huge_stts_deltas(data: bytearray, body: int) -> None:
    """stts: every sample lasts 2^31 - 1 ticks (the sample table declares years)."""
    count = int.from_bytes(data[body + 4 : body + 8], "big")
    for i in range(count):
        at = body + 8 + 8 * i + 4
        data[at : at + 4] = (2**31 - 1).to_bytes(4, "big")


def huge_avc1_dimensions(data: bytearray, body: int) -> None:
    """avc1 sample entry: width and height after 6+2+16 bytes."""
    data[body + 24 : body + 28] = b"\xff\xff\xff\xff"


def huge_tkhd_dimensions(data: bytearray, body: int) -> None:
    """tkhd: the last 8 bytes are width and height in 16.16 fixed point."""
    size = int.from_bytes(data[body - 8 : body - 4], "big")
    end = body - 8 + size
    data[end - 8 : end] = b"\xff\xff\x00\x00" * 2


def make_hostile_corpus(out_dir: Path) -> Corpus:
    """Write the corpus into `out_dir`: name -> (path, expected error name, a set of
    acceptable names, or SUCCEEDS). Names are file names relative to `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus: Corpus = {}
    rng = np.random.default_rng(7)

    def noise(n: int) -> bytes:
        return rng.integers(0, 256, n, dtype=np.uint8).tobytes()

    def put(name: str, data: bytes, expected: Expected) -> Path:
        path = out_dir / name
        path.write_bytes(data)
        corpus[name] = (path, expected)
        return path

    with tempfile.TemporaryDirectory(prefix="hostile-src-") as tmp:
        src = Path(tmp)
        flac = make_sample(src / "s.flac", kind="music", duration_s=2.0, timeout_s=60).read_bytes()
        mp3 = make_sample(src / "s.mp3", kind="music", duration_s=2.0, timeout_s=60).read_bytes()
        m4a = make_sample(src / "s.m4a", kind="sine", duration_s=2.0, timeout_s=60).read_bytes()
        ogg = make_sample(src / "s.ogg", kind="sine", duration_s=2.0, timeout_s=60).read_bytes()
        mp4_path = src / "v.mp4"
        run_ffmpeg(
            [
                *("-y", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=25:duration=1"),
                *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"),
                str(mp4_path),
            ],
            timeout_s=60,
        )
        mp4 = mp4_path.read_bytes()
        faststart = src / "vf.mp4"
        run_ffmpeg(
            ["-y", "-i", str(mp4_path), "-c", "copy", "-movflags", "+faststart", str(faststart)],
            timeout_s=60,
        )
        mp4_faststart = faststart.read_bytes()
        odd = _odd_but_valid(src)
        # make_bad_inputs: empty, random, text, truncated FLAC and MP3, subtitles only.
        bad = make_bad_inputs(src / "bad", src / "s.flac", src / "s.mp3")
        for name, (path, expected) in bad.items():
            put(name, path.read_bytes(), expected)
    wav = wav_bytes(sine_pcm(440, 1.0))

    # Nothing, noise and text under media names.
    put("empty.mp3", b"", CORRUPT)
    put("blank-lines.wav", b"\n" * 4096, UNSUPPORTED)
    put("random.flac", noise(64 * 1024), UNSUPPORTED)
    put("random.mp4", noise(64 * 1024), UNSUPPORTED)
    put("page.html", HTML, UNSUPPORTED)
    put("page-named.mp3", HTML, UNSUPPORTED)
    put("json-named.wav", b'{"hello": "world", "list": [1, 2, 3]}\n' * 50, UNSUPPORTED)
    put("one-byte.flac", b"f", BAD_MEDIA)

    # Truncated: cut after a third, or right after the header.
    put("truncated.wav", wav[: len(wav) // 3], CORRUPT)
    put("truncated.m4a", m4a[: len(m4a) // 3], BAD_MEDIA)  # moov at the end: lost
    put("truncated-moov-first.mp4", mp4_faststart[: len(mp4_faststart) // 2], BAD_MEDIA)
    put("truncated.mp4", mp4[: len(mp4) // 2], BAD_MEDIA)
    put("truncated.ogg", ogg[: len(ogg) // 3], BAD_MEDIA)
    put("header-only.flac", flac[: 8 + 34], BAD_MEDIA)
    put("header-only.wav", wav[:44], CORRUPT)

    # Valid header, garbage body.
    put("garbage-body.flac", flac[:8192] + noise(128 * 1024), CORRUPT)
    put("garbage-body.mp3", mp3[:4096] + noise(128 * 1024), CORRUPT)
    put("garbage-body.ogg", ogg[:4096] + noise(64 * 1024), BAD_MEDIA)
    put("garbage-body.m4a", garbage_mdat(m4a, noise), CORRUPT)

    # Absurd declared durations: headers promising hours over a few bytes.
    put("wav-declares-hours.wav", wav_bytes(sine_pcm(330, 0.2), data_size=2**32 - 2), CORRUPT)
    put(
        "wav-riff-size-huge.wav",
        wav_bytes(sine_pcm(880, 0.2), riff_size=2**32 - 1, data_size=2**31 - 1),
        CORRUPT,
    )
    put("flac-declares-weeks.flac", flac_total_samples(flac, 2**36 - 1), TOO_LONG)
    put(
        "mp4-header-declares-centuries.mp4",
        patch_boxes(patch_boxes(mp4, b"mvhd", huge_mp4_duration), b"mdhd", huge_mp4_duration),
        # ffmpeg takes the track's duration from its sample table, which is honest; the
        # clip is 64x64 video without audio: one video-only rung at its own size.
        SUCCEEDS,
    )
    put("m4a-samples-last-years.m4a", patch_boxes(m4a, b"stts", huge_stts_deltas), CORRUPT)

    # Absurd sample rates, channel counts and dimensions.
    pcm = sine_pcm(550, 0.5)
    put("rate-zero.wav", wav_bytes(pcm, rate_hz=0), BAD_MEDIA)
    put("rate-1hz.wav", wav_bytes(pcm[:4000], rate_hz=1), BAD_MEDIA)
    put("rate-2ghz.wav", wav_bytes(pcm, rate_hz=2**31 - 1), BAD_MEDIA)
    put("no-channels.wav", wav_bytes(pcm, channels=0), BAD_MEDIA)
    put("bits-zero.wav", wav_bytes(pcm, bits=0), BAD_MEDIA)
    nan = struct.pack("<f", float("nan")) * 2 * 48000
    put("nan-samples.wav", wav_bytes(nan, bits=32, audio_format=3), CORRUPT)
    put(
        "dimensions-65535.y4m",
        b"YUV4MPEG2 W65535 H65535 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + noise(4096),
        BAD_MEDIA,
    )
    put(
        "dimensions-65535.mp4",
        patch_boxes(patch_boxes(mp4, b"avc1", huge_avc1_dimensions), b"tkhd", huge_tkhd_dimensions),
        # The H.264 stream's own SPS says 64x64, and that is what counts: below the
        # ladder, it gets one video-only 64p rung.
        SUCCEEDS,
    )

    # Huge metadata: a tag claiming 256 MB over a short file; legal multi-MB tags.
    put("id3-claims-256mb.mp3", id3v2(b"", declared_size=2**28 - 1) + mp3[:20000], BAD_MEDIA)
    big = "x" * HUGE_TAG_BYTES
    put(
        "huge-vorbis-comment.flac",
        flac_with_block(flac, 4, vorbis_comment({"COMMENT": big})),
        SUCCEEDS,
    )
    put("huge-id3.mp3", id3v2(id3_txxx("junk", big.encode())) + mp3, SUCCEEDS)

    # Wrong extensions: valid media under another format's name (content decides).
    put("flac-named.mp3", flac_total_samples(flac, 0), SUCCEEDS)
    put("mp3-named.wav", mp3, SUCCEEDS)

    # Hostile names (content: valid or bad; the name must not matter either way).
    put("$(rm -rf ~);.wav", wav_bytes(sine_pcm(660, 1.0)), SUCCEEDS)
    put("-y.flac", flac_with_block(flac, 1, b"\0" * 16), SUCCEEDS)  # PADDING block
    put("a b\n;|&.mp3", mp3[: len(mp3) // 4], CORRUPT)
    put("..\\..\\etc\\passwd.flac", noise(8192), UNSUPPORTED)
    put("pipe:1.wav", b"RIFF not really\n" * 64, UNSUPPORTED)
    put("`reboot` 'q' \"dq\".ogg", ogg[:2000], BAD_MEDIA)
    put("\u202egnp.flac", HTML, UNSUPPORTED)  # right-to-left override
    put(("long-" * 48) + ".wav", wav[: len(wav) // 2], CORRUPT)  # a 244-byte name
    # Path traversal: the name holds ../ (a path, since a name cannot hold "/").
    (out_dir / "etc").mkdir(exist_ok=True)
    (out_dir / "sub" / "dir").mkdir(parents=True, exist_ok=True)
    (out_dir / "etc" / "passwd.flac").write_bytes(flac_with_block(flac, 1, b"\0" * 32))
    corpus["sub/dir/../../etc/passwd.flac"] = (
        out_dir / "sub" / "dir" / ".." / ".." / "etc" / "passwd.flac",
        SUCCEEDS,
    )

    # Odd but valid (issue 13): many channels, extreme shapes, edit lists, chains,
    # many tracks, a few milliseconds. Each goes through, or fails with its named error.
    for name, (data, expected) in odd.items():
        put(name, data, expected)
    t = np.arange(48000) / 48000
    tone = (0.2 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    put(
        "mask-names-2-of-6.wav",
        wav_extensible(np.repeat(tone[:, None], 6, axis=1).tobytes(), channels=6, channel_mask=3),
        SUCCEEDS,
    )
    put(
        "mask-reserved-bits.wav",
        wav_extensible(
            np.repeat(tone[:, None], 4, axis=1).tobytes(), channels=4, channel_mask=0xF0000000
        ),
        SUCCEEDS,
    )
    floats = np.tile(np.array([np.nan, np.inf, -np.inf, 0.5], dtype="<f4"), 24000)
    put("nan-and-infinity.wav", wav_bytes(floats.tobytes(), bits=32, audio_format=3), CORRUPT)

    # Bombs: tiny files that decode to hours (declared, then undeclared length).
    hours_s = BOMB_HOURS * 3600.0
    # Refused from the header before decoding; the undeclared one once decoding passes
    # the media its size allows (file bits / MEDIAMILL_MIN_MEDIA_BITRATE_BPS).
    put("bomb-10h-silence.flac", flac_silence_bomb(hours_s, declare_length=True), BOMB)
    put("bomb-undeclared-silence.flac", flac_silence_bomb(hours_s, declare_length=False), BOMB)
    return corpus


def _odd_but_valid(src: Path) -> dict[str, tuple[bytes, Expected]]:
    """Files made with ffmpeg that are legal but unusual, with their expected outcome."""
    out: dict[str, tuple[bytes, Expected]] = {}
    rng = np.random.default_rng(13)
    t = np.arange(int(1.5 * 48000)) / 48000
    for channels, layout, ext in (
        (8, "7.1", ".flac"), (12, "7.1.4", ".wav"), (16, None, ".opus"), (24, None, ".wav"),
    ):  # fmt: skip
        data = np.stack(
            [0.1 * np.sin(2 * np.pi * (150 + 40 * i) * t) + 0.01 * rng.standard_normal(t.size)
             for i in range(channels)],
            axis=1,
        )  # fmt: skip
        path = write_multichannel(src / f"{channels}ch{ext}", data, 48000, layout)
        out[f"{channels}-channels{ext}"] = (path.read_bytes(), SUCCEEDS)

    def made(name: str, args: list[str]) -> bytes:
        path = src / name
        run_ffmpeg(["-y", *args, str(path)], timeout_s=60)
        return path.read_bytes()

    video = ("-c:v", "libx264", "-preset", "ultrafast")
    out["1x1.mp4"] = (
        made("1x1.mp4", ["-f", "lavfi", "-i", "testsrc2=size=2x2:rate=10:duration=1",
                         "-vf", "scale=1:1", *video, "-pix_fmt", "yuv444p"]),
        "UnsupportedMediaError",  # too small to encode; it "succeeded" with nothing to play
    )  # fmt: skip
    out["10000x10.mp4"] = (
        made("10000x10.mp4", ["-f", "lavfi", "-i", "testsrc2=size=10000x10:rate=10:duration=1",
                              *video, "-pix_fmt", "yuv420p"]),
        "DimensionsTooLargeError",
    )  # fmt: skip
    made("tone.m4a", ["-f", "lavfi", "-i", "sine=440:duration=2", "-c:a", "aac"])
    out["edit-list-negative-start.mp4"] = (
        made("neg.mp4", ["-itsoffset", "-0.5", "-i", str(src / "tone.m4a"), "-c", "copy"]),
        SUCCEEDS,
    )
    first = made("o1.ogg", ["-f", "lavfi", "-i", "sine=440:duration=1:sample_rate=44100",
                            "-c:a", "libvorbis"])  # fmt: skip
    second = made("o2.ogg", ["-f", "lavfi", "-i", "sine=880:duration=1:sample_rate=48000",
                             "-c:a", "libvorbis"])  # fmt: skip
    # FFmpeg cannot demux the second link; it used to be dropped in silence.
    out["chained-44k-then-48k.ogg"] = (first + second, "UnsupportedMediaError")
    tracks = [a for f in (220, 330, 440, 550, 660) for a in ("-f", "lavfi", "-i", f"sine={f}:d=2")]
    maps = [a for i in range(5) for a in ("-map", str(i))]
    out["five-audio-tracks.mkv"] = (made("five.mkv", [*tracks, *maps, "-c:a", "flac"]), SUCCEEDS)
    out["50-ms.wav"] = (
        made("short.wav", ["-f", "lavfi", "-i", "sine=440:duration=0.05", "-c:a", "pcm_s16le"]),
        SUCCEEDS,  # shorter than one 400 ms block: loudness null, not an error
    )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out_dir", type=Path)
    a = p.parse_args()
    started = time.monotonic()
    corpus = make_hostile_corpus(a.out_dir)
    total = 0
    for name, (path, expected) in corpus.items():
        size = path.stat().st_size
        total += size
        want = expected if isinstance(expected, str) else "|".join(sorted(expected))
        print(f"{want:45} {size:>10} {name!r}")
    failing = len(expected_failures(corpus))
    print(
        f"{len(corpus)} files ({failing} must fail), {total / MIB:.1f} MiB, "
        f"{time.monotonic() - started:.1f} s -> {os.fspath(a.out_dir)}"
    )


if __name__ == "__main__":
    main()
