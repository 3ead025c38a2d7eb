"""docs/design.md §4's dependency direction, checked on the source: every `ric` import (module
level or inside a function) points to a lower layer, and no modules import each other in a
cycle. And the tests' own rule: a test file imports tests/helpers.py, never another test file."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).parent.parent / "src" / "ric"
# Lower numbers are imported by higher ones, never the other way round.
LAYERS = {
    "core": 0,
    "config": 1,
    "runtime": 1,
    "parallel": 1,
    "rewards": 2,
    "models": 2,
    "data": 2,
    "tasks": 2,  # the shipped data of the embedded tasks, and the image set drawn in code
    "runs": 3,
    "steering": 3,
    "training": 4,
    "evaluation": 4,
    "baselines": 4,
    "serve": 4,
    "image": 4,
    "export": 4,
    "recipes": 5,
    "cli": 6,
    "__main__": 7,  # `python -m ric`
}
# Imports within a layer that the design intends: relabeling scores with the rewards, `ric
# prepare`'s length filter counts tokens with the policy's tokenizer, the SFT and RL baselines
# run the training stage's own loop, and text-to-image RiC keeps its checkpoints in the training
# stage's format and measures its sweep with the evaluation stage's functions; the steering
# object reads a trained run (its stats, template and method) to steer it; `ric calibrate`
# generates and scores its design the way the online stage does.
WITHIN_LAYER = {
    ("data", "rewards"),
    ("data", "models"),
    ("baselines", "training"),
    ("image", "training"),
    ("image", "evaluation"),
    ("steering", "runs"),
    ("evaluation", "training"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def ric_imports(path: Path) -> set[str]:
    """Every ``ric.*`` module ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "ric":  # from ric import parallel
            found |= {f"ric.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ric"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("ric")}
    return found


def package(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


GRAPH = {module_name(path): ric_imports(path) for path in sorted(SOURCE.rglob("*.py"))}


def test_every_package_has_a_layer():
    packages = {package(module) for module in GRAPH} - {"__init__"}
    assert packages <= set(LAYERS), f"give these a layer: {sorted(packages - set(LAYERS))}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if package(m) != "__init__"))
def test_imports_point_down(module):
    source = package(module)
    wrong = [
        target
        for target in sorted(GRAPH[module])
        if package(target) not in (source, "__init__")
        and LAYERS[package(target)] >= LAYERS[source]
        and (source, package(target)) not in WITHIN_LAYER
    ]
    assert not wrong, f"{module} (layer {LAYERS[source]}) imports {wrong}"


def test_no_import_cycles():
    def resolve(target: str) -> str | None:  # 'ric.models' -> the package's __init__ module
        return target if target in GRAPH else None

    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(filter(None, map(resolve, GRAPH[module]))):
            if state.get(target) == "open":
                cycle = [*path[path.index(target) :], target]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in GRAPH:
        if module not in state:
            visit(module, [module])


@pytest.mark.slow
def test_a_first_answer_does_not_import_labeling(tiny_offline):
    """`ric generate --prompt` loads a run and generates; pandas and the scorers serve labeling
    and prompt files (a third of a second of every first answer), so it must not import them."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['ric', 'generate', '--model', {str(tiny_offline / 'train')!r}, "
        "'--preference', '0.5,0.5', '--prompt', 'Why?', '--set', 'generation.max_new_tokens=2']\n"
        "try:\n    runpy.run_module('ric', run_name='__main__')\nexcept SystemExit as end:\n"
        "    assert not end.code, end.code\n"
        "print(sorted(m for m in ('pandas', 'ric.data.label', 'ric.rewards') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"


# --- the tests' own structure --------------------------------------------------------------------

TESTS = Path(__file__).parent


def imported_test_modules(source: str) -> list[str]:
    """The test modules (``test_*``, also as ``tests.test_*``) that ``source`` imports."""

    def is_test(name: str) -> bool:
        return any(part.startswith("test_") for part in name.split("."))

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if is_test(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            if is_test(module):  # from test_x import y, from tests.test_x import y
                found.append(module)
            else:  # from tests import test_x, from . import test_x
                found += [f"{module}.{a.name}".lstrip(".") for a in node.names if is_test(a.name)]
    return found


def test_the_test_import_check_sees_every_form_of_import():
    imports = [
        "from test_serve import running",
        "import test_serve",
        "import tests.test_serve as serve_tests",
        "from tests.test_serve import running",
        "from tests import test_serve",
        "from . import test_serve",
        "from .test_serve import running",
        "def later():\n    from test_serve import running",
    ]
    for source in imports:
        assert imported_test_modules(source), source
    shared = "import pytest\nfrom helpers import running\nfrom ric.serve import build_app"
    assert imported_test_modules(shared) == []


def test_no_test_file_imports_another():
    """What test files share lives in tests/helpers.py (fixtures: tests/conftest.py): a test file
    imported by another runs its own tests' module-level code there, and couples the two."""
    files = sorted(TESTS.glob("test_*.py"))
    assert len(files) > 30
    offenders = {path.name: imported_test_modules(path.read_text()) for path in files}
    offenders = {name: modules for name, modules in offenders.items() if modules}
    assert not offenders, f"move what these import to tests/helpers.py: {offenders}"
