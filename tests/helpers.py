"""Plain helpers and constants shared by the test packages; fixtures live in conftest.py.

Imported as `helpers`: pytest puts tests/ on sys.path when it loads tests/conftest.py (rootdir
conftest, no __init__.py), and spawned worker processes inherit that path.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# OpenLLaMA-3b-v2's config.json (numbers only, no weights), shipped in the repository so that the seed
# study's table needs nothing beside the checkout; the README's offline `plan` command names this path.
OPEN_LLAMA = ROOT / "examples" / "models" / "open_llama_3b_v2"
