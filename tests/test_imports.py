"""The house's import order: arrows point down only, and no module imports itself back (no import circle).

Layers, lowest first: o2o/ (the shared package), analysis/ (reads run records), baselines/, then algorithms/ and
behaviour/ (trains the behaviour policies with baselines/ppo.py). A module may import its own package and the layers
below it, never one above or beside it. Every import counts, the lazy ones inside functions too: the source is read
with ast, nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"o2o": 0, "analysis": 1, "baselines": 2, "algorithms": 3, "behaviour": 3}


def module_files(root: Path, packages: dict[str, int]) -> dict[str, Path]:
    """Dotted module name -> file of every .py file in the packages (a package's __init__ is the package)."""
    out = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported_modules(path: Path, name: str, modules: set[str]) -> set[str]:
    """The project modules `name` (in file `path`) imports anywhere in its source, relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the submodule pkg.sub when there is one, else a name of pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a name inside a.b: the module a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path, packages: dict[str, int]) -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    files = module_files(root, packages)
    return {name: imported_modules(path, name, set(files)) for name, path in files.items()}


def arrows_up(graph: dict[str, set[str]], layers: dict[str, int]) -> list[str]:
    """'a imports b' for every import of a package on the same or a higher layer than the importer's own."""
    bad = []
    for name, targets in sorted(graph.items()):
        own = name.split(".")[0]
        for target in sorted(targets):
            other = target.split(".")[0]
            if other != own and layers[other] >= layers[own]:
                bad.append(f"{name} imports {target} ({other}/ is not below {own}/)")
    return bad


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: every strongly connected component of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
    return sorted(out)


def test_no_import_runs_up_a_layer():
    graph = import_graph(ROOT, LAYERS)
    assert {"o2o.generate", "o2o.suite", "analysis.collect", "baselines.ppo"} <= set(graph)  # the walk sees them
    assert arrows_up(graph, LAYERS) == []


def test_no_import_circle():
    """No circle among the project's modules, o2o/'s data path (data, dataset, hdf5, specs, registry, minari_source,
    download, generate, consistency, envs, domains/) included."""
    graph = import_graph(ROOT, LAYERS)
    assert {"o2o.data", "o2o.dataset", "o2o.specs", "o2o.minari_source", "o2o.envs"} <= set(graph)
    assert circles(graph) == []


def test_the_checks_find_an_arrow_up_and_a_circle(tmp_path):
    """The walk catches a lazy import up a layer, `from pkg import module`, relative imports and a circle."""
    files = {
        "low/__init__.py": "",
        "low/a.py": "def f():\n    from high.model import Net\n    return Net\n",  # lazy, up a layer
        "low/b.py": "from . import c\n",  # relative: low.c
        "low/c.py": "import low.b as b\n",  # back to low.b: a circle
        "high/__init__.py": "",
        "high/model.py": "from low import a\nimport numpy\n",  # down, and a third-party module (ignored)
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    layers = {"low": 0, "high": 1}
    graph = import_graph(tmp_path, layers)
    assert graph["high.model"] == {"low.a"} and graph["low.b"] == {"low.c"}
    assert arrows_up(graph, layers) == ["low.a imports high.model (high/ is not below low/)"]
    assert circles(graph) == [["high.model", "low.a"], ["low.b", "low.c"]]  # the lazy import closes one too
