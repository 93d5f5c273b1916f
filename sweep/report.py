"""The sweep report (`report.md` + a self-contained `report.html`), built from MLflow alone.

Everything is read back from the tracking store (`report_read`: parent run: search settings, judge
calibration, base generations; child runs: params, metrics, histories, artifacts), so `qlora-sweep
report` works on any finished or interrupted sweep, on any machine that can reach the store. The
content is built once as a list of blocks (what the report says, here), drawn by `report_plots`,
`report_timeline` and `report_time`, and rendered twice by `report_render` (Markdown, and HTML with
the figures embedded). Numbers are written for a person (`sweep/human.py`); exact values stay in MLflow.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import yaml

from sweep import human
from sweep import report_plots as plots
from sweep.report_read import NULL, Trial, artifact_text, find_parent, generations, read_trials
from sweep.report_render import to_html, to_markdown
from sweep.report_time import cost_sentence, time_blocks
from sweep.tracking import client_for
from sweep.tracking_params import DATA_STATS_PARAMS, data_stats_from_params
from trainables.data import describe_stats

__all__ = ["Trial", "build_report"]

TABLE = (  # (header, source, key, format)
    ("r", "param", "lora.r", human.number),
    ("target modules", "param", "lora.target_modules", human.number),
    ("bits", "param", "quantization.bits", human.number),
    ("lr", "param", "training.lr", human.number),
    ("trainable params", "metric", "trainable_params", human.count),
    ("train time", "metric", "elapsed_s", human.duration),
    ("tokens/s", "metric", "tokens_per_s", human.count),
    ("peak mem", "metric", "peak_mem_gb", human.gigabytes),
    ("eval loss", "metric", "eval_loss", human.loss),
    ("perplexity", "metric", "perplexity", human.number),
    ("judge score", "metric", "judge_score", human.number),
)


def _fmt(v: Any, name: str = "") -> str:
    """A param or metric for a person: losses with four decimals, anything else to 3 figures."""
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return human.loss(v) if "loss" in name else human.number(v)


# ---------------------------------------------------------------- analysis


def _objectives(params: dict[str, str]) -> list[tuple[str, str]]:
    """[(metric, mode)] from the parent's search params: one or two objectives."""
    out = [(params.get("search.metric") or "eval_loss", params.get("search.mode") or "min")]
    if params.get("search.metric2") not in NULL:
        out.append((params["search.metric2"], params.get("search.mode2") or "min"))
    return out


def _swept(params: dict[str, str], trials: list[Trial]) -> list[str]:
    """The swept dotted paths from `search.space` (a JSON mapping or list); else params that varied."""
    try:
        space = json.loads(params.get("search.space", "null"))
    except json.JSONDecodeError:
        space = None
    if isinstance(space, dict) and space:
        return list(space)
    if isinstance(space, list) and space:
        return [str(s).split(":")[0].strip() for s in space]
    keys = sorted({k for t in trials for k in t.params} - set(DATA_STATS_PARAMS.values()))
    return [k for k in keys if len({json.dumps(t.params.get(k), default=str) for t in trials}) > 1]


def _sort_key(objectives: list[tuple[str, str]]):
    """Finished trials first (a failed or killed trial's last value is no result), each group by
    the objectives; trials that never reported the objective last within their group."""

    def key(t: Trial):
        vals: list = [t.status != "FINISHED"]
        for metric, mode in objectives:
            v = t.metrics.get(metric)
            ok = v is not None and math.isfinite(v)
            vals += [not ok, (v if mode == "min" else -v) if ok else 0.0]
        return (*vals, t.label)

    return key


def _best(trials: list[Trial], metric: str) -> Trial | None:
    """The top-ranked trial that completed (with its final evaluation); else any that reported."""
    ranked = [t for t in trials if t.metrics.get(metric) is not None and math.isfinite(t.metrics[metric])]
    done = [t for t in ranked if t.status == "FINISHED" and not t.stopped_early]
    return (done or ranked or [None])[0]


def _unflatten(flat: dict[str, Any]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


# ---------------------------------------------------------------- the report


def _swept_domains(params: dict[str, str]) -> dict[str, dict]:
    """{path: {"choice": [4, 8, 16]}} from `search.space` when it was logged as a mapping."""
    try:
        space = json.loads(params.get("search.space", "null"))
    except json.JSONDecodeError:
        return {}
    return {k: v for k, v in space.items() if isinstance(v, dict)} if isinstance(space, dict) else {}


def _looks(trials: list[Trial], best: Trial | None, swept: list[str]) -> dict[str, plots.Look]:
    """Each trial's colour (in ranking order), legend name (its id and swept values) and fate."""
    colours = plots.trial_colours([t.label for t in trials])
    looks = {}
    for t in trials:
        fate = (
            "best" if t is best
            else "failed" if t.status in ("FAILED", "KILLED")
            else "stopped" if t.stopped_early
            else "completed"
        )  # fmt: skip
        values = " ".join(f"{p.split('.')[-1]}={_fmt(t.params.get(p))}" for p in swept if p in t.params)
        looks[t.label] = plots.Look(colours[t.label], f"{t.label} {values}".strip(), fate)
    return looks


def build_report(
    tracking_uri: str, experiment_name: str, out_dir: str | Path, parent_run_id: str | None = None
) -> tuple[Path, Path]:
    """Write `report.md` (figures next to it) and `report.html` (figures embedded) for a sweep, log both
    (and the figures) to the sweep's parent run under `report/`, and return their paths."""
    client = client_for(tracking_uri)
    parent = find_parent(client, experiment_name, parent_run_id)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    pid = parent.info.run_id
    pparams = dict(parent.data.params)
    objectives = _objectives(pparams)
    metric, mode = objectives[0]
    trials = sorted(read_trials(client, pid), key=_sort_key(objectives))
    swept = _swept(pparams, trials)
    trusted = parent.data.tags.get("judge_trusted", "").lower() != "false"
    best = _best(trials, metric)
    looks = _looks(trials, best, swept)

    blocks: list[tuple] = [("h1", f"Sweep report: {experiment_name}")]
    blocks.append(
        (
            "p",
            f"Sweep run {pid} ({parent.info.status}); objective: {mode} {metric}"
            + (f", then {objectives[1][1]} {objectives[1][0]}" if len(objectives) > 1 else "")
            + f"; {len(trials)} trials; written {time.strftime('%Y-%m-%d %H:%M')}.",
        )
    )
    importances, why = plots.param_importance([_row(t, swept) for t in trials], swept, metric, mode)
    blocks += [
        ("h2", "Summary"),
        ("ul", _summary(trials, best, metric, mode, importances, why, parent, trusted)),
    ]
    blocks += _table_blocks(trials, objectives, best, trusted, looks)
    blocks += _figure_blocks(out, trials, swept, _swept_domains(pparams), objectives, importances, why, looks)
    blocks += time_blocks(trials, best, parent.info.start_time, out, looks)
    blocks += _judge_blocks(parent, trusted)
    if best is not None:
        blocks += _best_config_blocks(client, best, out)
        blocks += _generation_blocks(client, best, pid, trusted)

    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(to_markdown(blocks), encoding="utf-8")
    html_path.write_text(to_html(blocks, f"Sweep report: {experiment_name}"), encoding="utf-8")
    for path in [md_path, html_path, *(b[1] for b in blocks if b[0] == "img")]:
        client.log_artifact(pid, str(path), "report")
    return md_path, html_path


def _row(t: Trial, swept: list[str]) -> dict[str, Any]:
    return {**{p: t.params.get(p) for p in swept}, **t.metrics, "label": t.label}


def _summary(trials, best, metric, mode, importances, why, parent, trusted) -> list[str]:
    counts: dict[str, int] = {}
    for t in trials:
        s = t.status_text().split(":")[0]
        counts[s] = counts.get(s, 0) + 1
    items = [
        f"Trials: {len(trials)} (" + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) + ")."
    ]
    if "proposals_answered" in parent.data.metrics:  # sweep/dedup.py: repeats were answered, not trained
        answered = parent.data.metrics["proposals_answered"]
        items.append(f"Proposals answered from earlier trials: {answered:.0f}.")
    if best is None:
        items.append(f"No trial reported {metric} yet, so there is no best configuration.")
    else:
        items.append(
            f"Best trial: {best.label} with {metric} = {_fmt(best.metrics[metric], metric)} ({mode}imised)."
        )
        base, tuned = best.metrics.get("base_eval_loss"), best.metrics.get("eval_loss")
        if base and tuned is not None and math.isfinite(base):
            items.append(
                f"Against the base model: eval loss {human.loss(base)} -> {human.loss(tuned)}, "
                f"{100 * abs(base - tuned) / base:.1f}% {'lower' if tuned <= base else 'higher'}."
            )
        if "judge_score" in best.metrics:
            note = "" if trusted else " (the judge failed calibration: not trustworthy)"
            items.append(f"Judge score of the best trial: {_fmt(best.metrics['judge_score'])}{note}.")
    items += _data_summary(trials, best)
    if importances:
        top = ", ".join(f"{k} ({100 * v:.0f}%)" for k, v in list(importances.items())[:3])
        items.append(f"Knobs that mattered most for {metric}: {top} (Optuna fANOVA importance).")
    else:
        items.append(f"Which knobs mattered: not computed; {why}.")
    items.append(cost_sentence(trials, parent.info.start_time, parent.info.end_time))
    return items


def _data_summary(trials: list[Trial], best: Trial | None) -> list[str]:
    """The rows trials trained on and the rows left out (blank cells, duplicates, overlong), from the
    `data.rows_*` params: the best trial's, saying so when other trials' data differ."""
    seen = [(t, data_stats_from_params(t.params)) for t in ([best] if best else []) + trials]
    seen = [(t, stats) for t, stats in seen if stats]
    if not seen:
        return []
    trial, stats = seen[0]
    differ = any(other != stats for _, other in seen)
    who = f" (trial {trial.label}; other trials' data differ)" if differ else ""
    return [f"Data{who}: {describe_stats(stats)}."]


def _table_blocks(trials, objectives, best, trusted, looks) -> list[tuple]:
    """One row per trial; a column no trial has a value in (judge score without a judge) is left out."""
    extra = [m for m, _ in objectives if m not in {k for _, _, k, _ in TABLE}]
    columns = [
        (h, (lambda t, s=source, k=key: t.metrics.get(k) if s == "metric" else t.params.get(k)), fmt, key)
        for h, source, key, fmt in TABLE
    ] + [(m, (lambda t, k=m: t.metrics.get(k)), lambda v, k=m: _fmt(v, k), m) for m in extra]
    columns = [c for c in columns if any(c[1](t) is not None for t in trials)]
    headers = ["#", "trial"] + [h for h, *_ in columns] + ["status"]
    rows = []
    for i, t in enumerate(trials, 1):
        cells = [str(i), t.label + (" ★" if t is best else "")]
        for _, get, fmt, key in columns:
            v = get(t)
            text = ", ".join(map(str, v)) if isinstance(v, list) else fmt(v)
            cells.append(text + ("†" if key == "judge_score" and v is not None and not trusted else ""))
        rows.append(cells + [t.status_text()])
    note = (
        f"Sorted by {', then '.join(f'{m} ({mode})' for m, mode in objectives)}, trials that did not finish"
        " last; ★ marks the best trial; each trial keeps its colour in every figure."
    )
    if not trusted:
        note += " † judge scores are NOT trustworthy: the judge failed its calibration."
    return [("h2", "Trials"), ("p", note), ("table", headers, rows, [looks[t.label].colour for t in trials])]


def _figure_blocks(out, trials, swept, domains, objectives, importances, why, looks) -> list[tuple]:
    metric, mode = objectives[0]
    blocks: list[tuple] = [("h2", "Figures")]
    curves = {t.label: plots.curve_points(t.history, t.metrics.get("base_eval_loss")) for t in trials}
    rows = [_row(t, swept) for t in trials]
    figs = [
        ("Loss curves", plots.loss_curves(curves, looks, out / "loss_curves.png")),
        (
            f"{metric} at each swept value",
            plots.metric_vs_params(rows, swept, domains, metric, looks, out / "metric_vs_params.png"),
        ),
        ("Parameter importance", plots.importance_bar(importances, out / "importance.png")),
    ]
    if len(objectives) > 1:
        metric2, mode2 = objectives[1]
        pts = [
            (t.label, t.metrics[metric2], t.metrics[metric])
            for t in trials  # killed/failed/running trials are no candidates, whatever they reported
            if t.status == "FINISHED"
            and all(math.isfinite(t.metrics.get(k, math.nan)) for k in (metric, metric2))
        ]
        front = plots.pareto_front(pts, mode, mode2)
        figs.append(
            (
                f"Pareto front: {metric} against {metric2}",
                plots.pareto_plot(pts, front, metric, metric2, looks, out / "pareto.png"),
            )
        )
        blocks.append(
            (
                "p",
                f"Pareto-optimal trials ({metric} {mode}, {metric2} {mode2}): {', '.join(front) or 'none'}.",
            )
        )
    for title, path in figs:
        if path is not None:
            blocks.append(("img", path, title))
    if not importances:
        blocks.append(("p", f"Parameter importance: not computed; {why}."))
    return blocks


def _judge_blocks(parent, trusted: bool) -> list[tuple]:
    m = parent.data.metrics
    if "judge_accuracy" not in m and "judge_trusted" not in parent.data.tags:
        return [
            ("h2", "Judge calibration"),
            ("p", "The judge was not calibrated for this sweep (or not used)."),
        ]
    verdict = "trusted" if trusted else "NOT trusted: treat judge scores as noise"
    text = (
        f"Accuracy on calibration pairs: {_fmt(m.get('judge_accuracy'))}; order consistency: "
        f"{_fmt(m.get('judge_consistency'))}; verdict: {verdict}."
    )
    return [("h2", "Judge calibration"), ("p", text)]


def _best_config_blocks(client, best: Trial, out: Path) -> list[tuple]:
    text = artifact_text(client, best.run_id, "trial_config.yaml")
    note = (
        f"The full trial config of {best.label}, ready to re-run with `qlora-sweep train best_config.yaml`."
    )
    if text is None:
        config = {k: v for k, v in best.params.items() if k not in DATA_STATS_PARAMS.values()}
        text = yaml.safe_dump(_unflatten(config), sort_keys=False)
        note = f"{best.label} has no trial_config.yaml artifact: rebuilt from its MLflow params (values may be truncated)."
    (out / "best_config.yaml").write_text(text, encoding="utf-8")
    return [("h2", "Best configuration"), ("p", note), ("pre", text)]


def _generation_blocks(client, best: Trial, parent_id: str, trusted: bool, limit: int = 5) -> list[tuple]:
    """The best trial's first generations beside the base model's for the same prompts (if recorded)."""
    tuned, base = generations(client, best, parent_id)
    if not tuned:
        return [("h2", "Sample generations"), ("p", f"{best.label} logged no generations.")]
    judged = any(r.get("judge_score") is not None for r in tuned)
    headers = ["product", "base model", f"best ({best.label})", "reference"]
    headers += ["judge" + ("" if trusted else " †")] if judged else []
    rows = [
        [str(r.get("product") or "–"), _clip(base.get(r.get("prompt"), {}).get("output", "(not recorded)")),
         _clip(r.get("output")), _clip(r.get("reference"))] + ([_fmt(r.get("judge_score"))] if judged else [])
        for r in tuned[:limit]
    ]  # fmt: skip
    return [("h2", "Sample generations: base against best"), ("table", headers, rows)]


def _clip(text: Any, n: int = 300) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"
