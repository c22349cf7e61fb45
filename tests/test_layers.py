"""The layers point one way and no two modules import each other.

Every module under autodeco_lp/ and cli/ (installed as `autodeco_lp.cli`) is parsed with `ast`;
every import counts, including those inside functions and under `if TYPE_CHECKING:`, and
`importlib.import_module("autodeco_lp....")` with a literal name. A module may import its own
layer or a layer of lower rank; layers of the same rank are independent of each other.

    rank -1  autodeco_lp.version, autodeco_lp.shipped_heads (heads/: data only, imports nothing of ours)
    rank  0  hub          (config, checkpoint, registry, atomic writes, packaged models)
    rank  1  inference    (heads, features, capture, processor, sampling, ...)
    rank 1.5 the package root `autodeco_lp/__init__.py`: the public API, re-exports hub and inference
    rank  2  tasks, vllm  (vllm may not exist yet: it is ranked all the same)
    rank 2.5 engines      (one sampler interface over hf generate and vllm, and the factory that picks one;
             above tasks and vllm, which it uses, and below training, whose rollouts sample through it)
    rank  3  training
    rank  4  evaluation
    rank  5  cli, and every `__main__.py`: an entry point is run, never imported (checked here),
             so `autodeco_lp/training/__main__.py` may call the CLI's `autodeco-fit`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Installed package name -> source folder (pyproject.toml, [tool.setuptools] package-dir).
SOURCES = {
    "autodeco_lp": ROOT / "autodeco_lp",
    "autodeco_lp.cli": ROOT / "cli",
    "autodeco_lp.shipped_heads": ROOT / "heads",
}
# Module-name prefix -> (layer, rank); the longest matching prefix wins.
LAYERS = {
    "autodeco_lp.version": ("version", -1),
    "autodeco_lp.shipped_heads": ("shipped_heads", -1),
    "autodeco_lp.hub": ("hub", 0),
    "autodeco_lp": ("public API", 1.5),  # the package root only: every folder below has its own entry
    "autodeco_lp.inference": ("inference", 1),
    "autodeco_lp.tasks": ("tasks", 2),
    "autodeco_lp.vllm": ("vllm", 2),
    "autodeco_lp.engines": ("engines", 2.5),
    "autodeco_lp.training": ("training", 3),
    "autodeco_lp.evaluation": ("evaluation", 4),
    "autodeco_lp.cli": ("cli", 5),
}
ENTRY_POINT = ("entry point (__main__)", 5)
# Cycles in code owned elsewhere, listed so that the rest stays checked. Each entry must still be a
# cycle while its modules exist (the test says when to delete it); never add one for new code.
KNOWN_CYCLES: set[frozenset[str]] = set()  # none; an entry here must name why and who removes it


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (resolved to a module file where one exists)
    path: Path
    line: int
    text: str  # the import statement as written

    def where(self) -> str:
        return f"{_shown(self.path)}:{self.line}"


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def discover(sources: dict[str, Path]) -> dict[str, Path]:
    """Module name -> file, for every .py file under the source folders."""
    modules = {}
    for package, folder in sources.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if "__pycache__" in parts or any(p.startswith(".") for p in parts):
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def layer_of(module: str) -> tuple[str, float] | None:
    if module.rsplit(".", 1)[-1] == "__main__":
        return ENTRY_POINT
    best = None
    for prefix in LAYERS:
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best)):
            best = prefix
    if best == "autodeco_lp" and module != "autodeco_lp":
        return None  # a module in a folder (or at the root) that has no layer yet
    return LAYERS[best] if best else None


def _ours(name: str) -> bool:
    return name == "autodeco_lp" or name.startswith("autodeco_lp.")


def _resolve(name: str, modules: dict[str, Path]) -> str:
    """The module an import of `name` executes: itself, or its closest known parent package."""
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.append(submodule if submodule in modules else base)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            targets = [node.args[0].value]
        for target in dict.fromkeys(targets):
            if _ours(target):
                found.append(Import(module, _resolve(target, modules), path, node.lineno, ast.unparse(node)))
    return found


def all_imports(modules: dict[str, Path]) -> list[Import]:
    return [imp for module, path in modules.items() for imp in imports_of(module, path, modules)]


def layer_violations(imports: list[Import], modules: dict[str, Path]) -> list[str]:
    problems = []
    for module, path in modules.items():
        if layer_of(module) is None:
            problems.append(f"{_shown(path)}: module {module} has no layer; add its folder to LAYERS")
    for imp in imports:
        source, target = layer_of(imp.source), layer_of(imp.target)
        if source is None or target is None:
            continue
        if imp.target.rsplit(".", 1)[-1] == "__main__":
            problems.append(f"{imp.where()}: `{imp.text}` imports an entry point ({imp.target})")
        elif target[1] > source[1]:
            problems.append(
                f"{imp.where()}: `{imp.text}` climbs up: {imp.source} ({source[0]}, rank {source[1]}) "
                f"imports {imp.target} ({target[0]}, rank {target[1]})"
            )
        elif target[1] == source[1] and target[0] != source[0] and ENTRY_POINT not in (source, target):
            problems.append(
                f"{imp.where()}: `{imp.text}`: {imp.source} ({source[0]}) imports {imp.target} ({target[0]}), "
                f"a separate layer of the same rank {source[1]}"
            )
    return problems


def import_cycles(imports: list[Import]) -> dict[frozenset[str], str]:
    """Every strongly connected group of modules -> one cycle through it, with each import's place."""
    graph: dict[str, dict[str, Import]] = {}
    for imp in imports:
        if imp.source != imp.target:
            graph.setdefault(imp.source, {}).setdefault(imp.target, imp)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    problems = {}
    for group in groups:
        members = frozenset(group)
        # Walk from the first member back to itself inside the group (a shortest cycle, by BFS).
        start = group[0]
        previous: dict[str, str] = {}
        frontier, seen = [start], {start}
        end = None
        while frontier and end is None:
            following = []
            for node in frontier:
                for nxt in graph.get(node, {}):
                    if nxt == start:
                        end = node
                        break
                    if nxt in members and nxt not in seen:
                        seen.add(nxt)
                        previous[nxt] = node
                        following.append(nxt)
                if end is not None:
                    break
            frontier = following
        chain = [end]
        while chain[-1] != start:
            chain.append(previous[chain[-1]])
        chain.reverse()
        edges = [graph[a][b] for a, b in zip(chain, chain[1:] + [start])]
        problems[members] = f"import cycle {' -> '.join(chain + [start])}:\n" + "\n".join(
            f"    {e.where()}: `{e.text}`" for e in edges
        )
    return problems


MODULES = discover(SOURCES)
IMPORTS = all_imports(MODULES)


def test_every_module_is_found_and_has_a_layer():
    for expected in ("autodeco_lp", "autodeco_lp.hub.config", "autodeco_lp.inference.heads", "autodeco_lp.cli.main"):
        assert expected in MODULES
    assert any(imp.target == "autodeco_lp.hub.config" for imp in IMPORTS)  # the parser sees imports at all
    assert layer_violations([], MODULES) == []


def test_no_import_climbs_up_a_layer():
    problems = layer_violations(IMPORTS, MODULES)
    assert not problems, "imports against the layer order:\n" + "\n".join(problems)


def test_no_import_cycles():
    cycles = import_cycles(IMPORTS)
    problems = [text for members, text in cycles.items() if members not in KNOWN_CYCLES]
    assert not problems, "\n".join(problems)
    fixed = [sorted(k) for k in KNOWN_CYCLES if k <= MODULES.keys() and k not in cycles]
    assert not fixed, f"no longer a cycle, delete it from KNOWN_CYCLES: {fixed}"


def test_shipped_heads_are_data_only():
    ours = [imp for imp in IMPORTS if imp.source.startswith("autodeco_lp.shipped_heads")]
    assert not ours, [f"{imp.where()}: `{imp.text}`" for imp in ours]


# ----------------------------------------------------------------------------- the checker itself


@pytest.fixture
def fake_tree(tmp_path):
    """A package with a hub module that imports training inside a function, under TYPE_CHECKING
    and relatively, and two inference modules that import each other."""
    files = {
        "autodeco_lp/__init__.py": "",
        "autodeco_lp/version.py": "",
        "autodeco_lp/hub/__init__.py": "",
        "autodeco_lp/hub/config.py": (
            "from typing import TYPE_CHECKING\n"
            "from autodeco_lp.version import __version__\n"
            "if TYPE_CHECKING:\n"
            "    from autodeco_lp.training.loop import fit\n"
            "def f():\n"
            "    from ..training import loop\n"
        ),
        "autodeco_lp/inference/__init__.py": "",
        "autodeco_lp/inference/a.py": "import autodeco_lp.inference.b\n",
        "autodeco_lp/inference/b.py": "from autodeco_lp.inference import a\n",
        "autodeco_lp/training/__init__.py": "",
        "autodeco_lp/training/loop.py": "from autodeco_lp.inference.a import x\n",
        "autodeco_lp/training/__main__.py": "from autodeco_lp.cli.fit import main\n",
        "autodeco_lp/vllm/__init__.py": "import vllm\nfrom autodeco_lp.tasks import prompting\n",
        "autodeco_lp/tasks/__init__.py": "",
        "autodeco_lp/tasks/prompting.py": "",
        "cli/__init__.py": "",
        "cli/fit.py": "import autodeco_lp.training.__main__\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return discover({"autodeco_lp": tmp_path / "autodeco_lp", "autodeco_lp.cli": tmp_path / "cli"})


def test_checker_names_file_line_and_import_of_a_climb(fake_tree):
    problems = layer_violations(all_imports(fake_tree), fake_tree)
    text = "\n".join(problems)
    assert "autodeco_lp/hub/config.py:4: `from autodeco_lp.training.loop import fit` climbs up" in text
    assert "autodeco_lp/hub/config.py:6: `from ..training import loop` climbs up" in text
    assert "cli/fit.py:1: `import autodeco_lp.training.__main__` imports an entry point" in text
    assert "autodeco_lp/vllm/__init__.py:2: `from autodeco_lp.tasks import prompting`" in text  # same rank
    # Allowed: hub -> version, training -> inference, training/__main__ -> cli; `import vllm` is not ours.
    assert len(problems) == 4, text


def test_checker_reports_a_cycle_with_both_imports(fake_tree):
    problems = list(import_cycles(all_imports(fake_tree)).values())
    # Two cycles: inference a <-> b, and cli.fit <-> training.__main__ (the import of an entry point).
    assert len(problems) == 2 and any("autodeco_lp.cli.fit -> autodeco_lp.training.__main__" in p for p in problems)
    (problem,) = [p for p in problems if "inference" in p]
    assert problem.startswith("import cycle autodeco_lp.inference.a -> autodeco_lp.inference.b -> ")
    assert "inference/a.py:1: `import autodeco_lp.inference.b`" in problem
    assert "inference/b.py:1: `from autodeco_lp.inference import a`" in problem
