#!/usr/bin/env python3
"""Benchmark packaging: its time against the encode of the renditions it packages,
and the bytes it stores against the renditions themselves.

Two workloads, the same sources as `bench_transcode.py`: the default video ladder
from a 60-second 1080p30 clip (package: every rung's video + one AAC track), and
the AAC ladder from a 10-minute 48 kHz stereo FLAC (audio-only package). For each,
the renditions are encoded once (`produce`, one ffmpeg run, outputs measured), then
packaged (`package_tracks`: stream copy into CMAF segments, HLS + DASH manifests)
--repeat times; medians are reported.

The package is one copy of the media for both protocols, so its bytes should be
close to the media it carries; the target is at most 1.05x the sum of its
renditions. For video, each rung file also carries its own copy of the audio, and
the package keeps just one, so the media actually carried is shown too.

    python scripts/bench_package.py [--workloads video audio] [--repeat N] [--write-readme]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from bench_transcode import audio_source, video_source  # noqa: E402
from benchlib import write_readme_block  # noqa: E402

from mediamill.config.settings import Settings  # noqa: E402
from mediamill.pipeline.analysis import analyse_file  # noqa: E402
from mediamill.pipeline.packaging import Track, package_tracks  # noqa: E402
from mediamill.pipeline.quality import resolve  # noqa: E402
from mediamill.pipeline.transcode import plan_output, produce  # noqa: E402
from mediamill.schemas.media import Asset  # noqa: E402
from mediamill.schemas.renditions import RenditionFormat, parse_audio_profile  # noqa: E402
from mediamill.workers.renditions import default_specs  # noqa: E402

TIMEOUT_S = 3600.0


def _stream_bytes(path: Path, kind: str) -> int:
    """Bytes of the packets of the file's first `kind` stream."""
    with av.open(str(path)) as c:
        stream = c.streams.video[0] if kind == "video" else c.streams.audio[0]
        return sum(p.size for p in c.demux(stream) if p.size)


def bench(name: str, source: Path, out_dir: Path, repeat: int) -> dict:
    settings = Settings()
    analysis = analyse_file(source)
    asset = Asset.from_analysis(f"bench-{name}", source.stat().st_size, analysis)
    if name == "video":
        wanted = default_specs(settings, asset)
    else:
        wanted = parse_audio_profile(settings.package_audio_ladder)
    specs = [resolve(spec, asset, False)[0] for spec in wanted]
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    outputs = [
        plan_output(s, out_dir / f"r{i}.{s.format.extension}", analysis.loudness)
        for i, s in enumerate(specs)
    ]
    print(f"  {name}: encoding {len(specs)} renditions ...", file=sys.stderr)
    start = time.perf_counter()
    produce(source, outputs, analysis.media, timeout_s=TIMEOUT_S)
    encode_s = time.perf_counter() - start
    rate = analysis.media.video.frame_rate if analysis.media.video else None
    tracks = [Track(o.path, o.spec, min(rate, 60.0) if rate else None) for o in outputs]
    video = [t for t in tracks if t.spec.format is RenditionFormat.MP4]
    audio = video[:1] if video else tracks
    package_times, result = [], None
    for r in range(repeat):
        pkg = out_dir / f"package-{r}"
        start = time.perf_counter()
        result = package_tracks(
            video, audio, pkg, segment_s=settings.package_segment_s, timeout_s=TIMEOUT_S
        )
        package_times.append(time.perf_counter() - start)
    renditions_bytes = sum(o.path.stat().st_size for o in outputs)
    if video:
        carried = sum(_stream_bytes(t.path, "video") for t in video) + _stream_bytes(
            audio[0].path, "audio"
        )
    else:
        carried = sum(_stream_bytes(t.path, "audio") for t in audio)
    return {
        "name": name,
        "source": source.name,
        "renditions": len(specs),
        "encode_s": encode_s,
        "package_s": statistics.median(package_times),
        "package_bytes": result.size_bytes,
        "renditions_bytes": renditions_bytes,
        "carried_bytes": carried,
        "files": len(result.files),
        "segments": result.segment_count,
        "duration_s": result.duration_ms / 1000,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| workload | renditions | encode (one pass, measured) | package (HLS + DASH) "
        "| package / encode | files (segments) | package bytes | sum of renditions "
        "| package / renditions (target ≤ 1.05x) | media carried | package / media carried |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["package_bytes"] / r["renditions_bytes"]
        lines.append(
            f"| {r['name']}: {r['source']} | {r['renditions']} | {r['encode_s']:.2f} s "
            f"| {r['package_s']:.2f} s | {r['package_s'] / r['encode_s']:.3f}x "
            f"| {r['files']} ({r['segments']}) | {r['package_bytes'] / 1e6:.2f} MB "
            f"| {r['renditions_bytes'] / 1e6:.2f} MB "
            f"| **{ratio:.3f}x** {'✓' if ratio <= 1.05 else '✗'} "
            f"| {r['carried_bytes'] / 1e6:.2f} MB "
            f"| {r['package_bytes'] / r['carried_bytes']:.3f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", nargs="+", choices=["video", "audio"], default=["video", "audio"])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--data-dir", type=Path, default=ROOT / "bench-data")
    p.add_argument("--write-readme", action="store_true")
    a = p.parse_args()
    sources = {"video": video_source, "audio": audio_source}
    rows = [
        bench(name, sources[name](a.data_dir), a.data_dir / "package" / name, a.repeat)
        for name in a.workloads
    ]
    text = (
        f"Measured by `scripts/bench_package.py` on this machine ({os.cpu_count()} cores): "
        "the default video ladder from a generated 60-second 1920x1080 30 fps clip, and "
        "the AAC ladder from a generated 10-minute 48 kHz stereo FLAC. Encode is the "
        "renditions' one ffmpeg pass with every output measured (`produce`); package is "
        f"`package_tracks` (stream copy into CMAF segments, HLS + DASH), median of {a.repeat}. "
        "Media carried: the packets of the streams the package holds (every rung's video "
        "and one audio track; the rung files each carry their own audio copy).\n\n" + table(rows)
    )
    print(text)
    if a.write_readme:
        write_readme_block("bench_package", text, heading="Packaging")


if __name__ == "__main__":
    main()
