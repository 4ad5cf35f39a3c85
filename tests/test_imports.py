"""No import cycles among adaptbench/ and methods/, counting imports inside functions: a walk over every
module's AST, import edges to modules of the two packages, and a search for a cycle."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in known:  # `from a.b import c`: c may be a function, a.b the module
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    files = [p for pkg in ("adaptbench", "methods") for p in (ROOT / pkg).rglob("*.py")]
    known = {module_name(p) for p in files}
    # importing a.b.c runs a/__init__ and a/b/__init__ first: parent packages are not edges of a cycle
    return {module_name(p): {m for m in imports_of(p, known)
                             if m != module_name(p) and not module_name(p).startswith(m + ".")}
            for p in files}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, " → ".join(cycle)


def test_the_walker_sees_a_cycle_inside_a_function():
    edges = {"a": {"b"}, "b": {"a"}}
    assert find_cycle(edges) == ["a", "b", "a"]
    src = "def f():\n    from adaptbench.results import read_json\n"
    tmp = ROOT / "tests" / "_walker_probe.py"
    try:
        tmp.write_text(src)
        assert "adaptbench.results" in imports_of(tmp, {"adaptbench.results"})
    finally:
        tmp.unlink()


def test_the_snakefile_and_grid_layer_import_no_torch():
    import subprocess
    import sys

    code = ("import sys; from adaptbench import cli, grid, manifest, tracks; "
            "[t.plan for t in tracks.all_tracks()]; cli.build_parser(); "
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
