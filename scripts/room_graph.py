"""Print the house: room -> room import edges, import circles, and the largest modules.

Every `import` of a `mediamill` module counts, wherever it sits (a function-level
import that breaks a circle is still part of it; only `TYPE_CHECKING` imports are
left out, since they never run). A room edge DESIGN.md does not allow is marked.
Exit status 1 when any circle or forbidden edge exists (`--check`).

    python scripts/room_graph.py [--check] [--top N]
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "mediamill"
ROOMS = ("config", "schemas", "pipeline", "storage", "workers", "api")
# DESIGN.md's "may import" column; cli.py and __main__.py ("root") may import anything.
ALLOWED = {
    "config": set(),
    "schemas": {"config"},
    "pipeline": {"schemas", "config"},
    "storage": {"schemas", "config"},
    "workers": {"config", "schemas", "pipeline", "storage"},
    "api": {"schemas", "storage", "workers", "config"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGE, *parts])


def source_files() -> list[Path]:
    files = [ROOT / "cli.py", ROOT / "__main__.py", ROOT / "__init__.py"]
    for room in ROOMS:
        files += sorted((ROOT / room).rglob("*.py"))
    return [f for f in files if f.exists() and "migrations" not in f.parts]


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skipped |= {id(n) for n in ast.walk(inner)}
    return skipped


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The mediamill modules `path` imports (a name imported from a package resolves to
    its submodule when one exists)."""
    tree = ast.parse(path.read_text())
    skipped = _type_checking_nodes(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                if name in modules:
                    found.add(name)
                elif node.module in modules:
                    found.add(node.module)
    return found


def room_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "package"  # mediamill/__init__.py: the version, importable by every room
    return parts[1] if parts[1] in ROOMS else "root"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 on a circle or bad edge")
    parser.add_argument("--top", type=int, default=12, help="largest modules to list")
    args = parser.parse_args()

    files = source_files()
    modules = {module_name(f) for f in files}
    graph = {module_name(f): imports_of(f, modules) - {module_name(f)} for f in files}
    edges: dict[tuple[str, str], int] = defaultdict(int)
    for source, targets in graph.items():
        for target in targets:
            a, b = room_of(source), room_of(target)
            if a != b:
                edges[(a, b)] += 1
    bad = 0
    print("room -> room (module imports)")
    for (a, b), count in sorted(edges.items()):
        forbidden = a in ALLOWED and b not in ALLOWED[a] | {"package"}
        bad += forbidden
        print(f"  {a:9} -> {b:9} {count:4}{'   NOT ALLOWED' if forbidden else ''}")
    circles = cycles(graph)
    print(f"import circles: {len(circles)}")
    for circle in circles:
        print("  " + " <-> ".join(m.removeprefix(PACKAGE + ".") for m in circle))
    print(f"largest modules (lines), of {len(files)}")
    sizes = sorted(((len(f.read_text().splitlines()), f) for f in files), reverse=True)
    for lines, f in sizes[: args.top]:
        print(f"  {lines:5}  {f.relative_to(ROOT)}")
    return 1 if args.check and (circles or bad) else 0


if __name__ == "__main__":
    raise SystemExit(main())
