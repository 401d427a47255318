"""scripts/bench_all.py collects each benchmark's markdown and writes one report.
No benchmark runs here: a tiny stand-in script plays one."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from support import _load_script

bench_all = _load_script("bench_all")

TABLE = "| run | ratio |\n|---|---|\n| ours | **1.2x** ✓ |\n| other | **0.4x** ✗ |"
MACHINE = {"cores": "2", "CPU": "Test CPU", "RAM": "1.0 GiB", "Python": "3.11", "ffmpeg": "n7"}


def _fake_bench(tmp_path: Path, body: str) -> tuple[object, list[str]]:
    script = tmp_path / "fake_bench.py"
    script.write_text(body)
    bench = bench_all.Bench("fake", "Fake bench", script.name, "ratio ≥ 1.0x")
    return bench, [sys.executable, str(script)]


def test_collects_stdout_and_counts_marks(tmp_path: Path) -> None:
    bench, cmd = _fake_bench(
        tmp_path,
        f"import sys\nprint('progress', file=sys.stderr)\nprint({TABLE!r})\n",
    )
    result = bench_all.run_bench(bench, cmd)
    assert result.ok and result.stdout == TABLE
    assert result.stderr_tail == ["progress"]
    assert bench_all.marks(result.stdout) == (1, 1)

    report = bench_all.render_report(
        [result],
        MACHINE,
        command="python scripts/bench_all.py",
        quick=False,
        started=datetime(2025, 1, 2, 3, 4, tzinfo=UTC),
        total_s=90,
    )
    assert report.startswith("# MediaMill performance report\n")
    assert "2025-01-02 03:04 UTC" in report and "Smoke run" not in report
    assert "| CPU | Test CPU |" in report
    assert "| [Fake bench](#fake-bench) | ratio ≥ 1.0x | 1 | 1 |" in report
    assert "\n## Fake bench\n" in report and TABLE in report


def test_failed_bench_is_reported_not_hidden(tmp_path: Path) -> None:
    bench, cmd = _fake_bench(
        tmp_path, "import sys\nprint('half a table')\nsys.exit('broke: no database')\n"
    )
    result = bench_all.run_bench(bench, cmd)
    assert not result.ok
    report = bench_all.render_report(
        [result],
        MACHINE,
        command="python scripts/bench_all.py --quick",
        quick=True,
        started=datetime.now(UTC),
        total_s=1,
    )
    assert "Smoke run" in report
    assert "**failed (exit 1)**" in report and "broke: no database" in report
    assert "half a table" not in report


def test_commands_forward_options() -> None:
    by_key = {b.key: b for b in bench_all.BENCHES}
    assert set(by_key) == {
        "analysis",
        "transcode",
        "packaging",
        "api",
        "playback",
        "analytics",
        "throughput",
    }
    full = by_key["throughput"].command(quick=False, data_dir=Path("/d"), write_readme=True)
    assert full[1].endswith("bench_throughput.py")
    assert full[2:] == ["--data-dir", "/d", "--write-readme"]
    quick = by_key["api"].command(quick=True, data_dir=Path("/d"), write_readme=False)
    assert "--data-dir" not in quick and "--duration-s" in quick
