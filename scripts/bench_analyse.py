#!/usr/bin/env python3
"""Benchmark `mediamill analyse` against ffmpeg's ebur128, pyloudnorm and sha256sum.

For a generated 10-minute and 60-minute 48 kHz stereo FLAC, each command runs as
a child process; wall time and peak RSS come from wait4(). Results are ratios
against the references run in this same process, printed as a markdown table
and, with --write-readme, written into README.md between the bench markers.

    python scripts/bench_analyse.py [--minutes 10 60] [--repeat 3] [--write-readme]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from benchlib import write_readme_block  # noqa: E402
from make_sample import make_sample  # noqa: E402

from mediamill.pipeline.ffmpeg import ffmpeg_binary  # noqa: E402

PYLOUDNORM = """
import sys, soundfile, pyloudnorm
data, rate = soundfile.read(sys.argv[1], always_2d=True)
print(pyloudnorm.Meter(rate, filter_class="DeMan").integrated_loudness(data))
"""
HASH = """
import sys
from mediamill.pipeline.hashing import sha256_file
print(sha256_file(sys.argv[1])[0])
"""


@dataclass
class Run:
    wall_s: float
    peak_rss_mb: float
    stdout: str


def run(cmd: list[str]) -> Run:
    """Run `cmd` to completion; wall time and the child's own peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Drain both pipes while waiting, so a chatty child never blocks on a full pipe;
    # wait4 (not Popen.wait) to get this child's own rusage.
    captured: dict[str, bytes] = {}
    readers = [
        threading.Thread(target=lambda n=name, f=pipe: captured.__setitem__(n, f.read()))
        for name, pipe in (("out", proc.stdout), ("err", proc.stderr))
    ]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    out, err = captured["out"], captured["err"]
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed: {err.decode()[-2000:]}")
    return Run(wall, usage.ru_maxrss / 1024, out.decode())


def best_of(cmd: list[str], repeat: int) -> Run:
    runs = [run(cmd) for _ in range(repeat)]
    return Run(
        statistics.median(r.wall_s for r in runs),
        max(r.peak_rss_mb for r in runs),
        runs[-1].stdout,
    )


def bench(path: Path, repeat: int) -> dict:
    size_mb = path.stat().st_size / 1e6
    mediamill = shutil.which("mediamill") or str(Path(sys.executable).with_name("mediamill"))
    ours = best_of([mediamill, "analyse", str(path), "--json"], repeat)
    ffmpeg = best_of(
        [
            ffmpeg_binary(),
            "-hide_banner",
            "-nostats",
            "-i",
            str(path),
            "-af",
            "ebur128=peak=true:framelog=verbose",
            "-f",
            "null",
            "-",
        ],
        repeat,
    )
    pyln = best_of([sys.executable, "-c", PYLOUDNORM, str(path)], 1)
    sha_ref = best_of(["sha256sum", str(path)], repeat)
    sha_ours = best_of([sys.executable, "-c", HASH, str(path)], repeat)
    asset = json.loads(ours.stdout)
    assert sha_ours.stdout.strip() == sha_ref.stdout.split()[0] == asset["originalAssetId"]
    return {
        "file": path.name,
        "sizeMB": size_mb,
        "ours": ours,
        "ffmpeg": ffmpeg,
        "pyloudnorm": pyln,
        "sha256sum": sha_ref,
        "hash": sha_ours,
        "lufs": asset["lufs"],
        "pyloudnormLufs": float(pyln.stdout),
    }


def _mark(met: bool) -> str:
    return "✓" if met else "✗"


def table(results: list[dict]) -> str:
    lines = [
        "| file | `mediamill analyse` | ffmpeg ebur128 | time vs ffmpeg (target ≤ 1.0x, issue 13) "
        "| pyloudnorm (whole file) | time vs pyloudnorm | peak RSS ours / ffmpeg / pyloudnorm "
        "(target < 150 MB) | hashing MB/s ours / sha256sum (target ≥ 0.8x) "
        "| LUFS ours / pyloudnorm |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        ours, ff, pl = r["ours"], r["ffmpeg"], r["pyloudnorm"]
        ours_mbs = r["sizeMB"] / r["hash"].wall_s
        ref_mbs = r["sizeMB"] / r["sha256sum"].wall_s
        vs_ffmpeg, hashing = ours.wall_s / ff.wall_s, ours_mbs / ref_mbs
        lines.append(
            f"| {r['file']} ({r['sizeMB']:.0f} MB) | {ours.wall_s:.2f} s | {ff.wall_s:.2f} s "
            f"| **{vs_ffmpeg:.2f}x** {_mark(vs_ffmpeg <= 1.0)} | {pl.wall_s:.2f} s "
            f"| {ours.wall_s / pl.wall_s:.2f}x "
            f"| **{ours.peak_rss_mb:.0f}** {_mark(ours.peak_rss_mb < 150)} "
            f"/ {ff.peak_rss_mb:.0f} / {pl.peak_rss_mb:.0f} MB "
            f"| {ours_mbs:.0f} / {ref_mbs:.0f} (**{hashing:.2f}x** {_mark(hashing >= 0.8)}) "
            f"| {r['lufs']:.2f} / {r['pyloudnormLufs']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=int, nargs="+", default=[10, 60])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--data-dir", type=Path, default=ROOT / "bench-data")
    p.add_argument("--write-readme", action="store_true")
    a = p.parse_args()
    results = []
    for minutes in a.minutes:
        path = a.data_dir / f"music-{minutes}min-48k.flac"
        if not path.exists():
            print(f"generating {path} ...", file=sys.stderr)
            make_sample(path, kind="music", duration_s=minutes * 60, timeout_s=3600)
        subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # warm cache
        print(f"benchmarking {path.name} ...", file=sys.stderr)
        results.append(bench(path, a.repeat if minutes <= 10 else 1))
    cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    text = (
        f"Measured by `scripts/bench_analyse.py` on this machine ({cpu} cores); "
        "medians of repeated runs, each command a child process "
        "(wall time, peak RSS from wait4).\n\n" + table(results)
    )
    print(text)
    if a.write_readme:
        write_readme_block("bench_analyse", text)


if __name__ == "__main__":
    main()
