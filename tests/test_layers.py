"""The dependency arrow `cluster -> sweep -> trainables -> evaluation`: no module imports a package above it.

Read from the source with `ast` (an import inside a function counts: a lazy import is still a
dependency), so a reach upwards fails here before it becomes an import cycle or a layer that cannot
be installed and used without the ones above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import ROOT

ARROW = ["cluster", "sweep", "trainables", "evaluation"]  # each may import only those after it


def imported_packages(source: str) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in the source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def upward_imports(root: Path) -> list[str]:
    """'path:line imports package' for every import, under root's packages, of a package above it."""
    found = []
    for i, package in enumerate(ARROW):
        for path in sorted((root / package).rglob("*.py")):
            found += [
                f"{path.relative_to(root)}:{line} imports {name}"
                for line, name in imported_packages(path.read_text(encoding="utf-8"))
                if name in ARROW[:i]
            ]
    return found


def test_every_layer_imports_only_the_layers_below_it():
    assert all(list((ROOT / package).rglob("*.py")) for package in ARROW)  # the layers are where we look
    assert upward_imports(ROOT) == [], f"imports against the arrow {' -> '.join(ARROW)}"


def test_upward_imports_are_found_at_module_level_and_inside_functions(tmp_path):
    sources = {
        "sweep/cli.py": "import json\n\n\ndef cmd_submit(a):\n    from cluster.submit import submit\n",
        "trainables/trial.py": "import sweep.config\nfrom evaluation.loss import loss\n",
        "evaluation/judge.py": "from trainables import model\nimport cluster, sweep.runner as r\nfrom . import x\n",
        "cluster/submit.py": "from sweep.config import load_sweep_config\nimport trainables, evaluation\n",
    }
    for name, text in sources.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    assert upward_imports(tmp_path) == [
        "sweep/cli.py:5 imports cluster",
        "trainables/trial.py:1 imports sweep",
        "evaluation/judge.py:1 imports trainables",
        "evaluation/judge.py:2 imports cluster",
        "evaluation/judge.py:2 imports sweep",
    ]
