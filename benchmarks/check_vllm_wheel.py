"""Check the vLLM interfaces the AutoDeco plugin uses against the sources of a vLLM wheel, without installing it.

    pip download --no-deps vllm==0.33.0 -d /tmp/vllm033
    python benchmarks/check_vllm_wheel.py /tmp/vllm033/vllm-0.33.0-*.whl
    python benchmarks/check_vllm_wheel.py .venv/lib/python3.11/site-packages   # an installed vLLM

Reads `autodeco_lp.vllm.interfaces.INTERFACES` (the list the plugin checks at start-up) and looks
each name up in the Python sources with `ast`: the class, the method and its leading parameters,
or the field. Prints one line per interface; exits 1 when a public one is missing (a private one,
used only by the opt-in trace, is reported but does not fail).
"""

from __future__ import annotations

import argparse
import ast
import sys
import zipfile
from pathlib import Path

from autodeco_lp.vllm.interfaces import INTERFACES, Interface


def _reader(source: Path):
    """A function module path -> source text (None when absent), for a wheel (zip) or a site-packages folder."""
    if source.is_file():
        archive = zipfile.ZipFile(source)
        names = set(archive.namelist())
        return lambda rel: archive.read(rel).decode() if rel in names else None
    return lambda rel: (source / rel).read_text() if (source / rel).is_file() else None


def _module_text(read, module: str) -> str | None:
    rel = module.replace(".", "/")
    return read(f"{rel}.py") or read(f"{rel}/__init__.py")


def _params(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    return [a.arg for a in (*node.args.posonlyargs, *node.args.args)]


def _defined(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """Names a class or module body defines: functions, classes, annotated fields and assignments."""
    names: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, ast.Assign):
            names.update({t.id: node for t in node.targets if isinstance(t, ast.Name)})
    return names


def problem(read, interface: Interface) -> str | None:
    """Why `interface` is missing from the sources `read` gives, or None when it is there."""
    text = _module_text(read, interface.module)
    if text is None:
        return f"module {interface.module} is missing"
    scope = _defined(ast.parse(text).body)
    for part in filter(None, interface.owner.split(".")):
        node = scope.get(part)
        if not isinstance(node, ast.ClassDef):
            return f"class {interface.module}.{interface.owner} is missing"
        scope = _defined(node.body)
    member = scope.get(interface.member)
    if member is None:
        return f"{interface.name} is missing"
    if interface.params is not None:
        if not isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return f"{interface.name} is not a function"
        params = _params(member)
        if params[: len(interface.params)] != list(interface.params):
            return f"{interface.name} takes {tuple(params)}, not {interface.params}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a vLLM wheel (.whl) or a folder holding the vllm package")
    args = parser.parse_args(argv)
    if not args.source.exists():
        parser.error(f"`source` {str(args.source)!r} does not exist; pass a .whl file or a site-packages folder")
    read = _reader(args.source)
    if _module_text(read, "vllm") is None:
        parser.error(f"`source` {str(args.source)!r} holds no vllm package (vllm/__init__.py)")
    failed = 0
    for interface in INTERFACES:
        found = problem(read, interface)
        kind = "private" if interface.private else "public"
        status = "ok" if found is None else ("MISSING" if not interface.private else "missing (trace only)")
        failed += found is not None and not interface.private
        print(f"{status:22} {kind:7} {interface.purpose:24} {interface.name}" + (f": {found}" if found else ""))
    print(f"{args.source.name}: {len(INTERFACES)} interfaces, {failed} public missing")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
