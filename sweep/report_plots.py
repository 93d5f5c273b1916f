"""How the sweep report looks: its figures and the numbers behind them (loss curves, metric against
each swept knob, Optuna parameter importance, the Pareto front of quality against cost). Every
figure draws a trial in the same colour, and its fate (best, stopped early, failed) the same way.

Pure functions of plain data (no MLflow here; `report.py` decides what the report says). Figures
use matplotlib's Agg backend (no display on a cluster node) and are written as PNG files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from sweep import human  # noqa: E402

Point = tuple[str, float, float]  # (label, x, y)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # "tight": a legend outside the axes is kept
    plt.close(fig)
    return path


@dataclass(frozen=True)
class Look:
    """How one trial is drawn in every figure: its colour (the same in the trials table), its name in
    legends, and its fate: "completed", "stopped" (by ASHA), "failed" (or killed) or "best"."""

    colour: str
    name: str
    fate: str = "completed"


def trial_colours(labels: Sequence[str]) -> dict[str, str]:
    """One colour per trial, in the order given (the report's ranking: the best gets the first)."""
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {label: to_hex(cmap(i % cmap.N)) for i, label in enumerate(labels)}


def curve_points(history: Mapping[str, Sequence[tuple[int, float]]], base: float | None) -> dict:
    """{"eval": [(step, loss)...], "train": [...]}, eval starting at step 0 with the base model's eval
    loss (LoRA starts at zero: before the first step the model *is* the base), when it was recorded."""
    out = {
        k.split("_")[0]: sorted(p for p in history.get(k, ()) if _finite(p[1]))
        for k in ("eval_loss", "train_loss")
    }
    evals = out.get("eval", [])
    if _finite(base) and not any(step == 0 for step, _ in evals):
        out["eval"] = [(0, float(base)), *evals]
    return out


def _style(look: Look) -> dict:
    if look.fate == "best":
        return {"linewidth": 3.2, "alpha": 1.0, "zorder": 5}
    if look.fate in ("stopped", "failed"):
        return {"linewidth": 1.0, "alpha": 0.75, "zorder": 2}
    return {"linewidth": 1.8, "alpha": 0.9, "zorder": 3}


_END = {"stopped": ("X", "stopped early (ASHA)"), "failed": ("s", "failed or killed"), "best": ("*", "best")}


def _legend_outside(ax, handles: list, fontsize: int = 8) -> None:
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=fontsize, frameon=False)


def loss_curves(
    curves: Mapping[str, Mapping[str, Sequence]], looks: Mapping[str, Look], path: Path
) -> Path | None:
    """Eval loss (solid, from step 0) and train loss (dashed) per trial in the trial's colour; the base
    model's loss marked once at step 0; a stopped trial thin and ending in a cross, the best thick.
    The legend stands outside the plot so that it covers no curve."""
    if not any(points for c in curves.values() for points in c.values()):
        return None
    fig, ax = plt.subplots(figsize=(8.5, 4.8))  # with the legend beside it: the page's width
    bases = set()
    for label, c in curves.items():
        look = looks[label]
        for key, dash in (("train", "--"), ("eval", "-")):
            pts = c.get(key) or []
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            style = _style(look) | ({"linewidth": 1.0, "alpha": 0.6} if key == "train" else {})
            ax.plot(xs, ys, dash, color=look.colour, **style)
            if key == "eval":
                if xs[0] == 0:
                    bases.add(round(ys[0], 4))
                if look.fate in _END:
                    ax.plot(xs[-1], ys[-1], _END[look.fate][0], color=look.colour, markersize=11 if look.fate == "best" else 8,
                            markeredgecolor="black", markeredgewidth=0.6, zorder=6)  # fmt: skip
    handles = [Line2D([], [], color=looks[k].colour, **_style(looks[k]), label=looks[k].name) for k in curves]
    handles += [
        Line2D([], [], color="gray", linestyle="-", label="eval loss"),
        Line2D([], [], color="gray", linestyle="--", linewidth=1, label="train loss"),
    ]
    if bases:  # once per distinct base (it differs with the bits), its values in the legend
        ax.plot([0] * len(bases), sorted(bases), "o", color="black", markersize=7, zorder=7)
        text = "base model (step 0): " + " / ".join(human.loss(b) for b in sorted(bases))
        handles.append(Line2D([], [], color="black", marker="o", linestyle="", label=text))
    fates = {look.fate for look in looks.values()}
    handles += [
        Line2D([], [], color="gray", marker=m, linestyle="", markeredgecolor="black", label=text)
        for fate, (m, text) in _END.items()
        if fate in fates
    ]
    _legend_outside(ax, handles)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("Loss curves: every trial from the base model (step 0) to its last evaluation")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def knob_axis(values: Sequence[Any], domain: Mapping[str, Sequence] | None) -> list[Any] | None:
    """The categories of a knob's x-axis, in order: the swept values of a `choice` (all of them, tried
    or not), else the values seen when any is not a number; None for a numeric range."""
    if domain and "choice" in domain:
        return list(domain["choice"])
    if all(_finite(v) for v in values):
        return None
    return sorted({str(v) for v in values})


def knob_figure(rows: Sequence[Mapping[str, Any]], params: Sequence[str], domains: Mapping[str, Mapping],
                metric: str, looks: Mapping[str, Look]):  # fmt: skip
    """One panel per swept knob: every trial's `metric` (its colour; the best a star, a stopped trial
    a cross) at its value. `choice` knobs on an evenly spaced categorical axis of exactly the swept
    values, ranges on a numeric axis (log for a log-uniform one). Returns the figure (None if empty)."""
    rows = [r for r in rows if _finite(r.get(metric))]
    params = [p for p in params if any(r.get(p) is not None for r in rows)]
    if not rows or not params:
        return None
    cols = min(3, len(params))
    nrows = math.ceil(len(params) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.3 * nrows), squeeze=False)
    for ax, param in zip(axes.flat, params, strict=False):
        have = [r for r in rows if r.get(param) is not None]
        domain = domains.get(param) or {}
        cats = knob_axis([r[param] for r in have], domain)
        keys = [str(c) for c in cats] if cats is not None else None
        seen: dict[str, int] = {}
        for r in have:
            look = looks[r["label"]]
            if keys is not None:
                k = str(r[param])
                if k not in keys:  # a value outside the space (an initial point): shown, at the end
                    keys.append(k)
                n = seen[k] = seen.get(k, -1) + 1
                x = keys.index(k) + (0.09 * ((n + 1) // 2) * (1 if n % 2 else -1))  # spread equal values
            else:
                x = r[param]
            marker, size = {"best": ("*", 260), "stopped": ("X", 70), "failed": ("s", 50)}.get(
                look.fate, ("o", 60)
            )
            ax.scatter([x], [r[metric]], color=look.colour, marker=marker, s=size, edgecolor="black", linewidth=0.5,
                       zorder=5 if look.fate == "best" else 3)  # fmt: skip
        if keys is not None:
            ax.set_xticks(range(len(keys)), [k if len(k) < 16 else k[:14] + "…" for k in keys])
            ax.set_xlim(-0.6, len(keys) - 0.4)
        elif "loguniform" in domain or "lograndint" in domain:
            ax.set_xscale("log")
        ax.set_xlabel(param)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(params) :]:
        ax.axis("off")
    fig.suptitle(f"{metric} of every trial at each swept value (★ best, ✕ stopped early)")
    return fig


def metric_vs_params(rows, params, domains, metric: str, looks, path: Path) -> Path | None:
    fig = knob_figure(rows, params, domains, metric, looks)
    return _save(fig, path) if fig is not None else None


def param_importance(
    rows: Sequence[Mapping[str, Any]], params: Sequence[str], metric: str, mode: str
) -> tuple[dict[str, float], str]:
    """Optuna's fANOVA importance of each swept parameter for `metric`, or ({}, why it can't be computed).

    The finished trials become an Optuna study (`create_trial` with distributions inferred from the
    values seen: ints, floats (log scale when they span >= 10x) or categories).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = [r for r in rows if _finite(r.get(metric))]
    if len(rows) < 2:
        return {}, f"needs at least 2 trials that reported {metric} (have {len(rows)})"
    dists: dict[str, Any] = {}
    for p in params:
        values = [r.get(p) for r in rows]
        if any(v is None for v in values) or len({str(v) for v in values}) < 2:
            continue  # a parameter that never varied explains nothing
        if all(_finite(v) for v in values):
            lo, hi = min(values), max(values)
            if all(isinstance(v, int) for v in values):
                dists[p] = optuna.distributions.IntDistribution(int(lo), int(hi))
            else:
                dists[p] = optuna.distributions.FloatDistribution(lo, hi, log=lo > 0 and hi / lo >= 10)
        else:
            dists[p] = optuna.distributions.CategoricalDistribution(sorted({str(v) for v in values}))
    if not dists:
        return {}, "no swept parameter took more than one value among the trials"
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    for r in rows:
        values = {
            p: (str(r[p]) if isinstance(d, optuna.distributions.CategoricalDistribution) else r[p])
            for p, d in dists.items()
        }
        study.add_trial(optuna.trial.create_trial(params=values, distributions=dists, value=float(r[metric])))
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        found = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (ValueError, RuntimeError) as err:
        return {}, f"Optuna could not compute importances: {err}"
    return {k: float(v) for k, v in found.items()}, ""


def importance_bar(importances: Mapping[str, float], path: Path) -> Path | None:
    if not importances:
        return None
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(names) + 1.4))
    ax.barh(names, [importances[n] for n in names], color="tab:green")
    ax.set_xlabel("importance (fANOVA, sums to 1)")
    ax.set_title("Which knobs mattered")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def pareto_front(points: Sequence[Point], mode_y: str, mode_x: str) -> list[str]:
    """Labels of the non-dominated points: no other point is at least as good on both objectives and
    strictly better on one (y is the quality objective, x the cost; each minimised or maximised)."""
    sy, sx = (1 if mode_y == "min" else -1), (1 if mode_x == "min" else -1)
    norm = [(label, sx * x, sy * y) for label, x, y in points]
    front = []
    for label, x, y in norm:
        dominated = any(
            (x2 <= x and y2 <= y) and (x2 < x or y2 < y) for other, x2, y2 in norm if other != label
        )
        if not dominated:
            front.append(label)
    return front


def pareto_plot(
    points: Sequence[Point],
    front: Sequence[str],
    y_name: str,
    x_name: str,
    looks: Mapping[str, Look],
    path: Path,
) -> Path | None:
    """All trials as dots in their colours; the Pareto front joined in cost order and labelled."""
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for label, x, y in points:
        ax.scatter([x], [y], color=looks[label].colour, s=70, edgecolor="black", linewidth=0.5, zorder=3)
    best = sorted((p for p in points if p[0] in front), key=lambda p: p[1])
    ax.plot([p[1] for p in best], [p[2] for p in best], "-", color="black", linewidth=1, zorder=2,
            label="Pareto front: no other trial is better on both")  # fmt: skip
    for label, x, y in best:
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel(f"{x_name} (cost)")
    ax.set_ylabel(f"{y_name} (quality)")
    ax.set_title("Quality against cost")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
