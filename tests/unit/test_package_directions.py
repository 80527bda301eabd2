"""The house keeps its shape: every import inside ``dnr`` (function-level ones included) runs
down the written order of layers (``dnr.PACKAGE_LAYERS``), no module is over 400 lines and no
function over 60."""

import ast
from pathlib import Path

import dnr

ROOT = Path(dnr.__file__).resolve().parent
LAYER = {name: depth for depth, layer in enumerate(dnr.PACKAGE_LAYERS) for name in layer}


def _unit(path: Path) -> str:
    """The package or top-level module of ``dnr`` a file belongs to."""
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_units(path: Path) -> list[tuple[int, str]]:
    return _imports_in(path.read_text(), ".".join(("dnr", *path.relative_to(ROOT).parts[:-1])))


def _imports_in(source: str, package: str) -> list[tuple[int, str]]:
    """(line, unit of dnr) of every import in ``source`` (a module of ``package``), at any depth,
    relative ones resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            names = [f"{base}.{node.module}" if node.module else base]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
            if node.module == "dnr":  # ``from dnr import data``
                names = [f"dnr.{alias.name}" for alias in node.names]
        else:
            continue
        found += [(node.lineno, name.split(".")[1]) for name in names
                  if name.startswith("dnr.") and name.split(".")[1] in LAYER]
    return found


def _sources() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if p.name != "__main__.py" and p != ROOT / "__init__.py")


def test_every_unit_of_dnr_has_a_layer():
    units = {_unit(p) for p in _sources()}
    assert units - set(LAYER) == set(), "add the new package or module to dnr.PACKAGE_LAYERS"
    assert set(LAYER) - units == set(), "dnr.PACKAGE_LAYERS names something that no longer exists"


def test_every_import_runs_down_the_layers():
    against = []
    for path in _sources():
        unit = _unit(path)
        for line, target in _imported_units(path):
            if target != unit and LAYER[target] >= LAYER[unit]:
                against.append(f"{path.relative_to(ROOT.parent)}:{line}: {unit} (layer {LAYER[unit]}) "
                               f"imports {target} (layer {LAYER[target]})")
    assert against == []


def test_the_check_sees_function_level_relative_and_package_imports():
    source = ("import dnr.models\nfrom dnr import daily\n\ndef f():\n    from dnr.evaluation.replay import run_replay\n"
              "    from ..serving import export\n    import numpy\n")
    assert sorted(_imports_in(source, "dnr.training")) == [(1, "models"), (2, "daily"), (5, "evaluation"),
                                                          (6, "serving")]


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT.parent)): n for p in _sources() + [ROOT / "__init__.py"]
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_no_function_is_over_60_lines():
    long = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []
