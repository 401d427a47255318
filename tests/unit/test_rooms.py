"""The house keeps its rooms: no import runs against DESIGN.md's "may import" column,
and no module imports, even lazily, one that imports it back (scripts/room_graph.py)."""

from __future__ import annotations

from support import _load_script

room_graph = _load_script("room_graph")


def _graph() -> dict[str, set[str]]:
    files = room_graph.source_files()
    modules = {room_graph.module_name(f) for f in files}
    return {room_graph.module_name(f): room_graph.imports_of(f, modules) for f in files}


def test_no_import_circles() -> None:
    assert room_graph.cycles(_graph()) == []


def test_rooms_import_only_what_design_allows() -> None:
    bad = sorted(
        (source, target)
        for source, targets in _graph().items()
        for target in targets
        if (a := room_graph.room_of(source)) in room_graph.ALLOWED
        and (b := room_graph.room_of(target)) != a
        and b not in room_graph.ALLOWED[a] | {"package"}
    )
    assert bad == []


def test_the_finder_sees_a_circle_and_lazy_imports(tmp_path) -> None:
    """The check itself can fail: a function-level import closing a loop is found."""
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from mediamill.workers import b\n")
    b.write_text("def f():\n    from mediamill.workers import a\n")
    modules = {"mediamill.workers.a", "mediamill.workers.b"}
    graph = {
        "mediamill.workers.a": room_graph.imports_of(a, modules),
        "mediamill.workers.b": room_graph.imports_of(b, modules),
    }
    assert room_graph.cycles(graph) == [["mediamill.workers.a", "mediamill.workers.b"]]


def test_every_worker_module_has_its_test_module() -> None:
    """Tests mirror the rooms: workers/<m>.py is tested by tests/{unit,integration}/
    workers/test_<m>.py (unit where no service is needed), as in PyAV and dramatiq."""
    root = room_graph.ROOT
    tests = root / "tests"
    missing = [
        source.stem
        for source in sorted((root / "workers").glob("*.py"))
        if source.stem != "__init__"
        and not any(
            (tests / kind / "workers" / f"test_{source.stem}.py").is_file()
            for kind in ("unit", "integration")
        )
    ]
    assert missing == []
