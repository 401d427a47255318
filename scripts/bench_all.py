#!/usr/bin/env python3
"""Run every benchmark and write one markdown report (docs/performance.md).

Each benchmark script runs as a child process with its own arguments: analysis
(`bench_analyse.py`), transcode (`bench_transcode.py`), packaging
(`bench_package.py`), HTTP API (`bench_api.py`), playback (`bench_playback.py`), view
analytics (`bench_analytics.py`) and throughput
(`bench_throughput.py`). Each prints its markdown to stdout, which is collected;
its stderr (progress) passes through. The report starts with the machine (cores,
CPU model, RAM, Python and ffmpeg versions, load average before and after each
benchmark, so a busy machine shows) and a summary of the targets each table marks
met (✓) or missed (✗), then each benchmark's text.

A failing benchmark does not stop the others: its section says so, with the tail of
its stderr, and the exit status is 1.

    python scripts/bench_all.py [--write-readme]     # full run, ~30 min on 2 cores
    python scripts/bench_all.py --quick              # smoke run: small inputs, minutes

--quick writes to bench-data/performance-quick.md (never over the real report) and
refuses --write-readme: its numbers are not measurements. --write-readme also
refreshes each benchmark's table in docs/performance.md from the same run.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
REPORT = ROOT / "docs" / "performance.md"
QUICK_REPORT = ROOT / "bench-data" / "performance-quick.md"
STDERR_TAIL_LINES = 40


@dataclass(frozen=True)
class Bench:
    """One benchmark script and how bench_all runs it."""

    key: str
    title: str
    script: str
    targets: str
    full_args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ()
    takes_data_dir: bool = True

    def command(self, *, quick: bool, data_dir: Path | None, write_readme: bool) -> list[str]:
        args = [sys.executable, str(SCRIPTS / self.script)]
        args += self.quick_args if quick else self.full_args
        if data_dir is not None and self.takes_data_dir:
            args += ["--data-dir", str(data_dir)]
        if write_readme:
            args.append("--write-readme")
        return args


# Full runs use each script's defaults (the settings its report table was measured
# with); quick runs the smallest inputs each script accepts.
BENCHES = (
    Bench(
        "analysis",
        "Analysis",
        "bench_analyse.py",
        "time ≤ 1.0x ffmpeg ebur128; peak RSS < 150 MB; hashing ≥ 0.8x sha256sum",
        quick_args=("--minutes", "1", "--repeat", "1"),
    ),
    Bench(
        "transcode",
        "Transcode",
        "bench_transcode.py",
        "full stage ≤ 0.7x separate ffmpeg commands and ≤ 1.1x one hand-written command",
        quick_args=("--workloads", "audio", "--repeat", "1"),
    ),
    Bench(
        "packaging",
        "Packaging",
        "bench_package.py",
        "package bytes ≤ 1.05x the renditions it carries",
        quick_args=("--workloads", "audio", "--repeat", "1"),
    ),
    Bench(
        "api",
        "HTTP API",
        "bench_api.py",
        "p99 `POST /v0/jobs` < 25 ms, `GET /v0/jobs/{id}` < 10 ms at 100 requests/s",
        quick_args=("--duration-s", "3"),
        takes_data_dir=False,
    ),
    Bench(
        "playback",
        "Playback heartbeats",
        "bench_playback.py",
        "heartbeat p99 < 20 ms at 1,000/s, one API process; every accepted heartbeat stored",
        quick_args=("--duration-s", "3", "--step-from", "500", "--step-to", "500"),
        takes_data_dir=False,
    ),
    Bench(
        "analytics",
        "View analytics",
        "bench_analytics.py",
        "p99 < 200 ms for total-views (summary, day), unique-devices/location, retention, qoe "
        "over 90 days of 1,000,000 views",
        quick_args=("--views", "2000", "--requests", "10"),
        takes_data_dir=False,
    ),
    Bench(
        "throughput",
        "Throughput",
        "bench_throughput.py",
        "default workers ≥ 1.0x the ffmpeg CLI one by one; 2 pinned workers ≥ 1.8x 1 pinned",
        quick_args=(
            "--tracks",
            "4",
            "--min-duration-s",
            "5",
            "--max-duration-s",
            "6",
            "--repeat",
            "1",
        ),
    ),
)


@dataclass
class BenchResult:
    bench: Bench
    command: list[str]
    returncode: int
    wall_s: float
    stdout: str
    stderr_tail: list[str] = field(default_factory=list)
    load_before: str = ""
    load_after: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def load_average() -> str:
    """The 1-minute load average (how busy the machine was)."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def run_bench(bench: Bench, command: list[str]) -> BenchResult:
    """Run one benchmark: its stdout collected, its stderr shown and its tail kept."""
    print(f"== {bench.title}: {shlex.join(command)}", file=sys.stderr, flush=True)
    load_before = load_average()
    start = time.perf_counter()
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)

    def tee() -> None:
        for line in proc.stderr:
            sys.stderr.write(line)
            tail.append(line.rstrip("\n"))

    reader = threading.Thread(target=tee, daemon=True)
    reader.start()
    stdout = proc.stdout.read()
    proc.wait()
    reader.join()
    wall_s = time.perf_counter() - start
    print(f"== {bench.title}: exit {proc.returncode} after {wall_s:.0f} s", file=sys.stderr)
    return BenchResult(
        bench, command, proc.returncode, wall_s, stdout.strip(), list(tail), load_before,
        load_average(),
    )  # fmt: skip


def marks(text: str) -> tuple[int, int]:
    """Targets a benchmark's text marks met (✓) and missed (✗)."""
    return text.count("✓"), text.count("✗")


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.splitlines()[0].strip() if out.strip() else "?"


def machine_info() -> dict[str, str]:
    """What the numbers depend on: cores, CPU, memory, software versions, commit."""
    from mediamill.pipeline.ffmpeg import ffmpeg_binary

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        platform.processor() or "?",
    )
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem_kb = next(
        (int(ln.split()[1]) for ln in meminfo.splitlines() if ln.startswith("MemTotal")), 0
    )
    commit = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    binary = ffmpeg_binary()
    return {
        "cores": f"{os.cpu_count()} (nproc {_first_line(['nproc'])})",
        "CPU": model,
        "RAM": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "ffmpeg": f"{_first_line([binary, '-version'])} (`{Path(binary).name}`)",
        "commit": commit + (" + uncommitted changes" if dirty else ""),
    }


def render_report(
    results: list[BenchResult],
    machine: dict[str, str],
    *,
    command: str,
    quick: bool,
    started: datetime,
    total_s: float,
) -> str:
    """The report: header, machine, target summary, then each benchmark's own text."""
    lines = ["# MediaMill performance report", ""]
    if quick:
        lines += [
            "> **Smoke run (`--quick`)**: small inputs and single repeats, to check that every "
            "benchmark runs. These numbers are not measurements.",
            "",
        ]
    lines += [
        f"Generated by `{command}` on {started:%Y-%m-%d %H:%M} UTC in {total_s / 60:.1f} min. "
        "Each benchmark reports ratios against references run in the same script on the same "
        "machine; timings are never asserted in tests.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine.items()),
        "",
        "## Targets",
        "",
        "| benchmark | targets | met ✓ | missed ✗ | took | load avg before / after |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        met, missed = marks(r.stdout) if r.ok else (0, 0)
        status = "" if r.ok else f" **failed (exit {r.returncode})**"
        lines.append(
            f"| [{r.bench.title}](#{_anchor(r.bench.title)}){status} | {r.bench.targets} "
            f"| {met} | {missed} | {r.wall_s / 60:.1f} min | {r.load_before} / {r.load_after} |"
        )
    for r in results:
        lines += ["", f"## {r.bench.title}", "", f"`{_display(r.command)}`", ""]
        if r.ok:  # between markers, so a lone `--write-readme` run replaces just this
            block = Path(r.bench.script).stem
            text = r.stdout or "(the benchmark printed nothing)"
            lines.append(f"<!-- {block}:start -->\n{text}\n<!-- {block}:end -->")
        else:
            lines += [
                f"**Failed** with exit status {r.returncode} after {r.wall_s:.0f} s. "
                "The end of its stderr:",
                "",
                "```",
                *r.stderr_tail,
                "```",
            ]
    return "\n".join(lines) + "\n"


def _anchor(title: str) -> str:
    """GitHub's heading anchor: lower case, spaces to dashes, punctuation dropped."""
    return "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c in "-_")


def _display(command: list[str]) -> str:
    """A command as a reader would type it: `python scripts/...`, relative paths."""
    shown = ["python" if command[0] == sys.executable else command[0]]
    for arg in command[1:]:
        shown.append(os.path.relpath(arg, ROOT) if arg.startswith(str(ROOT)) else arg)
    return shlex.join(shown)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: small inputs, minutes")
    p.add_argument(
        "--only", nargs="+", choices=[b.key for b in BENCHES], help="run just these benchmarks"
    )
    p.add_argument("--output", type=Path, help=f"default {os.path.relpath(REPORT, ROOT)}")
    p.add_argument("--data-dir", type=Path, help="passed to the benchmarks (default bench-data)")
    p.add_argument(
        "--write-readme", action="store_true", help="each benchmark also updates its README table"
    )
    a = p.parse_args()
    if a.quick and a.write_readme:
        p.error("--quick numbers are not measurements: they never go into docs/performance.md")
    output = a.output or (QUICK_REPORT if a.quick else REPORT)
    started, clock = datetime.now(UTC), time.perf_counter()
    machine = machine_info()
    results = [
        run_bench(
            bench,
            bench.command(quick=a.quick, data_dir=a.data_dir, write_readme=a.write_readme),
        )
        for bench in BENCHES
        if a.only is None or bench.key in a.only
    ]
    report = render_report(
        results,
        machine,
        command=_display([sys.executable, *sys.argv]),
        quick=a.quick,
        started=started,
        total_s=time.perf_counter() - clock,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report)
    print(report)
    print(f"wrote {output}", file=sys.stderr)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
