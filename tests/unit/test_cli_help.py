"""The command line reads well (issue 16, item 8): every command's --help says what it
does and shows its defaults; `--version`; tables keep to the terminal's width."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from mediamill import __version__
from mediamill.cli import _parser, main
from mediamill.cli_tables import Column, fitting


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _commands(sub, (*path, name))


def test_every_command_says_what_it_does_and_shows_its_defaults() -> None:
    commands = list(_commands(_parser()))
    assert len(commands) > 20
    for path, parser in commands:
        text = parser.format_help()
        assert parser.description, f"mediamill {' '.join(path)} --help says nothing"
        for action in parser._actions:
            default = action.default
            if action.option_strings and default not in (None, False, argparse.SUPPRESS):
                assert f"default: {default}" in text or "%(default)" in (action.help or ""), (
                    path,
                    action.option_strings,
                )
    process = dict(commands)[("process",)].format_help()
    assert "transcode" in process and "package" in process  # not only "ingest and analyse"


def test_version() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0 and out.getvalue().strip() == f"mediamill {__version__}"


def test_columns_are_dropped_by_priority_until_the_rest_fit() -> None:
    columns = [Column("spec", 0), Column("status", 0), Column("key", 6), Column("lufs", 2)]
    rows = [["mp3-128000-2", "ready", "renditions/" + "a" * 64 + "/mp3.mp3", "-14.0"]]
    assert fitting(columns, rows, 200) == [0, 1, 2, 3]
    assert fitting(columns, rows, 80) == [0, 1, 3]  # the key goes first
    assert fitting(columns, rows, 20) == [0]
