"""The sweep report (`report.md` + a self-contained `report.html`), built from MLflow alone.

Everything is read back from the tracking store (parent run: search settings, judge calibration,
base generations; child runs: params, metrics, histories, artifacts), so `qlora-sweep report` works
on any finished or interrupted sweep, on any machine that can reach the store. The content is
built once as a list of blocks (what the report says, here) and rendered twice by `report_plots`
(how it looks: the figures, Markdown, and HTML with the figures embedded).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evaluation.errors import ConfigError
from sweep import report_plots as plots
from sweep.report_time import time_blocks
from sweep.tracking import FAILURE_TAG, OUTCOME_TAG, ROLE_TAG, TRIAL_ID_TAG, child_runs, client_for
from sweep.tracking_params import DATA_STATS_PARAMS, data_stats_from_params
from trainables.data import describe_stats

NULL = (None, "", "null", "None")
TABLE = (  # (header, source, key)
    ("r", "param", "lora.r"),
    ("target modules", "param", "lora.target_modules"),
    ("bits", "param", "quantization.bits"),
    ("lr", "param", "training.lr"),
    ("trainable params", "metric", "trainable_params"),
    ("train time (s)", "metric", "elapsed_s"),
    ("peak mem (GB)", "metric", "peak_mem_gb"),
    ("eval loss", "metric", "eval_loss"),
    ("perplexity", "metric", "perplexity"),
    ("judge score", "metric", "judge_score"),
)


@dataclass
class Trial:
    run_id: str
    label: str
    status: str
    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str]
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


def _parse(value: str) -> Any:
    """MLflow keeps params as strings; recover numbers, lists and None."""
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, list):
        return ", ".join(map(str, v))
    return str(v)


def _amount(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _status(t: Trial) -> str:
    if t.status == "FAILED":
        return f"FAILED: {t.tags.get(FAILURE_TAG, 'unknown reason')}"
    if t.status == "KILLED":
        return "KILLED"
    if t.tags.get(OUTCOME_TAG) == "stopped_early":
        return "STOPPED EARLY"
    return t.status


# ---------------------------------------------------------------- reading MLflow


def _find_parent(client, experiment_name: str, parent_run_id: str | None):
    if parent_run_id:
        return client.get_run(parent_run_id)
    exp = client.get_experiment_by_name(experiment_name)
    if exp is None:
        known = ", ".join(e.name for e in client.search_experiments(max_results=50)) or "none"
        raise ConfigError("experiment", experiment_name, f"an MLflow experiment in this store: {known}")
    runs = client.search_runs(
        [exp.experiment_id],
        f"tags.`{ROLE_TAG}` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise ConfigError(
            "experiment", experiment_name, "an experiment with a sweep run (started by `qlora-sweep run`)"
        )
    return runs[0]


def _trials(client, parent_run_id: str) -> list[Trial]:
    out = []
    for run in child_runs(client, parent_run_id):
        t = Trial(
            run_id=run.info.run_id,
            label=run.data.tags.get(TRIAL_ID_TAG) or run.info.run_name,
            status=run.info.status,
            params={k: _parse(v) for k, v in run.data.params.items()},
            metrics=dict(run.data.metrics),
            tags=dict(run.data.tags),
        )
        for key in ("eval_loss", "train_loss"):
            t.history[key] = [(m.step, m.value) for m in client.get_metric_history(t.run_id, key)]
        out.append(t)
    return out


def _artifact_text(client, run_id: str, path: str) -> str | None:
    """An artifact's text, or None when the run never logged it."""
    parent = str(Path(path).parent) if "/" in path else None
    if path not in {f.path for f in client.list_artifacts(run_id, parent)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_text(encoding="utf-8")


def _rows(text: str | None) -> list[dict]:
    """Generations as a list of dicts, from `log_table`'s {columns, data} or a plain list."""
    if not text:
        return []
    data = json.loads(text)
    if isinstance(data, dict) and "columns" in data:
        return [dict(zip(data["columns"], row, strict=False)) for row in data["data"]]
    return data if isinstance(data, list) else []


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
    done = [t for t in ranked if t.status == "FINISHED" and t.tags.get(OUTCOME_TAG) != "stopped_early"]
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


def build_report(
    tracking_uri: str, experiment_name: str, out_dir: str | Path, parent_run_id: str | None = None
) -> tuple[Path, Path]:
    """Write `report.md` (figures next to it) and `report.html` (figures embedded) for a sweep, log both
    (and the figures) to the sweep's parent run under `report/`, and return their paths."""
    client = client_for(tracking_uri)
    parent = _find_parent(client, experiment_name, parent_run_id)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    pid = parent.info.run_id
    pparams = dict(parent.data.params)
    objectives = _objectives(pparams)
    metric, mode = objectives[0]
    trials = sorted(_trials(client, pid), key=_sort_key(objectives))
    swept = _swept(pparams, trials)
    trusted = parent.data.tags.get("judge_trusted", "").lower() != "false"
    best = _best(trials, metric)

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
    blocks += _table_blocks(trials, objectives, best, trusted)
    blocks += time_blocks(trials, best, parent.info.start_time)
    blocks += _figure_blocks(out, trials, swept, objectives, importances, why)
    blocks += _judge_blocks(parent, trusted)
    if best is not None:
        blocks += _best_config_blocks(client, best, out)
        blocks += _generation_blocks(client, best, pid, trusted)

    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(plots.to_markdown(blocks), encoding="utf-8")
    html_path.write_text(plots.to_html(blocks, f"Sweep report: {experiment_name}"), encoding="utf-8")
    for path in [md_path, html_path, *(b[1] for b in blocks if b[0] == "img")]:
        client.log_artifact(pid, str(path), "report")
    return md_path, html_path


def _row(t: Trial, swept: list[str]) -> dict[str, Any]:
    return {**{p: t.params.get(p) for p in swept}, **t.metrics}


def _summary(trials, best, metric, mode, importances, why, parent, trusted) -> list[str]:
    counts: dict[str, int] = {}
    for t in trials:
        s = _status(t).split(":")[0]
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
        items.append(f"Best trial: {best.label} with {metric} = {_fmt(best.metrics[metric])} ({mode}imised).")
        base, tuned = best.metrics.get("base_eval_loss"), best.metrics.get("eval_loss")
        if base and tuned is not None and math.isfinite(base):
            items.append(
                f"Against the base model: eval loss {_fmt(base)} -> {_fmt(tuned)}, "
                f"{100 * (base - tuned) / base:.1f}% {'lower' if tuned <= base else 'higher'}."
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
    cost = sum(
        t.metrics.get("gpu_seconds", 0.0) for t in trials if math.isfinite(t.metrics.get("gpu_seconds", 0.0))
    )
    busy = sum(
        t.metrics.get("elapsed_s", 0.0) for t in trials if math.isfinite(t.metrics.get("elapsed_s", 0.0))
    )
    end = parent.info.end_time or int(time.time() * 1000)
    wall = (end - parent.info.start_time) / 1000 if parent.info.start_time else float("nan")
    items.append(
        f"Cost: {_amount(cost)} GPU-seconds (CPU-seconds where trials ran without a GPU), {_amount(busy)} s of"
        f" trial training time, {wall / 60:,.1f} min of wall time since the sweep started."
    )
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


def _table_blocks(trials, objectives, best, trusted) -> list[tuple]:
    extra = [m for m, _ in objectives if m not in {k for _, _, k in TABLE}]
    headers = ["#", "trial"] + [h for h, _, _ in TABLE] + extra + ["status"]
    rows = []
    for i, t in enumerate(trials, 1):
        cells = [str(i), t.label + (" ★" if t is best else "")]
        for _, source, key in TABLE:
            v = t.metrics.get(key) if source == "metric" else t.params.get(key)
            cells.append(_fmt(v) + ("†" if key == "judge_score" and v is not None and not trusted else ""))
        cells += [_fmt(t.metrics.get(m)) for m in extra] + [_status(t)]
        rows.append(cells)
    note = (
        f"Sorted by {', then '.join(f'{m} ({mode})' for m, mode in objectives)}, trials that did not finish"
        " last; ★ marks the best trial."
    )
    if not trusted:
        note += " † judge scores are NOT trustworthy: the judge failed its calibration."
    return [("h2", "Trials"), ("p", note), ("table", headers, rows)]


def _figure_blocks(out, trials, swept, objectives, importances, why) -> list[tuple]:
    metric, mode = objectives[0]
    blocks: list[tuple] = [("h2", "Figures")]
    figs = [
        ("Loss curves", plots.loss_curves({t.label: t.history for t in trials}, out / "loss_curves.png")),
        (
            f"{metric} against each swept parameter",
            plots.metric_vs_params(
                [_row(t, swept) for t in trials], swept, metric, out / "metric_vs_params.png"
            ),
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
                plots.pareto_plot(pts, front, metric, metric2, out / "pareto.png"),
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
    text = _artifact_text(client, best.run_id, "trial_config.yaml")
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
    tuned = _rows(_artifact_text(client, best.run_id, "eval/generations.json"))
    if not tuned:
        return [("h2", "Sample generations"), ("p", f"{best.label} logged no generations.")]
    base = {
        r.get("prompt"): r for r in _rows(_artifact_text(client, parent_id, "eval/base_generations.json"))
    }
    headers = [
        "product",
        "base model",
        f"best ({best.label})",
        "reference",
        "judge" + ("" if trusted else " †"),
    ]
    rows = [
        [_fmt(r.get("product")), _clip(base.get(r.get("prompt"), {}).get("output", "(not recorded)")),
         _clip(r.get("output")), _clip(r.get("reference")), _fmt(r.get("judge_score"))]
        for r in tuned[:limit]
    ]  # fmt: skip
    return [("h2", "Sample generations: base against best"), ("table", headers, rows)]


def _clip(text: Any, n: int = 300) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"
