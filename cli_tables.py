"""The command line's tables: they fit the terminal (80 columns when it says nothing).

Each column has a priority; columns are dropped from the least important until the
rest fit, so no cell is cut to `…` (rich's default squeezes every cell instead). The
full values are always there with `--wide` (every column, whatever the width) and
`--json`. Rendition rows say what a listener or viewer gets: codecs (`h264+aac`),
resolution or channels and rate, bitrate in kb/s, loudness, and the error's name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_WIDTH = 80
# What rich's box adds around each cell: a border and one space each side.
_CELL_CHROME = 3


@dataclass(frozen=True)
class Column:
    header: str
    priority: int  # 0 is kept longest


def terminal_width() -> int:
    """`COLUMNS`, else the terminal's width, else 80."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size().columns
    except OSError:
        return DEFAULT_WIDTH


def fitting(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> list[int]:
    """Indexes of the columns to show: the most important ones whose natural widths,
    with the box around them, fit in `width`."""
    natural = [
        max([len(c.header), *(len(row[i]) for row in rows)]) + _CELL_CHROME
        for i, c in enumerate(columns)
    ]
    shown = list(range(len(columns)))
    for index in sorted(shown, key=lambda i: (-columns[i].priority, -i)):
        if sum(natural[i] for i in shown) + 1 <= width or len(shown) == 1:
            break
        shown.remove(index)
    return shown


def print_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    wide: bool = False,
) -> None:
    """Print `rows` under `columns`: every column with `wide`, else those that fit."""
    from rich.console import Console
    from rich.table import Table

    width = terminal_width()
    shown = list(range(len(columns))) if wide else fitting(columns, rows, width)
    table = Table(title=title)
    for i in shown:
        table.add_column(columns[i].header, no_wrap=True, overflow="ignore" if wide else "fold")
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    Console(width=10_000 if wide else width).print(table)


RENDITION_COLUMNS = (
    Column("spec", 0),
    Column("status", 0),
    Column("codecs", 1),
    Column("size", 1),
    Column("kb/s", 2),
    Column("lufs", 2),
    Column("peak", 3),
    Column("error", 1),
    Column("s", 4),
    Column("bytes", 5),
    Column("key", 6),
)


def rendition_row(r: dict[str, Any], name: str) -> list[str]:
    """One rendition as RENDITION_COLUMNS show it."""
    spec = r["spec"]
    if spec["format"] == "mp4":
        codecs = "h264+aac" if r.get("channels") else "h264"
        size = f"{r['width']}x{r['height']}" if r.get("height") else f"{spec.get('height')}p"
    else:
        codecs = r.get("codec") or spec["format"]
        rate = r.get("sampleRate") or spec.get("sampleRate")
        size = f"{r.get('channels') or spec.get('channels')}ch"
        size += f" {rate / 1000:g}k" if rate else ""
    error = r.get("error") or {}
    bitrate = r.get("bitrate") or spec.get("bitrate")
    duration_ms = r.get("duration")
    return [
        name,
        r["status"],
        codecs,
        size,
        f"{bitrate / 1000:.0f}" if bitrate else "-",
        f"{r['lufs']:.1f}" if r.get("lufs") is not None else "-",
        f"{r['truePeak']:.1f}" if r.get("truePeak") is not None else "-",
        error.get("name", ""),
        f"{duration_ms / 1000:.1f}" if duration_ms else "-",
        str(r.get("sizeBytes") or "-"),
        r.get("storageKey") or "-",
    ]


JOB_COLUMNS = (
    Column("id", 0),
    Column("type", 0),
    Column("status", 0),
    Column("stage", 2),
    Column("done", 3),
    Column("tries", 5),
    Column("asset", 4),
    Column("error", 1),
)


def job_row(j: dict[str, Any], wide: bool) -> list[str]:
    """One job as JOB_COLUMNS show it: ids cut to 8 characters unless `wide`."""
    error = j.get("error") or {}
    asset = j.get("assetId") or "-"
    return [
        j["id"] if wide else j["id"][:8],
        j["type"],
        j["status"],
        j["stage"],
        f"{j['progress']:.0%}",
        str(j["attempts"]),
        asset if wide else asset[:12],
        error.get("name", ""),
    ]


def error_lines(items: Sequence[tuple[str, dict[str, Any] | None]]) -> list[str]:
    """`name: ErrorName: message` for each item that has an error: the message in full,
    under the table whose error column shows only the name."""
    return [
        f"{name}: {error.get('name')}: {error.get('message')}" for name, error in items if error
    ]


ASSET_COLUMNS = (
    Column("id", 0),
    Column("type", 1),
    Column("status", 0),
    Column("s", 2),
    Column("lufs", 2),
    Column("peak", 4),
    Column("created", 3),
)


def asset_row(a: dict[str, Any], wide: bool) -> list[str]:
    """One asset as ASSET_COLUMNS show it: the id cut to 16 characters unless `wide`."""
    duration_ms = a.get("duration")
    created = (a.get("created") or "-")[:19].replace("T", " ")
    return [
        a["originalAssetId"] if wide else a["originalAssetId"][:16],
        a.get("assetType") or "-",
        a["status"],
        f"{duration_ms / 1000:.1f}" if duration_ms else "-",
        f"{a['lufs']:.1f}" if a.get("lufs") is not None else "-",
        f"{a['truePeak']:.1f}" if a.get("truePeak") is not None else "-",
        created,
    ]
