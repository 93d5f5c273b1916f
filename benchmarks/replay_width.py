"""Issue 28's replay benchmark: what N trials at once buy on a sweep like the recorded one, in wall-clock
seconds and GPU-seconds until a completed trial is within 1% of the grid's best (sweep/replay.py).

    python -m benchmarks.replay_width benchmarks/grids/smollm2-sample.jsonl --seeds 200 --out DIR
    python -m benchmarks.replay_width benchmarks/grids/smollm2-sample.jsonl --seeds 200 --widths 4,8,16,32 \
        --tune '{"scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 4}}' ... --out DIR

Wall = the replay's clock when the finding trial completes: every recorded second of the trials counts
(setup, training, evals, the final generation and checkpoint: `setup_s`, `train_s`, `final_s`), trials
overlapping as Tune runs them. GPU-seconds = the trial-seconds spent by then (one trial per GPU, each
trial's seconds up to its end, its stop by ASHA or that moment). Each width replays the same seeds;
"speed-up" is the width-1 median (or upper quartile) wall over this width's. `--tune` replays our
searcher and scheduler with the given search settings instead of the width defaults (one JSON per
setting); `--samples` gives, per width and num_samples, the seeds whose whole sweep ends within 1%.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from sweep.replay import Grid, _times, fresh_loads, load_grid, replay, setup_on
from sweep.search import n_startup_trials
from sweep.width import at_width

STRATEGIES = ("defaults", "random", "tpe-no-asha")
WIDTHS = (1, 2, 4, 8, 16, 32)


def one(grid: Grid, strategy: str, width: int, index: int, search: dict | None = None) -> dict:
    """One replayed sweep stopped once it holds a config within 1%: its wall and GPU-seconds to it."""
    run = replay(grid, strategy, index, stop_when_found=True, max_concurrent_trials=width, **(search or {}))
    return {
        "strategy": strategy,
        "width": width,
        "index": index,
        "search": search or {},
        "settings": settings_text(grid, strategy, width, search or {}),
        "wall_s": run.wall_to_target if run.wall_to_target is not None else math.inf,
        "gpu_s": run.cost_to_target if run.cost_to_target is not None else math.inf,
        "trials": len(run.trials),
        "grid_cost_s": round(run.grid_cost, 3),
    }


def floor_s(grid: Grid, seed: int) -> float:
    """No width beats this: the seconds the fastest config within 1% of the best takes on a new worker."""
    records, loads = grid.of_seed(seed), fresh_loads(grid)
    best = min(r["curve"][-1]["eval_loss"] for r in records)
    good = [r for r in records if r["curve"][-1]["eval_loss"] <= 1.01 * best]
    return min(_times(r, setup_on(r, None, loads))[-1] for r in good)


def sweep_end(grid: Grid, width: int, num_samples: int, index: int) -> dict:
    """A whole default sweep of `num_samples` trials: did it end holding a config within 1%, and when."""
    run = replay(grid, "defaults", index, max_concurrent_trials=width, num_samples=num_samples)
    return {
        "width": width,
        "num_samples": num_samples,
        "index": index,
        "reached": run.cost_to_target is not None,
        "wall_s": round(run.wall, 3),
        "gpu_s": round(run.total_cost, 3),
    }


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """Quartiles with a seed that never got there counted as the slowest (inf)."""
    q = np.percentile(np.minimum(np.array(values, dtype=float), 1e12), [25, 50, 75])
    return tuple(math.inf if x >= 1e12 else float(x) for x in q)


def summary(rows: list[dict]) -> dict[tuple, dict]:
    """(strategy, width, search) -> quartiles of wall and GPU-seconds, and speed-up over width 1."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["strategy"], r["width"], json.dumps(r["search"], sort_keys=True)), []).append(r)
    out = {
        key: {
            "settings": rs[0]["settings"],
            "n": len(rs),
            "wall": quartiles([r["wall_s"] for r in rs]),
            "gpu": quartiles([r["gpu_s"] for r in rs]),
        }
        for key, rs in groups.items()
    }
    for (strategy, _, search), s in out.items():
        base = out.get((strategy, 1, search)) or out.get((strategy, 1, "{}"))
        s["speedup"] = (base["wall"][1] / s["wall"][1], base["wall"][2] / s["wall"][2]) if base else None
        s["gpu_ratio"] = s["gpu"][1] / base["gpu"][1] if base else None
    return out


def table(rows: list[dict]) -> str:
    """Markdown: one line per strategy and width (and search setting, with --tune)."""
    head = (
        "| strategy | width | settings | seeds | wall to 1%, s: median | IQR | speed-up vs width 1 (median / Q3) "
        "| GPU-s to 1%: median | IQR | GPU-s vs width 1 (median) |\n" + "|---" * 10 + "|"
    )
    lines = [head]
    for (strategy, width, _), s in summary(rows).items():
        (w1, wm, w3), (g1, gm, g3) = s["wall"], s["gpu"]
        up = f"{s['speedup'][0]:.2f}x / {s['speedup'][1]:.2f}x" if s["speedup"] else "-"
        ratio = f"{s['gpu_ratio']:.2f}x" if s["gpu_ratio"] else "-"
        lines.append(
            f"| {strategy} | {width} | {s['settings']} | {s['n']} | {wm:.0f} | {w1:.0f} - {w3:.0f} | {up} "
            f"| {gm:.0f} | {g1:.0f} - {g3:.0f} | {ratio} |"
        )
    return "\n".join(lines)


def settings_text(grid: Grid, strategy: str, width: int, search: dict) -> str:
    """The searcher and scheduler settings that strategy ran at this width (the width's defaults
    where `search` leaves them unset)."""
    if strategy == "random":
        return "random sampler, no ASHA"
    cfg = at_width(grid.sweep_config(max_concurrent_trials=width, **search), width)
    sch = cfg.search.scheduler
    asha = (
        f"ASHA grace {sch.grace_period} rf {sch.reduction_factor:g}" if strategy == "defaults" else "no ASHA"
    )
    return f"TPE n_startup {n_startup_trials(cfg)}, liar {cfg.search.constant_liar}, {asha}"


def samples_table(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["width"], r["num_samples"]), []).append(r)
    lines = [
        "| width | num_samples | seeds ending within 1% | whole sweep: wall s (median) | GPU-s (median) |",
        "|---|---|---|---|---|",
    ]
    for (width, n), rs in groups.items():
        lines.append(
            f"| {width} | {n} | {sum(r['reached'] for r in rs)}/{len(rs)} | {np.median([r['wall_s'] for r in rs]):.0f} "
            f"| {np.median([r['gpu_s'] for r in rs]):.0f} |"
        )
    return "\n".join(lines)


def _band(ax, widths: list[int], q: list[tuple], color, label: str) -> None:
    ax.plot(widths, [x[1] for x in q], "o-", color=color, label=label)
    ax.fill_between(widths, [x[0] for x in q], [x[2] for x in q], color=color, alpha=0.15)


def plot(rows: list[dict], path: Path, name: str = "", floor: float | None = None) -> Path:
    """Per strategy against width: wall-clock to 1% (median, IQR), its speed-up over the strategy's
    own width 1 (median and upper quartile) and GPU-seconds to 1% (median, IQR). `floor`: the median
    over seeds of `floor_s`, the wall no width beats, drawn with the defaults' ceiling it implies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = summary([r for r in rows if not r["search"]])
    fig, (wall, up, gpu) = plt.subplots(1, 3, figsize=(15, 4.5))
    for n, strategy in enumerate(dict.fromkeys(k[0] for k in stats)):
        keys = sorted((k for k in stats if k[0] == strategy), key=lambda k: k[1])
        widths, color = [k[1] for k in keys], f"C{n}"
        _band(wall, widths, [stats[k]["wall"] for k in keys], color, strategy)
        _band(gpu, widths, [stats[k]["gpu"] for k in keys], color, strategy)
        up.plot(
            widths, [stats[k]["speedup"][0] for k in keys], "o-", color=color, label=f"{strategy}: median"
        )
        up.plot(
            widths,
            [stats[k]["speedup"][1] for k in keys],
            "s--",
            color=color,
            alpha=0.6,
            label="upper quartile",
        )
    ideal = sorted({k[1] for k in stats})
    up.plot(ideal, ideal, ":", color="grey", label="linear")
    first = stats.get(("defaults", 1, "{}"))
    if floor and first:
        wall.axhline(floor, color="black", lw=0.8, ls="-.", label=f"one trial: the floor ({floor:.0f} s)")
        ceiling = first["wall"][1] / floor
        up.axhline(ceiling, color="black", lw=0.8, ls="-.", label=f"defaults' ceiling ({ceiling:.1f}x)")
    for ax, label in (
        (wall, "wall-clock s to 1% (median, IQR shaded)"),
        (up, "speed-up of the wall to 1% over width 1"),
        (gpu, "GPU-seconds to 1% (median, IQR shaded)"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2 if ax is up else 10)
        ax.set_xticks(ideal, [str(w) for w in ideal])
        ax.set_xlabel("trials at once (GPUs)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle(f"{name}: time to a config within 1% of the grid's best".lstrip(": "), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("grid", help="benchmarks/grids/NAME.jsonl (NAME.meta.json next to it)")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--widths", type=_ints, default=WIDTHS)
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument(
        "--tune", nargs="+", type=json.loads, metavar="JSON", help="search settings to replay (defaults only)"
    )
    p.add_argument("--samples", type=_ints, help="num_samples to replay whole default sweeps at")
    p.add_argument(
        "--out", type=Path, help="write rows.jsonl, table.md and width.png (or tune/samples files) here"
    )
    p.add_argument("--rows", type=Path, help="render the table and plot from these saved rows instead")
    a = p.parse_args(argv)
    grid = load_grid(a.grid)
    stem = "samples" if a.samples else "tune" if a.tune else "table"
    if a.rows:
        rows = [json.loads(line) for line in a.rows.read_text().splitlines()]
    elif a.samples:
        rows = [sweep_end(grid, w, n, i) for w in a.widths for n in a.samples for i in range(a.seeds)]
    elif a.tune:
        rows = [one(grid, "defaults", w, i, s) for s in a.tune for w in a.widths for i in range(a.seeds)]
    else:
        strategies = a.strategies.split(",")
        rows = [one(grid, s, w, i) for s in strategies for w in a.widths for i in range(a.seeds)]
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        if not a.rows:  # the raw rows first: a table or plot that fails loses nothing
            (a.out / f"{stem}-rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = samples_table(rows) if stem == "samples" else table(rows)
    if a.out:
        (a.out / f"{stem}.md").write_text(text + "\n")
        if stem == "table":
            floor = float(np.median([floor_s(grid, grid.seeds[r["index"] % len(grid.seeds)]) for r in rows]))
            print(f"floor (median over seeds): {floor:.1f} s")
            print(f"plot: {plot(rows, a.out / 'width.png', Path(a.grid).name, floor)}")
    print(text)


if __name__ == "__main__":
    main()
