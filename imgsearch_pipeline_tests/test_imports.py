"""The package's imports, read from the source with ``ast``: no module imports one that
imports it back (directly or through others), and core imports neither Dagster nor the
environment."""

import ast
from pathlib import Path

PACKAGE = "imgsearch_pipeline"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
ENVIRONMENT_READS = {"environ", "environb", "getenv", "getenvb"}


def package_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package by its dotted name; a package is its ``__init__.py``."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """The absolute names of the modules ``module`` imports anywhere in its code, inside
    functions too. ``from X import y`` imports the module X.y when there is one, else X;
    ``import X.y`` of a name that is no module counts as X's."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                while "." in name and name not in known:
                    name = name.rpartition(".")[0]
                found.add(name)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            source = node.module if not node.level else ".".join(filter(None, [base, node.module]))
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.add(submodule if submodule in known else source)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Each module of the package -> the modules of the package it imports."""
    modules = package_modules(root)
    known = set(modules)
    return {module: imported_modules(module, path, known) & known for module, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of ``graph``: modules that all reach each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def one_cycle(graph: dict[str, set[str]], members: list[str]) -> list[str]:
    """A shortest import cycle through the first of ``members`` (a cyclic component)."""
    start, inside = members[0], set(members)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & inside):
                if target == start:
                    return [*paths[node], start]
                if target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"{members} is not a cycle")


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    return [one_cycle(graph, members) for members in strongly_connected(graph)
            if len(members) > 1 or members[0] in graph[members[0]]]


def test_the_graph_sees_every_kind_of_import(tmp_path):
    """Lazy imports, relative ones at any depth, ``from X import submodule`` and a package's
    ``__init__`` all count; what is not in the package does not."""
    sources = {
        "__init__.py": "from .a import name\n",
        "a.py": "import os\n\ndef later():\n    from .sub import deep\n",
        "sub/__init__.py": "",
        "sub/deep.py": "from .. import a, b, name\nimport pkg.sub.value\n",
        "b.py": "from pkg.sub import nothing_else\n",
    }
    for name, text in sources.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(text)
    assert import_graph(tmp_path / "pkg") == {
        "pkg": {"pkg.a"}, "pkg.a": {"pkg.sub.deep"}, "pkg.sub": set(),
        "pkg.sub.deep": {"pkg", "pkg.a", "pkg.b", "pkg.sub"}, "pkg.b": {"pkg.sub"}}
    cyclic = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert sorted(import_cycles(cyclic)) == [["a", "b", "c", "a"], ["d", "d"]]


def test_no_module_imports_one_that_imports_it_back():
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_core_reads_no_environment_and_imports_no_dagster():
    """core is plain logic: handed its settings, never reading them (nor importing what
    does: within the package it imports only core)."""
    modules = package_modules()
    known = set(modules)
    for module, path in modules.items():
        if not module.startswith(f"{PACKAGE}.core"):
            continue
        imported = imported_modules(module, path, known)
        dagster = {name for name in imported if name.split(".")[0].startswith("dagster")}
        assert not dagster, f"{module} imports {sorted(dagster)}"
        outside = {name for name in imported & known if not name.startswith(f"{PACKAGE}.core")}
        assert not outside, f"{module} imports {sorted(outside)}"
        tree = ast.parse(path.read_text())
        reads = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)} | \
            {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
             for alias in node.names}
        assert not reads & ENVIRONMENT_READS, f"{module} reads the environment"
