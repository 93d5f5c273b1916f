"""No import circle inside evaluation/: the judge backends import the shared types, the chooser
imports the backends, and nothing imports back (judge.py and its backends once imported each other).

Read from the source with `ast`, so an import inside a function or under TYPE_CHECKING counts as
much as one at the top: a circle hidden in a function is still a circle.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import evaluation

PACKAGE = Path(evaluation.__file__).parent


def module_name(path: Path) -> str:
    return "evaluation" if path.stem == "__init__" else f"evaluation.{path.stem}"


def imported_names(path: Path) -> set[str]:
    """Every dotted name `path` imports, `from evaluation import judge` giving `evaluation.judge`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative to the package this file is in
                base = "evaluation" + (f".{base}" if base else "")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """Each evaluation module -> the evaluation modules it imports."""
    paths = sorted(PACKAGE.glob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): (imported_names(p) & modules) - {module_name(p)} for p in paths}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        return err.args[1]
    return None


def test_no_module_in_evaluation_imports_one_that_imports_it_back():
    assert cycle(import_graph()) is None


def test_the_graph_sees_the_judge_imports_and_the_check_sees_a_circle():
    graph = import_graph()
    # The edges the circle was made of, one way now (the local backend is imported inside build_judge).
    assert {"evaluation.judge", "evaluation.verdict_cache"} <= graph["evaluation.judge_http"]
    assert "evaluation.judge" in graph["evaluation.judge_local"]
    assert {"evaluation.judge_http", "evaluation.judge_local"} <= graph["evaluation.judge_choice"]
    assert graph["evaluation.judge"] == {"evaluation.verdict_cache"}
    # Were judge.py to choose the backend again, the check would name the circle.
    graph["evaluation.judge"].add("evaluation.judge_http")
    found = cycle(graph)
    assert found is not None and {"evaluation.judge", "evaluation.judge_http"} <= set(found)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("import evaluation.judge as j", {"evaluation.judge"}),
        ("from evaluation import judge", {"evaluation", "evaluation.judge"}),
        ("def f():\n    from .judge import Sample", {"evaluation.judge", "evaluation.judge.Sample"}),
    ],
)
def test_every_spelling_of_an_import_is_read(tmp_path, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert imported_names(path) == expected
