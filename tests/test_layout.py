"""The package's shape, as docs/ARCHITECTURE.md draws it: small files, imports that only go down the
layers, imports at the top of modules, and no private name used outside the module that defines it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "classicnets"
MAX_LINES = 600

# Lower layers never import higher ones; parts of one layer do not import each other.
LAYERS = [
    {"errors"},
    {"files"},
    {"models", "data", "inspect", "metrics", "plots"},
    {"training"},
    {"evaluation"},
    {"predict", "export"},
    {"bench", "experiments"},
    {"cli"},
    {"__init__", "__main__"},
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}
# Optional packages are imported where they are used, so classicnets works without them.
OPTIONAL = {"onnx", "onnxscript", "onnxruntime", "safetensors", "tensorboard", "torch.utils.tensorboard"}


def package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def part_of(path: Path) -> str:
    first = path.relative_to(PACKAGE).with_suffix("").parts[0]
    return first


def classicnets_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import of a classicnets module, at any depth."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "classicnets":  # from classicnets import data: the names are modules
                found += [(node.lineno, f"classicnets.{a.name}") for a in node.names]
            elif node.module.startswith("classicnets."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("classicnets.")]
    return found


def test_every_module_is_at_most_600_lines():
    long = {str(f.relative_to(REPO)): n for f in package_files() if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules: {long}"


def test_every_part_of_the_package_has_a_layer():
    parts = {part_of(f) for f in package_files()}
    assert parts <= set(RANK), f"add {parts - set(RANK)} to LAYERS here and in docs/ARCHITECTURE.md"


def test_no_module_imports_one_above_it_or_beside_it():
    wrong = []
    for f in package_files():
        me = part_of(f)
        for line, module in classicnets_imports(ast.parse(f.read_text())):
            target = module.split(".")[1]
            if target == me or target not in RANK:
                continue
            if RANK[target] >= RANK[me]:
                wrong.append(f"{f.relative_to(REPO)}:{line} ({me}) imports {module}")
    assert not wrong, "\n".join(wrong)


def test_imports_are_at_the_top_of_modules_except_in_cli():
    """cli/ imports lazily so that `classicnets --help` does not load torch; the package __init__ files
    load their torch-backed names on first use for the same reason; optional packages load where used."""
    lazy = []
    for f in package_files():
        rel = f.relative_to(PACKAGE)
        if rel.parts[0] == "cli":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import):
                    names = [a.name for a in sub.names]
                elif isinstance(sub, ast.ImportFrom):
                    names = [sub.module or ""]
                else:
                    continue
                allowed = all(n in OPTIONAL or n.split(".")[0] in OPTIONAL for n in names) or (
                    rel.name == "__init__.py" and node.name == "__getattr__")
                if not allowed:
                    lazy.append(f"{rel}:{sub.lineno} imports {', '.join(names)} inside {node.name}()")
    assert not lazy, "\n".join(lazy)


@pytest.mark.parametrize("folder", ["src", "benchmarks", "tests"])
def test_no_private_name_is_used_outside_its_module(folder):
    """`from classicnets.x import _y`, `x._y` and `setattr(x, "_y", ...)` on a classicnets module or object."""
    wrong = []
    for f in sorted((REPO / folder).rglob("*.py")):
        tree = ast.parse(f.read_text())
        ours = set()  # names bound to classicnets modules or objects in this file
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("classicnets"):
                for a in node.names:
                    ours.add(a.asname or a.name)
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        wrong.append(f"{f.relative_to(REPO)}:{node.lineno} imports {node.module}.{a.name}")
            elif isinstance(node, ast.Import):
                ours.update(a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("classicnets"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ours
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                wrong.append(f"{f.relative_to(REPO)}:{node.lineno} uses {node.value.id}.{node.attr}")
            if (isinstance(node, ast.Call) and len(node.args) >= 2 and isinstance(node.args[0], ast.Name)
                    and node.args[0].id in ours and isinstance(node.args[1], ast.Constant)
                    and str(node.args[1].value).startswith("_") and not str(node.args[1].value).startswith("__")):
                wrong.append(f"{f.relative_to(REPO)}:{node.lineno} sets {node.args[0].id}.{node.args[1].value}")
    assert not wrong, "\n".join(wrong)


def test_the_command_line_is_built_without_importing_torch():
    """`classicnets --help` stays instant: registering the subcommands loads only torch-free modules."""
    code = ("import sys; from classicnets.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'torchvision', 'matplotlib') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_export_formats_the_cli_offers_are_the_ones_export_writes():
    from classicnets.cli.evaluate import EXPORT_FORMATS
    from classicnets.export import FORMATS

    assert EXPORT_FORMATS == tuple(FORMATS)
