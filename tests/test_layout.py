"""The package's architecture, checked: no import cycles (function-level imports included),
nothing imports the repository's benchmarks/ or tools/, each layer imports only the layers
below it, and every folder says what it holds."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rllib_empo"
# Each sub-package and what it may import from the package (besides itself).
LAYERS = {
    "theory": set(),
    "worlds": set(),
    "exact": {"theory", "worlds"},
    "algorithm": {"theory", "worlds", "exact"},
    "analysis": {"theory", "worlds", "exact", "algorithm"},
    "cli": {"theory", "worlds", "exact", "algorithm", "analysis"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (functions included).
    ``from pkg import name`` is an import of ``pkg.name`` when that is a module, else of
    ``pkg``; ``pkg`` itself (its ``__init__``) runs first, as for any submodule import."""
    tree = ast.parse(path.read_text())
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if _is_module(sub) else base)
    return out


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in modules and m != name}
            for name, path in modules.items()}


def test_no_import_cycles():
    g = graph()
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(g[m]):
            if state.get(n) == "open":
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in sorted(g):
        if m not in state:
            visit(m)


#: The one module that may touch sys.path: the command line imports a user's ``--import``
#: modules from the working directory (as ``python -m`` would) and, for a run's later
#: commands, from the directory ``run.json`` recorded -- never benchmarks/ or tools/.
SYS_PATH_ALLOWED = {PACKAGE / "cli" / "commands.py"}


def test_the_package_never_imports_benchmarks_or_tools():
    for path in PACKAGE.rglob("*.py"):
        bad = {m for m in imports_of(path) if m.split(".")[0] in ("benchmarks", "tools", "tests")}
        assert not bad, f"{path.relative_to(PACKAGE.parent)} imports {sorted(bad)}"
        if path not in SYS_PATH_ALLOWED:
            assert "sys.path" not in path.read_text(), f"{path} edits sys.path"


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layers_import_only_downwards(layer):
    for path in (PACKAGE / layer).rglob("*.py"):
        for m in imports_of(path):
            parts = m.split(".")
            assert m != "rllib_empo", \
                f"{path.relative_to(PACKAGE.parent)} imports the package root (the public facade)"
            if parts[0] != "rllib_empo" or parts[1] == layer:
                continue
            assert parts[1] in LAYERS[layer], \
                f"{path.relative_to(PACKAGE.parent)} ({layer}) imports {m}"


def test_every_folder_says_what_it_holds_and_may_import():
    top = [p for p in PACKAGE.iterdir() if p.suffix == ".py"]
    assert len(top) <= 8, sorted(p.name for p in top)
    for layer in LAYERS:
        doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text()))
        assert doc and "May import" in doc, f"{layer}/__init__.py must say what it may import"


def test_every_document_the_code_cites_exists():
    root = PACKAGE.parent
    for path in list(PACKAGE.rglob("*.py")) + list((root / "tools").glob("*.py")):
        text = path.read_text()
        for cited in ("docs/DESIGN.md", "benchmarks/RESULTS.md", "README.md"):
            if cited in text:
                assert (root / cited).exists(), f"{path} cites {cited}, which does not exist"
        assert "DESIGN.md" not in text.replace("docs/DESIGN.md", ""), \
            f"{path} cites DESIGN.md without its path (docs/DESIGN.md)"
