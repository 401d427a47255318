"""What the benchmark scripts share: writing their table into docs/performance.md, and
a free loopback port for the servers they start."""

from __future__ import annotations

import re
import socket
from pathlib import Path

REPORT = Path(__file__).resolve().parents[1] / "docs" / "performance.md"


def write_readme_block(name: str, text: str, heading: str | None = None) -> None:
    """Replace the text between `<!-- {name}:start -->` and `<!-- {name}:end -->`.

    Without the markers, the block is added at the end of the "## Performance"
    section (under `### {heading}` when given), or at the end of the file. The
    report (`scripts/bench_all.py`) writes every benchmark's table between markers.
    """
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    body = REPORT.read_text()
    block = f"{start}\n{text}\n{end}"
    if start in body:
        body = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, body, flags=re.S)
    else:
        section = re.search(r"^## Performance\b.*?(?=^## |\Z)", body, flags=re.S | re.M)
        if section is None:
            body += f"\n{block}\n"
        else:
            head, tail = body[: section.end()].rstrip("\n"), body[section.end() :]
            title = f"### {heading}\n\n" if heading else ""
            body = f"{head}\n\n{title}{block}\n" + (f"\n{tail}" if tail else "")
    REPORT.write_text(body)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
