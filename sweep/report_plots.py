"""How the sweep report looks: its figures and the numbers behind them (loss curves, metric against
each swept parameter, Optuna parameter importance, the Pareto front of quality against cost), and
its two renderings of the same blocks, Markdown and a self-contained HTML page.

Pure functions of plain data (no MLflow here; `report.py` decides what the report says). Figures
use matplotlib's Agg backend (no display on a cluster node) and are written as PNG files.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first

Point = tuple[str, float, float]  # (label, x, y)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_curves(
    histories: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]], path: Path
) -> Path | None:
    """Eval loss (solid) and train loss (dashed, same colour) against the optimizer step, per trial."""
    if not any(series for h in histories.values() for series in h.values()):
        return None
    fig, ax = plt.subplots(figsize=(9, 4.8))
    cmap = plt.get_cmap("tab10" if len(histories) <= 10 else "tab20")
    for i, (label, h) in enumerate(histories.items()):
        color = cmap(i % cmap.N)
        for key, style in (("eval_loss", "-"), ("train_loss", "--")):
            pts = sorted(p for p in h.get(key, ()) if _finite(p[1]))
            if pts:
                ax.plot(
                    *zip(*pts, strict=True),
                    style,
                    color=color,
                    marker="." if key == "eval_loss" else None,
                    label=f"{label} ({key.split('_')[0]})",
                    alpha=0.9,
                )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("Loss curves (solid: eval, dashed: train)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if len(histories) > 6 else 1, loc="best")
    return _save(fig, path)


def _axis_values(values: Sequence[Any]) -> tuple[list[float], list[str] | None]:
    """Numbers stay numbers; anything else becomes positions on a categorical axis."""
    if all(_finite(v) for v in values):
        return [float(v) for v in values], None
    cats = sorted({str(v) for v in values})
    return [float(cats.index(str(v))) for v in values], cats


def metric_vs_params(
    rows: Sequence[Mapping[str, Any]], params: Sequence[str], metric: str, path: Path
) -> Path | None:
    """One scatter per swept parameter: the objective of every trial that reported it."""
    rows = [r for r in rows if _finite(r.get(metric))]
    params = [p for p in params if any(r.get(p) is not None for r in rows)]
    if not rows or not params:
        return None
    cols = min(3, len(params))
    nrows = math.ceil(len(params) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    for ax, param in zip(axes.flat, params, strict=False):
        have = [r for r in rows if r.get(param) is not None]
        xs, cats = _axis_values([r[param] for r in have])
        ax.scatter(xs, [r[metric] for r in have], color="tab:blue", alpha=0.8)
        if cats is not None:
            ax.set_xticks(
                range(len(cats)), [c if len(c) < 18 else c[:16] + "…" for c in cats], rotation=20, fontsize=7
            )
        elif min(xs) > 0 and max(xs) / min(xs) >= 20:
            ax.set_xscale("log")
        ax.set_xlabel(param)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(params) :]:
        ax.axis("off")
    fig.suptitle(f"{metric} against each swept parameter")
    return _save(fig, path)


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
    points: Sequence[Point], front: Sequence[str], y_name: str, x_name: str, path: Path
) -> Path | None:
    """All trials as dots; the Pareto front highlighted and joined in cost order."""
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ax.scatter(
        [p[1] for p in points], [p[2] for p in points], color="lightgray", edgecolor="gray", label="trial"
    )
    best = sorted((p for p in points if p[0] in front), key=lambda p: p[1])
    ax.plot([p[1] for p in best], [p[2] for p in best], "o-", color="tab:red", label="Pareto front")
    for label, x, y in best:
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(f"{x_name} (cost)")
    ax.set_ylabel(f"{y_name} (quality)")
    ax.set_title("Quality against cost")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


# ---------------------------------------------------------------- rendering


def to_markdown(blocks: list[tuple]) -> str:
    out = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2"):
            out.append(("# " if kind == "h1" else "## ") + rest[0])
        elif kind == "p":
            out.append(rest[0])
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in rest[0]))
        elif kind == "table":
            headers, rows = rest
            esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
            lines = ["| " + " | ".join(map(esc, headers)) + " |", "|" + "---|" * len(headers)]
            lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{rest[1]}]({Path(rest[0]).name})")
        elif kind == "pre":
            out.append(f"```yaml\n{rest[0].rstrip()}\n```")
    return "\n\n".join(out) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1300px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}
th{background:#f0f0f0}tr.best td{background:#fff6d5}img{max-width:100%;display:block;margin:1em 0}
pre{background:#f6f8fa;padding:1em;overflow:auto;font-size:12px}figcaption{color:#555;font-size:13px}"""


def to_html(blocks: list[tuple], title: str) -> str:
    e = html.escape
    out = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{_CSS}</style></head><body>"
    ]
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "p"):
            out.append(f"<{kind}>{e(rest[0])}</{kind}>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in rest[0]) + "</ul>")
        elif kind == "table":
            headers, rows = rest
            head = "".join(f"<th>{e(h)}</th>" for h in headers)
            body = "".join(
                ("<tr class='best'>" if "★" in "".join(r) else "<tr>")
                + "".join(f"<td>{e(c)}</td>" for c in r)
                + "</tr>"
                for r in rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode(Path(rest[0]).read_bytes()).decode()
            out.append(
                f"<figure><img src='data:image/png;base64,{data}' alt='{e(rest[1])}'>"
                f"<figcaption>{e(rest[1])}</figcaption></figure>"
            )
        elif kind == "pre":
            out.append(f"<pre>{e(rest[0])}</pre>")
    return "\n".join(out) + "\n</body></html>\n"
