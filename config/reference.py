"""docs/configuration.md, generated from `Settings`: every variable, its default and
what it means.

A field's meaning is its `Field(description=...)` when it has one, else the comment
block written above it in `config/settings.py` (a block describes the fields that
follow it up to the next blank line), so the settings module stays the one place
where a setting is explained. `mediamill config docs --write` regenerates the file;
a test fails when it is stale.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from pydantic_core import PydanticUndefined

from mediamill.config import settings as settings_module
from mediamill.config.settings import Settings

REFERENCE_PATH = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
_HEADER = """\
# Configuration

Generated from `config/settings.py` by `mediamill config docs --write`; do not edit.
Every setting is an environment variable with the `MEDIAMILL_` prefix. With nothing set
MediaMill runs embedded in one process (local store, SQLite, in-process queue, all under
`MEDIAMILL_DATA_DIR`); `mediamill config check` prints the effective values and every
problem.

| variable | default | meaning |
|---|---|---|
"""


def _comments_by_field() -> dict[str, str]:
    """The comment block above each field of Settings (shared by a group of fields)."""
    source = inspect.getsource(settings_module)
    lines = source.splitlines()
    tree = ast.parse(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    found: dict[str, str] = {}
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        row = node.lineno - 2  # the line above, 0-based
        block: list[str] = []
        while row >= 0:
            text = lines[row].strip()
            if text.startswith("#"):
                block.insert(0, text.lstrip("#").strip())
            elif text and not block and ":" in text and not text.startswith(("@", "def")):
                row -= 1  # another field of the same group: keep looking up
                continue
            else:
                break
            row -= 1
        found[node.target.id] = " ".join(block)
    return found


def _default(name: str) -> str:
    field = Settings.model_fields[name]
    if field.default_factory is not None:
        return "(computed)"
    value = field.default
    if value is PydanticUndefined or value is None:
        return "unset"
    if hasattr(value, "get_secret_value"):
        return "(secret)"
    return f"`{value}`"


def render_reference() -> str:
    comments = _comments_by_field()
    rows = []
    for name, field in Settings.model_fields.items():
        meaning = (field.description or comments.get(name, "")).replace("|", "\\|")
        rows.append(f"| `MEDIAMILL_{name.upper()}` | {_default(name)} | {meaning} |")
    return _HEADER + "\n".join(rows) + "\n"
