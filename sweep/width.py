"""The search settings a sweep uses at its width (trials at once), chosen on the recorded curves.

`qlora-sweep run` / `submit` and the replay both resolve the search section through `at_width` with
the concurrency the runner will use, so a sweep runs the settings its width was measured with. A
setting the user wrote (non-null in the YAML) always wins; these only fill the ones left null.
The figures behind each choice: benchmarks/RESULTS.md, issue 28.
"""

from __future__ import annotations

from sweep.config import SweepConfig

# From this many trials at once on: the settings (the last row whose width is <= the sweep's applies).
WIDTH_DEFAULTS: list[tuple[int, dict]] = [
    (1, {"constant_liar": True}),
]
WHY = {
    1: "TPE with the constant liar (Optuna's default), n_startup_trials max(2, initial points)",
}


def _row(width: int) -> tuple[int, dict]:
    return [row for row in WIDTH_DEFAULTS if row[0] <= max(1, width)][-1]


def width_search(width: int) -> dict:
    """The default search settings at `width`, as SearchConfig fields (scheduler as a dict)."""
    return _row(width)[1]


def at_width(cfg: SweepConfig, width: int) -> SweepConfig:
    """`cfg` with its null search settings filled for `width` trials at once."""
    s = cfg.search
    fill = {k: v for k, v in width_search(width).items() if getattr(s, k) is None}
    if not fill:
        return cfg
    return cfg.model_copy(update={"search": s.model_copy(update=fill)})


def explain(width: int) -> str:
    """One line for `plan`: what the width chose and why."""
    low = _row(width)[0]
    return f"at {width} trial(s) at once: {WHY[low]}"
