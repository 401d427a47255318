"""docs/configuration.md is what `mediamill config docs` prints from Settings today."""

from __future__ import annotations

from mediamill.config.reference import REFERENCE_PATH, render_reference
from mediamill.config.settings import Settings


def test_the_configuration_reference_is_current() -> None:
    assert REFERENCE_PATH.read_text() == render_reference(), (
        "docs/configuration.md is stale: run `mediamill config docs --write`"
    )


def test_every_setting_is_listed_with_a_meaning() -> None:
    text = render_reference()
    for name in Settings.model_fields:
        row = next(line for line in text.splitlines() if f"`MEDIAMILL_{name.upper()}`" in line)
        assert row.rstrip(" |").split("|")[-1].strip(), f"{name} has no description"
