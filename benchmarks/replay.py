"""Issue 23's replay benchmark: how much of a grid's cost each search strategy spends before it holds a
config within 1% of the grid's best, over many seeds, on recorded learning curves (sweep/replay.py).

    python -m benchmarks.replay benchmarks/grids/NAME.jsonl --seeds 20 --out DIR     # table + plot
    python -m benchmarks.replay benchmarks/grids/NAME.jsonl --tune --seeds 20 --out DIR --jobs 8
    python -m benchmarks.replay benchmarks/grids/NAME.jsonl --example examples/quickstart-gpu.yaml \
        --tune --num-samples 8,12,16,20 --startup 2 --grace 1,2 --rf 2 --out DIR   # an example's own sweep
    python -m benchmarks.replay --write-synthetic benchmarks/grids/synthetic.jsonl   # the test grid

The table gives, per strategy, the median and interquartile range over seeds of the cost (trial-seconds,
as a share of the whole grid's cost) until a completed trial is within `--tol` of the grid's best final
eval loss, and, at the same budgets for every strategy (`--budget`, default 5%, 10% and 30% of the
grid's cost), how many seeds had got there and the median gap of their best-so-far. The plot is the
median best-so-far gap against cost. `--tune` replays our defaults over n_startup_trials x ASHA grace
period x reduction factor x num_samples (plus ASHA off) and ranks the settings by median cost; with a
set num_samples it also gives what the whole sweep costs (trial-seconds and wall seconds, in the
recorder's seconds). `--example` replays a sweep file's search section on the grid within its space.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
from pathlib import Path

import numpy as np

from sweep.replay import STRATEGIES, Grid, load_grid, replay, synthetic_grid, write_grid
from sweep.search import n_startup_trials
from trainables.config import read_yaml

ISSUE_SPACE = {  # issue 23's space, with the synthetic grid's values standing in for the recorded ones
    "lora.r": {"choice": [4, 8, 16, 32]},
    "lora.target_modules": {"choice": ["attention", "all-linear", "all-linear+lm_head"]},
    "quantization.bits": {"choice": [4, 8, 16]},
    "training.lr": {"choice": [0.0004, 0.0008, 0.0016]},
}
_GRID: Grid | None = None  # per worker process


def _load(grid: Grid | str) -> None:
    global _GRID
    _GRID = grid if isinstance(grid, Grid) else load_grid(grid)


def _one(job: tuple) -> dict:
    """One replayed run, reduced to what the tables and the plot need (costs as shares of the grid's)."""
    strategy, index, tol, stop_when_found, search = job
    run = replay(_GRID, strategy, index, tol, stop_when_found, **search)
    return {
        "strategy": strategy,
        "index": index,
        "search": search,
        "trials": len(run.trials),
        "distinct": len({json.dumps(c, sort_keys=True) for c in run.configs()}),
        "cost_to_target": run.cost_to_target / run.grid_cost if run.cost_to_target is not None else math.inf,
        "total": run.total_cost / run.grid_cost,
        "answered": (run.search or {}).get("answered", 0),
        "curve": [(round(c / run.grid_cost, 5), round(b / run.grid_best - 1, 6)) for c, b in run.curve],
        "grid_cost_s": round(run.grid_cost, 3),
        "total_cost_s": round(run.total_cost, 3),
        "wall_s": round(run.wall, 3),
    }


def _map(grid: Grid | str, jobs: list[tuple], workers: int) -> list[dict]:
    if workers <= 1:
        _load(grid)
        return [_one(j) for j in jobs]
    with multiprocessing.get_context("spawn").Pool(workers, _load, (grid,)) as pool:
        return pool.map(_one, jobs, chunksize=1)


def compare(
    grid: Grid | str, seeds: int = 20, strategies=STRATEGIES, tol: float = 0.01, workers: int = 1, **search
) -> list[dict]:
    """Every strategy over `seeds` replay seeds, each run to its end (num_samples or exhaustion)."""
    return _map(grid, [(s, i, tol, False, search) for s in strategies for i in range(seeds)], workers)


def _gap_at(row: dict, budget: float) -> float:
    gaps = [g for c, g in row["curve"] if c <= budget]
    return min(gaps) if gaps else math.inf


def _pct(x: float) -> str:
    return "not reached" if not math.isfinite(x) else f"{100 * x:.1f}%"


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    """Quartiles where a seed that never reached the target counts as the most expensive (inf)."""
    big = (
        1e12  # stands in for inf (numpy interpolates inf - inf to nan); costs are shares of the grid's, <= 1
    )
    q = np.percentile(np.minimum(np.array(values, dtype=float), big), [25, 50, 75])
    return tuple(math.inf if x > 1e3 else float(x) for x in q)


def table(rows: list[dict], tol: float = 0.01, budgets: tuple[float, ...] = (0.05, 0.1, 0.3)) -> str:
    """Markdown: one line per strategy, in the order first seen. Per budget (a share of the grid's
    cost, the same for every strategy): the seeds that had found the target by then, and the median
    gap of their best-so-far to the grid's best."""
    head = (
        f"| strategy | seeds | reached {100 * tol:g}% | cost to {100 * tol:g}%: median | IQR | "
        + "".join(f"by {100 * b:g}% of grid cost: reached (median gap) | " for b in budgets)
        + "cost of the whole run (median) | proposals answered (median) |"
    )
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        rs = [r for r in rows if r["strategy"] == strategy]
        costs = [r["cost_to_target"] for r in rs]
        q1, med, q3 = _quartiles(costs)
        at = "".join(
            f"{sum(c <= b for c in costs)}/{len(rs)} ({_pct(_quartiles([_gap_at(r, b) for r in rs])[1])}) | "
            for b in budgets
        )
        out.append(
            f"| {strategy} | {len(rs)} | {sum(map(math.isfinite, costs))}/{len(rs)} | {_pct(med)} "
            f"| {_pct(q1)} - {_pct(q3)} | {at}{_pct(float(np.median([r['total'] for r in rs])))} "
            f"| {np.median([r['answered'] for r in rs]):g} |"
        )
    return "\n".join(out)


def plot(
    rows: list[dict], path: Path, tol: float = 0.01, budgets: tuple[float, ...] = (0.3,), name: str = ""
) -> Path:
    """Median (over seeds) best-so-far gap to the grid's best against cost, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = np.geomspace(0.005, 1, 801)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        runs = [[_gap_at(r, x) for x in xs] for r in rows if r["strategy"] == strategy]
        med = np.median(np.array(runs), axis=0)
        ok = np.isfinite(med)
        ax.step(100 * xs[ok], 100 * med[ok], where="post", label=f"{strategy} ({len(runs)} seeds)")
    ax.axhline(100 * tol, color="grey", ls="--", lw=0.8)
    for b in budgets:
        ax.axvline(100 * b, color="grey", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xticks([1, 2, 5, 10, 20, 30, 50, 100], ["1", "2", "5", "10", "20", "30", "50", "100"])
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xlim(0.5, 100)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("cost so far (% of the whole grid's trial-seconds, log scale)")
    ax.set_ylabel("best completed eval loss vs grid best (% above)")
    ax.set_title(f"{name}: median over seeds".lstrip(": "), fontsize=11)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def tune(
    grid: Grid | str,
    seeds: int = 20,
    startups=(2, 4, 6, 10),
    graces=(1, 2, 3),
    rfs=(2, 3, 4),
    num_samples=(None,),
    tol: float = 0.01,
    workers: int = 1,
    **search,
) -> list[dict]:
    """Our defaults (TPE + ASHA + dedup) over the settings' product, plus ASHA off per n_startup_trials.
    num_samples None = the whole grid, and runs stop once they have found the target (only the cost to
    it is wanted); a set num_samples runs to its end (what that sweep would cost)."""
    settings = [
        {"n_startup_trials": s, "scheduler": {"type": "asha", "grace_period": g, "reduction_factor": f}}
        for s, g, f in itertools.product(startups, graces, rfs)
    ]
    settings += [{"n_startup_trials": s, "scheduler": {"type": "none"}} for s in startups]
    settings = [{**search, **s, **({"num_samples": n} if n else {})} for s in settings for n in num_samples]
    jobs = [("defaults", i, tol, "num_samples" not in s, s) for s in settings for i in range(seeds)]
    return _map(grid, jobs, workers)


def _paired(rs: list[dict], ref: list[dict]) -> str:
    """Mean over seeds of (this setting's cost to the target - the reference's), same replay seeds
    (so the same training seed and search.seed), with a bootstrap 95% interval; a seed that never
    reached the target counts as the whole grid's cost."""
    mine = {r["index"]: min(r["cost_to_target"], 1.0) for r in rs}
    theirs = {r["index"]: min(r["cost_to_target"], 1.0) for r in ref}
    d = np.array([mine[i] - theirs[i] for i in sorted(mine.keys() & theirs.keys())])
    if not len(d) or rs is ref:
        return "(reference)" if rs is ref else "-"
    boot = np.random.default_rng(0).choice(d, (2000, len(d))).mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return f"{100 * d.mean():+.2f} pp [{100 * lo:+.2f}, {100 * hi:+.2f}]"


def tune_table(rows: list[dict], tol: float = 0.01, reference: dict | None = None) -> str:
    """Markdown: one line per setting, by num_samples, then best (lowest median cost to the target)
    first. `reference` (n_startup_trials and scheduler: the shipped defaults) is the setting each
    other one is compared with, seed by seed, at the same num_samples."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(json.dumps(r["search"], sort_keys=True), []).append(r)

    def is_ref(s: dict, n) -> bool:
        return bool(reference) and s.get("num_samples") == n and all(s[k] == v for k, v in reference.items())

    lines = []
    for rs in groups.values():
        s = rs[0]["search"]
        sch = s["scheduler"]
        q1, med, q3 = _quartiles([r["cost_to_target"] for r in rs])
        reached = sum(math.isfinite(r["cost_to_target"]) for r in rs)
        asha = (
            f"{sch['grace_period']} | {sch['reduction_factor']:g}" if sch["type"] == "asha" else "off | off"
        )
        whole = (
            f"{_pct(float(np.median([r['total'] for r in rs])))} | {np.median([r['wall_s'] for r in rs]):.0f}"
            if "num_samples" in s
            else "- | -"  # stopped once found
        )
        ref = next((g for g in groups.values() if is_ref(g[0]["search"], s.get("num_samples"))), None)
        lines.append(
            (
                (s.get("num_samples", math.inf), med, -reached),
                f"| {s['n_startup_trials']} | {asha} | {s.get('num_samples', 'grid')} "
                f"| {reached}/{len(rs)} | {_pct(med)} | {_pct(q1)} - {_pct(q3)} | {whole} "
                f"| {_paired(rs, ref) if ref else '-'} |",
            )
        )
    head = (
        f"| n_startup_trials | grace_period | reduction_factor | num_samples | reached {100 * tol:g}% "
        f"| cost to {100 * tol:g}%: median | IQR | whole run: cost (median) | wall s (median) "
        "| vs shipped, same seeds: mean diff [95%] |\n" + "|---" * 10 + "|"
    )
    return "\n".join([head] + [line for _, line in sorted(lines, key=lambda x: x[0])])


def shipped(grid: Grid, **search) -> dict:
    """The settings `--tune` varies, as a sweep with these search settings ships them."""
    cfg = grid.sweep_config(**search)
    return {"n_startup_trials": n_startup_trials(cfg), "scheduler": cfg.search.scheduler.model_dump()}


def _ints(text: str) -> tuple:
    return tuple(int(x) for x in text.split(","))


def _floats(text: str) -> tuple:
    return tuple(float(x) for x in text.split(","))


def example_search(grid: Grid, path: Path) -> tuple[Grid, dict]:
    """An example sweep's search settings, replayed on the grid restricted to its space: its initial
    points, concurrency, scheduler and n_startup_trials (num_samples stays the caller's: the whole
    grid for the cost to the target, --num-samples for what the example's own count gets)."""
    search = read_yaml(path).get("search", {})
    keep = ("initial_points", "max_concurrent_trials", "scheduler", "n_startup_trials")
    return grid.restrict(search.get("space", grid.meta["space"])), {k: search[k] for k in keep if k in search}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("grid", nargs="?", help="benchmarks/grids/NAME.jsonl (NAME.meta.json next to it)")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument(
        "--out", type=Path, help="write table.md, runs.json and replay.png (tune.md with --tune) here"
    )
    p.add_argument("--jobs", type=int, default=1, help="worker processes")
    p.add_argument("--tol", type=float, default=0.01)
    p.add_argument(
        "--budget",
        type=_floats,
        default=(0.05, 0.1, 0.3),
        help="the common budgets of the table (shares of the grid's cost, comma-separated)",
    )
    p.add_argument("--concurrency", type=int, help="search.max_concurrent_trials (default: the sweep's, 2)")
    p.add_argument(
        "--example",
        type=Path,
        metavar="YAML",
        help="replay this sweep file's search section (space, initial points, concurrency, scheduler)",
    )
    p.add_argument("--num-samples", help="search.num_samples (default: the whole grid); with --tune a list")
    p.add_argument(
        "--tune", action="store_true", help="rank n_startup_trials x grace x reduction factor x num_samples"
    )
    p.add_argument("--startup", type=_ints, default=(2, 4, 6, 10))
    p.add_argument("--grace", type=_ints, default=(1, 2, 3))
    p.add_argument("--rf", type=_ints, default=(2, 3, 4))
    p.add_argument(
        "--write-synthetic", type=Path, metavar="PATH.jsonl", help="write the synthetic test grid and exit"
    )
    a = p.parse_args(argv)
    if a.write_synthetic:
        write_grid(synthetic_grid(ISSUE_SPACE), a.write_synthetic)
        print(f"wrote {a.write_synthetic} and its .meta.json")
        return
    if not a.grid:
        p.error("a grid file is required")
    grid, search = load_grid(a.grid), {}
    if a.example:
        grid, search = example_search(grid, a.example)
    if a.concurrency:
        search["max_concurrent_trials"] = a.concurrency
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
    if a.tune:
        samples = _ints(a.num_samples) if a.num_samples else (None,)
        rows = tune(grid, a.seeds, a.startup, a.grace, a.rf, samples, a.tol, a.jobs, **search)
        text = tune_table(rows, a.tol, shipped(grid, **search))
        if a.out:
            (a.out / "tune.md").write_text(text + "\n")
            (a.out / "tune_runs.json").write_text(json.dumps(rows))
        print(text)
        return
    if a.num_samples:
        search["num_samples"] = int(a.num_samples)
    rows = compare(grid, a.seeds, STRATEGIES, a.tol, a.jobs, **search)
    text = table(rows, a.tol, a.budget)
    if a.out:
        (a.out / "table.md").write_text(text + "\n")
        (a.out / "runs.json").write_text(json.dumps(rows))
        at_once = grid.sweep_config(**search).search.max_concurrent_trials
        name = Path(a.grid).name + (f" as {a.example.name}" if a.example else "") + f", {at_once} at a time"
        print(f"plot: {plot(rows, a.out / 'replay.png', a.tol, a.budget, name)}")
    print(text)


if __name__ == "__main__":
    main()
