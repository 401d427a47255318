#!/usr/bin/env python3
"""Benchmark the transcode stage against separate and hand-written ffmpeg commands.

Two workloads: the default audio profile from a generated 10-minute 48 kHz stereo
FLAC, and the default video ladder (rungs above the source left out, as the worker
does) from a generated 60-second 1920x1080 30 fps H.264 + AAC clip. For each:

- MediaMill, full stage: a child process running what the worker runs after
  analysis, `plan_output` + `produce` (one ffmpeg process, then every output
  measured). Also MediaMill encode-only: the same child with just
  `run_ffmpeg(build_args(...))`, so the cost of the measurement pass shows.
- (a) the same encodes as separate ffmpeg commands run one after another, each
  from `build_args(source, [output], media)` (identical encoder settings).
- (b) one hand-written multi-output ffmpeg command (asplit/split in
  -filter_complex, one -map per output), checked to carry the same filters and
  encoder options as MediaMill's.

Every command is a child process; wall time and peak RSS come from wait4().
Timings are medians of --repeat runs (default 3 for audio, 1 for video) after
warming the page cache. The outputs of every approach are decoded and compared
before anything is reported. Results print as a markdown table and, with
--write-readme, go into README.md between the bench_transcode markers.

    python scripts/bench_transcode.py [--workloads audio video] [--repeat N] [--write-readme]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from benchlib import write_readme_block  # noqa: E402
from make_sample import make_sample  # noqa: E402

from mediamill.config.settings import Settings  # noqa: E402
from mediamill.pipeline.analysis import analyse_file  # noqa: E402
from mediamill.pipeline.ffmpeg import ffmpeg_binary, run_ffmpeg  # noqa: E402
from mediamill.pipeline.quality import resolve  # noqa: E402
from mediamill.pipeline.transcode import Output, build_args, plan_output  # noqa: E402
from mediamill.schemas.media import AnalysisResult, Asset  # noqa: E402
from mediamill.schemas.renditions import RenditionFormat, RenditionSpec  # noqa: E402
from mediamill.workers.renditions import default_specs  # noqa: E402

TIMEOUT_S = 3600.0
SAMPLE_S = 0.05
# What run_ffmpeg puts before the arguments when no progress is read.
FFMPEG_PREFIX = ["-hide_banner", "-nostdin"]

# The MediaMill side, in its own interpreter: what the transcode actor does between
# loading the job and storing the outputs ("full"), or only its one ffmpeg run
# ("encode"). Prints JSON with its times: wrappers around the `run_ffmpeg` and
# `analyse_file` that `produce` calls record when each call starts and ends (the
# outputs may be measured side by side, so the pass is first start to last end).
CHILD = """
import json, sys, time
started = time.perf_counter()
from pathlib import Path
import mediamill.pipeline.transcode as transcode
from mediamill.pipeline.ffmpeg import run_ffmpeg
from mediamill.pipeline.transcode import build_args, plan_output, produce
from mediamill.schemas.media import LoudnessStats, MediaInfo
from mediamill.schemas.renditions import RenditionSpec

mode, job = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
source, out_dir = Path(job["source"]), Path(job["outDir"])
media = MediaInfo.model_validate(job["media"])
loudness = LoudnessStats.model_validate(job["loudness"])
specs = [RenditionSpec.model_validate(s) for s in job["specs"]]
calls = {"run_ffmpeg": [], "analyse_file": []}

def timed(name):
    original = getattr(transcode, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            calls[name].append((start, time.perf_counter()))

    setattr(transcode, name, wrapper)

timed("run_ffmpeg")
timed("analyse_file")
ready = time.perf_counter()
outputs = [
    plan_output(s, out_dir / f"{i}.{s.format.extension}", loudness) for i, s in enumerate(specs)
]
measured, encodes = [], []
if mode == "full":
    produced = produce(
        source, outputs, media, timeout_s=job["timeoutS"], on_progress=lambda _: None
    )
    measured = [p.measured.model_dump(mode="json", by_alias=True) for p in produced]
    encodes = [p.encodes for p in produced]
else:
    run_ffmpeg(
        build_args(source, outputs, media),
        timeout_s=job["timeoutS"],
        on_progress=lambda _: None,
        duration_s=(media.duration_ms or 0) / 1000,
    )
done = time.perf_counter()
print(json.dumps({
    "importS": ready - started,
    "stageS": done - ready,
    "encodeS": sum(end - start for start, end in calls["run_ffmpeg"]),
    "measureS": (
        max(end for _, end in calls["analyse_file"]) - min(s for s, _ in calls["analyse_file"])
        if calls["analyse_file"] else 0.0
    ),
    "measureSumS": sum(end - start for start, end in calls["analyse_file"]),
    "measured": measured,
    "encodes": encodes,
}))
"""


@dataclass
class Run:
    wall_s: float
    cpu_s: float  # user + system time of the process and the children it waited for
    peak_rss_mb: dict[str, float]  # by process kind: "ffmpeg", "python"
    stdout: str


class TreeSampler(threading.Thread):
    """Peak RSS of a process and all its descendants, each on its own: the VmHWM of
    every process in the tree, read from /proc every SAMPLE_S until stopped.

    Not wait4's ru_maxrss: on Linux a child's ru_maxrss starts from the high-water
    mark of the process that spawned it (inherited at fork/exec), so a small ffmpeg
    started by a 110 MB Python reports 110 MB. VmHWM belongs to the exec'd image.
    Growth in the last SAMPLE_S before a process exits can be missed."""

    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.peaks: dict[int, tuple[str, int]] = {}  # pid -> (comm, VmHWM kB)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            self.done.wait(SAMPLE_S)

    def sample(self) -> None:
        stack = [self.root]
        while stack:
            pid = stack.pop()
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                tasks = os.listdir(f"/proc/{pid}/task")
                children = [
                    int(c)
                    for t in tasks
                    for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()
                ]
            except (FileNotFoundError, ProcessLookupError):
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            name = fields["Name"].strip()
            hwm = int(fields["VmHWM"].split()[0]) if "VmHWM" in fields else 0
            seen_name, seen_hwm = self.peaks.get(pid, (name, 0))
            # A new name is a new image (exec): the old one's numbers were not its own.
            self.peaks[pid] = (name, hwm if seen_name != name else max(seen_hwm, hwm))
            stack.extend(children)

    def by_kind(self) -> dict[str, float]:
        peaks: dict[str, float] = {}
        for name, kb in self.peaks.values():
            kind = next((k for k in ("ffmpeg", "python") if name.startswith(k)), name)
            peaks[kind] = max(peaks.get(kind, 0.0), kb / 1024)
        return peaks


def run(cmd: list[str]) -> Run:
    """Run `cmd` to completion; wall time and the peak RSS of each of its processes."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    # Popen returns once the child has exec'd, so the sampler never sees our own image.
    sampler = TreeSampler(proc.pid)
    sampler.start()
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
    sampler.done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    out, err = captured["out"], captured["err"]
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed: {err.decode()[-2000:]}")
    return Run(wall, usage.ru_utime + usage.ru_stime, sampler.by_kind(), out.decode())


@dataclass
class Timing:
    """One approach: wall time per repeat; peak RSS (MB) per process kind, over repeats."""

    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    rss: dict[str, float] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def add(self, wall_s: float, cpu_s: float, **rss_mb: float) -> None:
        self.walls.append(wall_s)
        self.cpus.append(cpu_s)
        for name, mb in rss_mb.items():
            self.rss[name] = max(self.rss.get(name, 0.0), mb)

    @property
    def wall_s(self) -> float:
        return statistics.median(self.walls)

    @property
    def cpu_s(self) -> float:
        return statistics.median(self.cpus)


@dataclass
class Workload:
    name: str
    source: Path
    analysis: AnalysisResult
    specs: list[RenditionSpec]
    out_dir: Path

    def outputs(self, approach: str) -> list[Output]:
        folder = self.out_dir / approach
        folder.mkdir(parents=True, exist_ok=True)
        return [
            plan_output(s, folder / f"{i}.{s.format.extension}", self.analysis.loudness)
            for i, s in enumerate(self.specs)
        ]


# --- sources -----------------------------------------------------------------------


def audio_source(data_dir: Path) -> Path:
    path = data_dir / "music-10min-48k.flac"
    if not path.exists():
        print(f"generating {path} ...", file=sys.stderr)
        make_sample(path, kind="music", duration_s=600, timeout_s=3600)
    return path


def video_source(data_dir: Path) -> Path:
    """60 s of testsrc2 at 1920x1080 30 fps (H.264 High, veryfast, CRF 20, 2 s GOP)
    with the generated stereo music as 192 kb/s AAC."""
    path = data_dir / "video-60s-1080p30.mp4"
    if path.exists():
        return path
    print(f"generating {path} ...", file=sys.stderr)
    music = make_sample(data_dir / "video-60s-audio.flac", kind="music", duration_s=60)
    partial = path.with_name(path.stem + ".partial.mp4")
    run_ffmpeg(
        [
            "-y",
            "-f", "lavfi",
            "-i", "testsrc2=size=1920x1080:rate=30:duration=60",
            "-i", str(music),
            "-map", "0:v:0",
            "-map", "1:a:0",
            "-c:v", "libx264",
            "-preset", "veryfast",
            "-crf", "20",
            "-pix_fmt", "yuv420p",
            "-g", "60",
            "-c:a", "aac",
            "-b:a", "192k",
            "-shortest",
            "-movflags", "+faststart",
            str(partial),
        ],
        timeout_s=3600,
    )  # fmt: skip
    partial.rename(path)
    music.unlink()
    return path


def workload(name: str, source: Path, data_dir: Path) -> Workload:
    """The renditions the worker would plan for `source` after analysis."""
    analysis = analyse_file(source)
    asset = Asset.from_analysis(f"bench-{name}", source.stat().st_size, analysis)
    specs = [resolve(spec, asset, False)[0] for spec in default_specs(Settings(), asset)]
    return Workload(name, source, analysis, specs, data_dir / "transcode" / name)


# --- (b): the hand-written command -------------------------------------------------

_AUDIO_ENCODERS = {
    RenditionFormat.MP3: ["-c:a", "libmp3lame"],
    RenditionFormat.OGG: ["-c:a", "libvorbis"],
    RenditionFormat.OPUS: ["-c:a", "libopus"],
    RenditionFormat.AAC: ["-c:a", "aac", "-movflags", "+faststart"],
    RenditionFormat.FLAC: ["-c:a", "flac"],
    RenditionFormat.WAV: ["-c:a", "pcm_s16le"],
}


def handwritten_args(w: Workload, outputs: list[Output]) -> list[str]:
    """One ffmpeg command for every output, written out by hand (no build_args)."""
    media = w.analysis.media
    if any(o.gain_db or o.limit_dbtp is not None for o in outputs):
        raise SystemExit("the hand-written reference covers renditions without loudness targets")
    n = len(outputs)
    videos = [i for i, o in enumerate(outputs) if o.spec.format is RenditionFormat.MP4]
    fps = min(media.video.frame_rate or 30.0, 60.0) if media.video else 30.0
    gop = str(round(fps * 2))
    graph = [f"[0:a:0]asplit={n}" + "".join(f"[a{i}]" for i in range(n))]
    if videos:
        graph.append(f"[0:v:0]split={len(videos)}" + "".join(f"[v{i}]" for i in videos))
    per_output: list[list[str]] = []
    for i, out in enumerate(outputs):
        spec = out.spec
        layout = "mono" if spec.channels == 1 else "stereo"
        rate = spec.sample_rate_hz or media.sample_rate_hz or 48000
        graph.append(
            f"[a{i}]aresample=ochl={layout}:osf=flt:osr={rate}:rematrix_maxval=1000.0,"
            f"aformat=channel_layouts={layout}[ao{i}]"
        )
        if spec.format is RenditionFormat.MP4:
            scale = f"scale=-2:{spec.height}"
            if media.video and (media.video.frame_rate or 0) > 60:
                scale += ",fps=60"
            graph.append(f"[v{i}]{scale}[vo{i}]")
            bitrate = spec.bitrate_bps or 1_000_000
            per_output.append(
                [
                    "-map", f"[vo{i}]",
                    "-map", f"[ao{i}]",
                    "-c:v", "libx264",
                    "-preset", "veryfast",
                    "-profile:v", "high",
                    "-pix_fmt", "yuv420p",
                    "-b:v", str(bitrate),
                    "-maxrate", str(int(bitrate * 1.1)),
                    "-bufsize", str(bitrate * 2),
                    "-g", gop,
                    "-keyint_min", gop,
                    "-sc_threshold", "0",
                    "-force_key_frames", "expr:gte(t,n_forced*2)",
                    "-c:a", "aac",
                    "-b:a", "128000",
                    "-movflags", "+faststart",
                    str(out.path),
                ]
            )  # fmt: skip
        else:
            bitrate = ["-b:a", str(spec.bitrate_bps)] if spec.bitrate_bps else []
            per_output.append(
                ["-map", f"[ao{i}]", *_AUDIO_ENCODERS[spec.format], *bitrate, str(out.path)]
            )
    args = ["-y", "-i", str(w.source), "-filter_complex", ";".join(graph)]
    for chunk in per_output:
        args += chunk
    return args


def _split_top(text: str, sep: str) -> list[str]:
    """Split a filtergraph on `sep` outside quotes and parentheses."""
    parts, depth, quote, current = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _output_plans(args: list[str]) -> list[dict]:
    """Per output file of an ffmpeg command: for each -map, the filters from the input
    stream to it (split filters left out), and the output options."""
    graph = args[args.index("-filter_complex") + 1] if "-filter_complex" in args else ""
    made_by: dict[str, tuple[str, list[str]]] = {}
    for segment in _split_top(graph, ";"):
        m = re.fullmatch(r"((?:\[[^\]]*\])+)(.*?)((?:\[[^\]]*\])+)", segment)
        if m is None:
            raise SystemExit(f"cannot read filtergraph segment {segment!r}")
        inputs = re.findall(r"\[([^\]]*)\]", m[1])
        filters = [f for f in _split_top(m[2], ",") if not re.match(r"a?split\b", f)]
        for label in re.findall(r"\[([^\]]*)\]", m[3]):
            made_by[label] = (inputs[0], filters)
    plans, current = [], {"maps": [], "options": {}}
    i = 0
    while i < len(args):
        token = args[i]
        if token == "-y":
            i += 1
        elif token.startswith("-"):
            value = args[i + 1]
            i += 2
            if token == "-map":
                label, chain = value.strip("[]"), []
                while label in made_by:
                    label, filters = made_by[label]
                    chain = filters + chain
                current["maps"].append((label, *chain))
            elif token not in ("-i", "-filter_complex"):
                current["options"][token] = value
        else:
            plans.append(current)
            current = {"maps": [], "options": {}}
            i += 1
    return plans


def check_same_settings(w: Workload, separate: list[list[str]], handwritten: list[str]) -> None:
    """(a) and (b) must encode exactly what MediaMill encodes."""
    reference = [_output_plans(args)[0] for args in separate]
    ours = _output_plans(handwritten)
    if reference != ours:
        raise SystemExit(
            f"{w.name}: the hand-written command differs from build_args:\n"
            + "\n".join(
                f"  build_args {r}\n  by hand    {o}" for r, o in zip(reference, ours, strict=False)
            )
        )


# --- timing ------------------------------------------------------------------------


def bench(w: Workload, repeat: int) -> dict:
    job = {
        "source": str(w.source),
        "media": w.analysis.media.model_dump(mode="json", by_alias=True),
        "loudness": w.analysis.loudness.model_dump(mode="json", by_alias=True),
        "specs": [s.model_dump(mode="json", by_alias=True) for s in w.specs],
        "timeoutS": TIMEOUT_S,
    }
    job_files = {}
    for mode, approach in (("full", "mediamill"), ("encode", "mediamill-encode")):
        w.out_dir.mkdir(parents=True, exist_ok=True)
        job_files[mode] = w.out_dir / f"job-{mode}.json"
        job_files[mode].write_text(json.dumps({**job, "outDir": str(w.out_dir / approach)}))
        (w.out_dir / approach).mkdir(parents=True, exist_ok=True)
    media = w.analysis.media
    ffmpeg = [ffmpeg_binary(), *FFMPEG_PREFIX]
    separate = [build_args(w.source, [o], media) for o in w.outputs("separate")]
    handwritten = handwritten_args(w, w.outputs("handwritten"))
    check_same_settings(w, separate, handwritten)

    subprocess.run(["cat", str(w.source)], stdout=subprocess.DEVNULL, check=True)  # warm cache
    timings = {k: Timing() for k in ("full", "encode", "separate", "handwritten")}
    for r in range(repeat):
        # Round robin, so a slow spell on the machine hits every approach alike.
        print(f"  {w.name} run {r + 1}/{repeat} ...", file=sys.stderr)
        for mode in ("full", "encode"):
            child = run([sys.executable, "-c", CHILD, mode, str(job_files[mode])])
            timings[mode].add(child.wall_s, child.cpu_s, **child.peak_rss_mb)
            timings[mode].info.setdefault("runs", []).append(json.loads(child.stdout))
        start = time.perf_counter()
        commands = [run([*ffmpeg, *args]) for args in separate]
        timings["separate"].add(
            time.perf_counter() - start,
            sum(c.cpu_s for c in commands),
            ffmpeg=max(c.peak_rss_mb["ffmpeg"] for c in commands),
        )
        timings["separate"].info.setdefault("runs", []).append([c.wall_s for c in commands])
        one = run([*ffmpeg, *handwritten])
        timings["handwritten"].add(one.wall_s, one.cpu_s, **one.peak_rss_mb)
        print(
            "    " + ", ".join(f"{k} {t.walls[-1]:.2f} s" for k, t in timings.items()),
            file=sys.stderr,
        )
    return {
        "workload": w,
        "timings": timings,
        "checks": verify(w, timings["full"].info["runs"][-1]),
    }


# --- verification ------------------------------------------------------------------

_EXPECTED_CODEC = {
    RenditionFormat.MP3: "mp3",
    RenditionFormat.OGG: "vorbis",
    RenditionFormat.OPUS: "opus",
    RenditionFormat.AAC: "aac",
    RenditionFormat.FLAC: "flac",
    RenditionFormat.WAV: "pcm_s16le",
    RenditionFormat.MP4: "aac",
}


def verify(w: Workload, full_report: dict) -> dict:
    """Decode every output of every approach; all must match the spec and each other."""
    source_s = (w.analysis.media.duration_ms or 0) / 1000
    ours = [AnalysisResult.model_validate(m) for m in full_report["measured"]]
    if any(n != 1 for n in full_report["encodes"]):
        raise SystemExit(f"{w.name}: MediaMill re-encoded outputs {full_report['encodes']}")
    results = {"mediamill": ours}
    for approach in ("separate", "handwritten"):
        results[approach] = [analyse_file(o.path) for o in w.outputs(approach)]
    sizes = {a: [o.path.stat().st_size for o in w.outputs(a)] for a in results}
    encode_only = [o.path.stat().st_size for o in w.outputs("mediamill-encode")]
    problems, lufs_spread, size_spread = [], 0.0, 0.0
    for i, spec in enumerate(w.specs):
        base = ours[i]
        for approach, found in results.items():
            got, what = found[i], f"{approach} {spec.spec_id}"
            m = got.media
            if m.codec != _EXPECTED_CODEC[spec.format] or m.channels != spec.channels:
                problems.append(f"{what}: {m.codec} {m.channels} ch")
            if spec.sample_rate_hz and m.sample_rate_hz != spec.sample_rate_hz:
                problems.append(f"{what}: {m.sample_rate_hz} Hz")
            if spec.height is not None and (m.video is None or m.video.height != spec.height):
                problems.append(f"{what}: video {m.video}")
            if abs((m.duration_ms or 0) / 1000 - source_s) > 0.2:
                problems.append(f"{what}: {m.duration_ms} ms of {source_s:.3f} s")
            if got.loudness.integrated_lufs is None or base.loudness.integrated_lufs is None:
                problems.append(f"{what}: no loudness")
            else:
                lufs_spread = max(
                    lufs_spread,
                    abs(got.loudness.integrated_lufs - base.loudness.integrated_lufs),
                )
            size_spread = max(size_spread, abs(sizes[approach][i] / sizes["mediamill"][i] - 1))
        if encode_only[i] <= 0:
            problems.append(f"mediamill-encode {spec.spec_id}: empty")
    if lufs_spread > 0.2:
        problems.append(f"loudness differs by {lufs_spread:.2f} LU between approaches")
    if problems:
        raise SystemExit(f"{w.name}: outputs do not match:\n  " + "\n  ".join(problems))
    return {"lufsSpread": lufs_spread, "sizeSpread": size_spread, "outputs": len(w.specs)}


# --- report ------------------------------------------------------------------------


def _ratio(value: float, target: float) -> str:
    return f"**{value:.2f}x** {'✓' if value <= target else '✗'}"


def table(results: list[dict]) -> str:
    lines = [
        "| workload | renditions | MediaMill (full stage) | MediaMill encode-only "
        "| (a) separate commands | (b) hand-written multi-output "
        "| full / (a) (target ≤ 0.7x) | full / (b) (target ≤ 1.1x) | encode-only / (b) "
        "| peak RSS full / encode-only (ffmpeg + Python) | peak RSS (a) / (b) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        w, t = r["workload"], r["timings"]
        full, enc, sep, hand = t["full"], t["encode"], t["separate"], t["handwritten"]
        names = ", ".join(_spec_label(s) for s in w.specs)
        lines.append(
            f"| {w.name}: {w.source.name} | {len(w.specs)}: {names} "
            f"| {full.wall_s:.2f} s | {enc.wall_s:.2f} s | {sep.wall_s:.2f} s "
            f"| {hand.wall_s:.2f} s | {_ratio(full.wall_s / sep.wall_s, 0.7)} "
            f"| {_ratio(full.wall_s / hand.wall_s, 1.1)} | {enc.wall_s / hand.wall_s:.2f}x "
            f"| {full.rss['ffmpeg']:.0f} + {full.rss['python']:.0f} / "
            f"{enc.rss['ffmpeg']:.0f} + {enc.rss['python']:.0f} MB "
            f"| {sep.rss['ffmpeg']:.0f} / {hand.rss['ffmpeg']:.0f} MB |"
        )
    return "\n".join(lines)


def cpu_table(results: list[dict], cores: int) -> str:
    """CPU time (user + system) of each approach, and what it means for the targets.

    On `cores` cores no process can finish before its CPU time / cores. So (b)'s CPU
    time over `cores`, divided by (a)'s wall time, is the best ratio to (a) that any
    single process doing the same encodes could reach here, before measuring anything."""
    lines = [
        "| workload | CPU full | CPU encode-only | CPU (a) | CPU (b) "
        "| (a) cores busy (CPU / wall) | floor for any one-process encode vs (a): "
        f"CPU (b) / {cores} / wall (a) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        w, t = r["workload"], r["timings"]
        full, enc, sep, hand = t["full"], t["encode"], t["separate"], t["handwritten"]
        lines.append(
            f"| {w.name} | {full.cpu_s:.1f} s | {enc.cpu_s:.1f} s | {sep.cpu_s:.1f} s "
            f"| {hand.cpu_s:.1f} s | {sep.cpu_s / sep.wall_s:.2f} "
            f"| {hand.cpu_s / cores / sep.wall_s:.2f}x |"
        )
    return "\n".join(lines)


def _spec_label(spec: RenditionSpec) -> str:
    if spec.format is RenditionFormat.MP4:
        return f"{spec.height}p"
    kbps = f" {spec.bitrate_bps // 1000}k" if spec.bitrate_bps else ""
    return f"{spec.format.value}{kbps}"


def notes(results: list[dict], repeats: dict[str, int]) -> str:
    lines = []
    for r in results:
        w, t = r["workload"], r["timings"]
        full, sep = t["full"], t["separate"]
        c = r["checks"]
        med = statistics.median
        runs = full.info["runs"]
        encode_s, measure_s = med(x["encodeS"] for x in runs), med(x["measureS"] for x in runs)
        import_s, calls_s = med(x["importS"] for x in runs), med(x["measureSumS"] for x in runs)
        per_command = " + ".join(
            f"{_spec_label(s)} {med(times[i] for times in sep.info['runs']):.2f} s"
            for i, s in enumerate(w.specs)
        )
        spread = ""
        if len(full.walls) > 1:
            per_run = [
                f"{f / a:.2f}x / {f / b:.2f}x"
                for f, a, b in zip(full.walls, sep.walls, t["handwritten"].walls, strict=True)
            ]
            spread = f"Full / (a) and full / (b) run by run: {', '.join(per_run)}. "
        lines.append(
            f"- {w.name} (median of {repeats[w.name]}): inside the full stage's "
            f"{full.wall_s:.2f} s, the encode takes {encode_s:.2f} s and the measurement pass "
            f"(`analyse_file` on the {c['outputs']} outputs, first start to last end) "
            f"{measure_s:.2f} s, {measure_s / full.wall_s:.0%} (the calls add up to "
            f"{calls_s:.2f} s); the child's interpreter start-up and imports {import_s:.2f} s "
            f"(a worker pays that once). (a) per command: {per_command}. {spread}"
            f"Outputs of all approaches decode with "
            f"the specified codec, channels, rate, height and duration; loudness agrees "
            f"within {c['lufsSpread']:.2f} LU, sizes within {c['sizeSpread'] * 100:.1f}%."
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workloads", nargs="+", choices=["audio", "video"], default=["audio", "video"])
    p.add_argument("--repeat", type=int, help="runs per timing (default: 3 audio, 1 video)")
    p.add_argument("--data-dir", type=Path, default=ROOT / "bench-data")
    p.add_argument("--write-readme", action="store_true")
    a = p.parse_args()
    started = time.perf_counter()
    sources = {"audio": audio_source, "video": video_source}
    repeats = {name: a.repeat or (3 if name == "audio" else 1) for name in a.workloads}
    results = []
    for name in a.workloads:
        w = workload(name, sources[name](a.data_dir), a.data_dir)
        print(f"benchmarking {name}: {w.source.name} ...", file=sys.stderr)
        results.append(bench(w, repeats[name]))
    cpu = os.cpu_count() or 1
    text = (
        f"Measured by `scripts/bench_transcode.py` on this machine ({cpu} cores): the default "
        "audio profile from a generated 10-minute 48 kHz stereo FLAC, and the default video "
        "ladder from a generated 60-second 1920x1080 30 fps H.264 + AAC clip. MediaMill's "
        "full stage is `plan_output` + `produce` (one ffmpeg run, then every output measured) "
        "in a child process; encode-only is its ffmpeg run alone. (a) runs the same encodes "
        "(each from `build_args` for one output) as separate ffmpeg commands one after "
        "another; (b) is one hand-written multi-output ffmpeg command with the same filters "
        "and encoder options. Medians of repeated runs; wall time from wait4; peak RSS is "
        "each process's own VmHWM, sampled from /proc (MediaMill's ffmpeg and its Python "
        "shown apart; (a) is its largest command).\n\n"
        + table(results)
        + "\n\n"
        + cpu_table(results, cpu)
        + "\n\n"
        + notes(results, repeats)
    )
    print(text)
    print(f"(bench took {time.perf_counter() - started:.0f} s)", file=sys.stderr)
    if a.write_readme:
        write_readme_block("bench_transcode", text, heading="Transcode")


if __name__ == "__main__":
    main()
