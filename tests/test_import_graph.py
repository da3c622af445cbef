"""The project's modules form no import cycle - function-local imports included (they hide a
cycle from Python but not from a reader: a cycle means two modules that cannot be understood,
tested or replaced one without the other)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("spt_bench", "baselines", "metrics")


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    if parts[0] in ("metrics", "baselines"):  # installed (and imported) as spt_bench.<name>
        parts = ["spt_bench", *parts]
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    mods = {"cli": REPO / "cli.py"}
    for pkg in (*PACKAGES, "scripts"):
        for path in (REPO / pkg).rglob("*.py"):
            mods[_module_name(path)] = path
    return mods


def _with_parent_packages(name: str, mods: dict[str, Path]) -> list[str]:
    """`name` and every project package above it: importing `metrics.files` runs
    `metrics/__init__.py` first, so an importer depends on that package's imports too."""
    parts = name.split(".")
    return [p for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if p in mods]


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    """The project module an import names (the longest existing prefix)."""
    while name:
        if name in mods:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(*, with_packages: bool = True) -> dict[str, set[str]]:
    """module -> project modules it imports anywhere in its body (TYPE_CHECKING blocks
    excluded: they never run). `from pkg import sub` counts as importing pkg.sub; with
    `with_packages`, importing pkg.sub also counts as importing pkg (its __init__ runs first:
    what cycles are made of); without, only the modules named (what import-count targets
    measure)."""
    mods = project_modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skip.update(id(n) for b in node.body for n in ast.walk(b))
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg_parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    pkg_parts = pkg_parts[: len(pkg_parts) - (node.level - 1)]
                    base = ".".join([*pkg_parts, base] if base else pkg_parts)
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for t in targets:
                r = _resolve(t, mods)
                if r is None:
                    continue
                for dep in _with_parent_packages(r, mods) if with_packages else [r]:
                    # a module's own parent packages run before it: not an edge from it
                    if dep != mod and not mod.startswith(dep + "."):
                        graph[mod].add(dep)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_a_cycle() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(g) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_follows_package_init_and_scripts() -> None:
    graph = import_graph()
    # the score command imports metrics.files, which runs metrics/__init__ first
    assert "spt_bench.metrics" in graph["spt_bench.commands.score"]
    assert any(name.startswith("scripts.") for name in graph)


def test_metrics_baselines_and_cli_are_imported_under_spt_bench_only() -> None:
    """The wheel installs metrics/ and baselines/ as spt_bench.metrics and spt_bench.baselines
    (issue 23, item 13): project code never imports the bare top-level names."""
    bare = []
    for mod, path in project_modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            bare += [f"{mod}: {n}" for n in names if n.split(".")[0] in ("metrics", "baselines")]
    assert not bare, bare


def test_project_modules_import_no_cycle() -> None:
    graph = import_graph()
    # the graph sees function-local imports (cli imports the runner only inside commands)
    assert len(graph) > 30 and "spt_bench.runner" in graph["spt_bench.commands.run"]
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)
