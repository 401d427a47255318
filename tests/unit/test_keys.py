"""One key layout: schemas/keys.py names every prefix, and no other module spells one."""

from __future__ import annotations

import re
from pathlib import Path

from mediamill.schemas import keys

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("api", "config", "pipeline", "schemas", "storage", "workers")
# A prefix spelt as the start of a key: `originals/`, or "incoming" as a string.
SPELT = re.compile(
    r"""(?<![.\w])(originals|renditions|packages|incoming)/|["'](originals|incoming)["']"""
)


def test_key_forms() -> None:
    sha = "a" * 64
    assert keys.original_key(sha) == f"originals/{sha}"
    rendition = keys.rendition_key(sha, "mp3-128000-2ch", "mp3")
    assert rendition == f"renditions/{sha}/mp3-128000-2ch.mp3"
    assert keys.package_prefix(sha, "pkg-1") == f"packages/{sha}/pkg-1"
    assert keys.upload_key("u1") == "incoming/u1"
    frozen = keys.frozen_upload_key("u1")
    assert frozen.startswith("incoming/u1.") and frozen != keys.frozen_upload_key("u1")
    assert keys.is_staged(keys.staged_copy_key("bucket-"))
    assert all(keys.is_internal(k) for k in (keys.original_key(sha), keys.upload_key("u")))
    assert not keys.is_internal("inbox/originals/x")


def test_no_other_module_spells_a_prefix() -> None:
    found = []
    for room in ROOMS:
        for path in (ROOT / room).rglob("*.py"):
            if path.name == "keys.py" or "migrations" in path.parts:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if SPELT.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []
