"""DESIGN §4's dependency direction, checked on the source: every `ric` import (module level or
inside a function) points to a lower layer, and no modules import each other in a cycle."""

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
    "runs": 3,
    "training": 4,
    "evaluation": 4,
    "baselines": 4,
    "serve": 4,
    "image": 4,
    "tasks": 5,
    "cli": 6,
    "__main__": 7,  # `python -m ric`
}
# Imports within a layer that the design intends: relabeling scores with the rewards, `ric
# prepare`'s length filter counts tokens with the policy's tokenizer, the SFT and RL baselines
# run the training stage's own loop, and text-to-image RiC keeps its checkpoints in the training
# stage's format and measures its sweep with the evaluation stage's functions.
WITHIN_LAYER = {
    ("data", "rewards"),
    ("data", "models"),
    ("baselines", "training"),
    ("image", "training"),
    ("image", "evaluation"),
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
