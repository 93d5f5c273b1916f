"""The sweep report, built from runs logged to a real MLflow store, rendered by headless Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from mlflow.entities import Metric
from report_browser import check_report, chromium, problems

from sweep import report_plots as plots
from sweep.report import build_report
from sweep.report_read import read_trials
from sweep.report_render import to_html
from sweep.tracking import (
    FAILURE_TAG,
    OUTCOME_TAG,
    TRIAL_ID_TAG,
    client_for,
    log_base_generations,
    log_calibration,
    start_sweep_run,
)
from sweep.tracking_params import data_stats_params

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FIGURES = ("loss_curves.png", "metric_vs_params.png", "pareto.png", "importance.png", "timeline.png")
SPACE = {
    "lora.r": {"choice": [4, 8, 16, 32]},
    "training.lr": {"loguniform": [1e-4, 1e-2]},
    "lora.target_modules": {"choice": ["attention", "all-linear"]},
}
# (trial, status, outcome, final eval_loss, gpu_seconds, r, lr, targets). Pareto (loss, cost), both
# minimised: t1, t2, t3 are on the front; t4 is dominated by t2, t5 by t1; t7 is cheapest but was
# killed, so it is no candidate.
TRIALS = [
    ("t1", "FINISHED", "completed", 1.0, 100.0, 32, 2e-3, "all-linear"),
    ("t2", "FINISHED", "completed", 1.2, 50.0, 16, 1e-3, "all-linear"),
    ("t3", "FINISHED", "completed", 1.5, 20.0, 4, 5e-4, "attention"),
    ("t4", "FINISHED", "completed", 1.3, 80.0, 8, 3e-4, "attention"),
    ("t5", "FINISHED", "stopped_early", 1.1, 120.0, 16, 8e-3, "attention"),
    ("t6", "FAILED", "failed", None, None, 8, 9e-3, "all-linear"),
    ("t7", "KILLED", None, 2.4, 10.0, 4, 1e-4, "attention"),
]


# A 40-row file with 8 blank descriptions, as trainables.data.prepare_data counts it.
DATA_STATS = {
    "rows_read": 40,
    "train_rows": 26,
    "eval_rows": 6,
    "rows_dropped_blank": 8,
    "blank_description": 8,
}
DATA_STATS |= {"rows_dropped_duplicate": 0, "overlong_rows": 0, "rows_dropped_overlong": 0}


def _timing(tid: str, cost: float, sweep_start: float) -> dict:
    """Phase seconds, wall time and worker of a trial: two workers, each running its trials in turn."""
    n = int(tid[1:])
    phases = {"data": 1.0, "load": 4.0, "base_eval": 2.0, "first_step": 3.0, "train": cost / 2, "eval": 5.0}
    wall = sum(phases.values())
    begin = sweep_start + 5 + 90 * (n // 2)
    return {
        **{f"phase_{k}_s": v for k, v in phases.items()},
        "fixed_s": wall - phases["train"],
        "trial_wall_s": wall,
        "wall_time": begin + wall,
        "worker_pid": 1000 + n % 2,
    }


def _config(r: int, lr: float, targets: str) -> dict:
    return {"model": {"path": "tiny"}, "lora": {"r": r, "target_modules": targets}, "training": {"lr": lr}}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{root}/mlflow.db"
    cfg = {
        "name": "rep",
        "search": {"metric": "eval_loss", "mode": "min", "metric2": "gpu_seconds", "mode2": "min"},
    }
    parent = start_sweep_run(uri, "exp-report", cfg, SPACE)
    client = client_for(uri)
    exp = client.get_run(parent).info.experiment_id
    log_calibration(uri, parent, {"judge_accuracy": 0.55, "judge_consistency": 0.7, "judge_trusted": False})
    prompts = [f"Describe product {i}" for i in range(3)]
    log_base_generations(
        uri, parent, [{"prompt": p, "output": f"BASE says {i}"} for i, p in enumerate(prompts)]
    )
    start = client.get_run(parent).info.start_time / 1000
    for tid, status, outcome, loss, cost, r, lr, targets in TRIALS:
        tags = {"mlflow.parentRunId": parent, TRIAL_ID_TAG: tid, "base_model": "tiny"}
        if outcome:
            tags[OUTCOME_TAG] = outcome
        if status == "FAILED":
            tags[FAILURE_TAG] = "RuntimeError: out of memory at a micro-batch of 1 row"
        run = client.create_run(exp, run_name=tid, tags=tags).info.run_id
        for key, value in {
            "lora.r": r,
            "training.lr": lr,
            "lora.target_modules": targets,
            "quantization.bits": 4,
            "data.overlong": "truncate",
            **data_stats_params(DATA_STATS),
        }.items():
            client.log_param(run, key, str(value))
        steps = [10, 20, 30] if loss is not None else [10]
        final = loss if loss is not None else 2.9
        metrics = []
        for i, step in enumerate(steps):
            ev = final + 0.5 * (len(steps) - 1 - i)
            metrics += [Metric("eval_loss", ev, 0, step), Metric("train_loss", ev + 0.05, 0, step)]
        metrics += [Metric("base_eval_loss", 3.0, 0, steps[-1])]
        if cost is not None:
            metrics += [
                Metric(k, v, 0, steps[-1])
                for k, v in {
                    "gpu_seconds": cost,
                    "elapsed_s": cost / 2,
                    "peak_mem_gb": r / 10,
                    "trainable_params": 1000 * r,
                    "perplexity": 2.718**final,
                    "tokens_per_s": 20_220.0,
                    **_timing(tid, cost, start),
                }.items()
            ]
        if outcome == "completed":
            metrics.append(Metric("judge_score", 5 - final, 0, steps[-1]))
            client.log_text(run, yaml.safe_dump(_config(r, lr, targets)), "trial_config.yaml")
            table = {
                "product": [f"p{i}" for i in range(3)],
                "prompt": prompts,
                "output": [f"TUNED {tid} {i}" for i in range(3)],
                "reference": ["ref"] * 3,
                "judge_score": [4.0] * 3,
            }
            client.log_table(run, table, "eval/generations.json")
        client.log_batch(run, metrics=metrics)
        client.set_terminated(run, status)
    client.set_terminated(parent, "FINISHED")
    md, html_path = build_report(uri, "exp-report", root / "out")
    return {"uri": uri, "parent": parent, "md": md, "html": html_path, "root": root}


def _table_trials(md: str) -> list[str]:
    section = md.split("## Trials", 1)[1].split("\n## ", 1)[0]
    return [
        line.split("|")[2].strip().rstrip(" ★")
        for line in section.splitlines()
        if re.match(r"\| \d+ \|", line)
    ]


def test_report_content(sweep):
    md = sweep["md"].read_text()
    order = _table_trials(md)
    assert sorted(order) == sorted(t[0] for t in TRIALS)  # every trial, once
    with_loss = [t for t in TRIALS if t[1] != "FAILED"]
    assert order[: len(with_loss)] == [
        t[0] for t in sorted(with_loss, key=lambda t: t[3])
    ]  # by eval_loss, min
    assert order[-1] == "t6"  # no final metric: last
    assert "FAILED: RuntimeError: out of memory at a micro-batch of 1 row" in md
    assert "STOPPED EARLY" in md and "KILLED" in md
    assert "t1 ★" in md  # best = lowest eval loss among completed trials
    assert "Pareto-optimal trials (eval_loss min, gpu_seconds min): t1, t2, t3." in md
    assert "66.7% lower" in md  # base 3.0 -> best 1.0
    assert (
        "Data: 40 rows read: 26 train rows, 6 eval rows; 8 rows dropped (blank description); "
        "0 duplicate rows dropped; 0 overlong (truncated)." in md
    )
    assert "NOT trustworthy" in md and "†" in md  # judge failed calibration
    assert re.search(
        r"Knobs that mattered most for eval_loss: (lora\.r|training\.lr|lora\.target_modules)", md
    )
    best_cfg = yaml.safe_load((sweep["md"].parent / "best_config.yaml").read_text())
    assert best_cfg == _config(32, 2e-3, "all-linear")
    assert yaml.safe_load(md.split("```yaml\n", 1)[1].split("```", 1)[0]) == best_cfg
    assert "BASE says 0" in md and "TUNED t1 0" in md  # generations side by side, matched by prompt
    for png in FIGURES:
        assert f"]({png})" in md and (sweep["md"].parent / png).stat().st_size > 5000
    html = sweep["html"].read_text()
    assert html.count("data:image/png;base64,") == len(FIGURES) and "<script" not in html  # no JavaScript
    # Human numbers; the cost is one sentence; a phase no trial had is no row of zeros.
    assert "| 32.0k |" in md and "| 20.2k |" in md and "| 1 min 0 s |" not in md and "| 50 s |" in md
    assert (
        "Cost: 7 trials in " in md
        and "; they trained for 3 min 10 s in all, on CPUs only (6 min 20 s of CPU-core time)." in md
    )
    # t6 failed before it reported: a lane of its own ("slot 1"), from its run's start and end.
    assert re.search(r"Packing: 3 workers ran the 7 trials and were busy \d+% of the 4 min \d+ s", md), md
    assert "| judge |" not in md and "| generation |" not in md and "| train | 3 min 10 s |" in md
    client = client_for(sweep["uri"])
    logged = {f.path for f in client.list_artifacts(sweep["parent"], "report")}
    assert {"report/report.md", "report/report.html", "report/pareto.png"} <= logged


def test_report_with_too_few_trials(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    parent = start_sweep_run(uri, "one", {"name": "one"}, ["lora.r"])
    client = client_for(uri)
    run = client.create_run(
        client.get_run(parent).info.experiment_id, tags={"mlflow.parentRunId": parent}
    ).info.run_id
    client.log_param(run, "lora.r", "8")
    client.log_param(run, "data.rows_dropped_blank", "8")
    client.log_metric(run, "eval_loss", 2.0, step=5)
    client.set_terminated(run)
    md, _ = build_report(uri, "one", tmp_path / "out")  # the latest sweep run of the experiment
    text = md.read_text()
    assert "not computed; needs at least 2 trials that reported eval_loss (have 1)" in text
    assert "no trial_config.yaml artifact" in text and "Pareto" not in text
    rebuilt = yaml.safe_load((tmp_path / "out" / "best_config.yaml").read_text())
    assert rebuilt == {"lora": {"r": 8}}  # the data accounting is no config field


def test_report_renders_in_chromium(sweep):
    """The page as a browser shows it: every image loads, no figure is wider than the page, nothing
    scrolls sideways; the screenshot is kept in test-artifacts/ for a person to look at."""
    if chromium() is None:
        print("SKIPPED: chromium not installed (Debian: apt-get install -y chromium)")
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "sweep_report.png"
    shot.unlink(missing_ok=True)
    seen = check_report(sweep["html"], screenshot=shot)
    assert problems(seen) == [], problems(seen)
    assert seen["images"] == len(FIGURES) and shot.stat().st_size > 50_000  # a rendered page, not blank
    assert all(re.search(f"<td[^>]*>(<span[^>]*></span>)?{t[0]}", seen["dom"]) for t in TRIALS)
    (ARTIFACTS / "sweep_report.html").write_text(sweep["html"].read_text())


def test_a_figure_wider_than_the_page_is_caught(tmp_path):
    """The browser check fails where a person would see a problem: a 3000 px figure, a broken image, a
    table wider than the page."""
    if chromium() is None:
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium)")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(30, 2), dpi=100)
    fig.savefig(tmp_path / "wide.png")
    plt.close(fig)
    blocks = [("img", tmp_path / "wide.png", "too wide"), ("table", ["long"], [["x" * 3000]])]
    page = to_html(blocks, "t").replace(
        "</body>", "<img src='data:image/png;base64,AAAA' alt='broken'></body>"
    )
    (tmp_path / "page.html").write_text(page)
    found = problems(check_report(tmp_path / "page.html"))
    assert "broken image: broken" in found and any("shown shrunk: too wide (3000px)" in p for p in found), (
        found
    )
    assert "table wider than the page (scrolls in its box): long" in found, found


def test_where_the_time_went():
    """Issue 22: the report adds up the trials' phases, says how much was training, the fixed cost on a
    new and on a reused worker, and when the best result was known."""
    from sweep.report import Trial
    from sweep.report_time import time_blocks
    from trainables.phases import PHASES

    def trial(label, train, fixed, reused, wall):
        metrics = {f"phase_{p}_s": 0.0 for p in PHASES}
        metrics.update(
            phase_train_s=train, phase_load_s=fixed, fixed_s=fixed, base_reused=float(reused), wall_time=wall
        )
        return Trial(label, label, "FINISHED", {}, metrics, {})

    first, second = trial("a", 60.0, 40.0, False, 1_000_100.0), trial("b", 60.0, 10.0, True, 1_000_190.0)
    blocks = time_blocks([first, second], second, sweep_start_ms=1_000_000_000)
    items = blocks[1][1]
    assert items[0].startswith("Training (steady steps) took 71% of the trials' 2 min 50 s;")
    assert items[1] == "Fixed cost per trial (median): 40 s on a new worker, 10 s on a reused one (1 trial)."
    assert items[2] == "Time to best: the best trial's result was known 3 min 10 s after the sweep started."
    table = blocks[2]
    assert table[0] == "table" and ["load", "50 s", "29.4%", "25 s"] in table[2]
    assert [row[0] for row in table[2]] == ["load", "train"]  # phases no trial had: no rows of zeros
    assert time_blocks([Trial("c", "c", "FAILED", {}, {}, {})], None, None) == []  # nothing timed: no section


def test_curves_start_at_step_0_with_the_base_loss(sweep):
    """Every trial's eval curve starts at step 0 with the base model's eval loss, the drop that matters."""
    trials = read_trials(client_for(sweep["uri"]), sweep["parent"])
    for t in trials:
        curve = plots.curve_points(t.history, t.metrics.get("base_eval_loss"))
        assert curve["eval"][0] == (0, 3.0) and [s for s, _ in curve["eval"][1:]] == [
            s for s, _ in t.history["eval_loss"]
        ], (t.label, curve)
        assert curve["train"][0][0] > 0  # no train loss before the first step


def test_no_exponent_notation_where_a_person_reads(sweep):
    md = sweep["md"].read_text()
    html = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", sweep["html"].read_text())
    for text in (md, html):
        assert not re.search(r"\de[+-]0", text), re.findall(r".{30}\de[+-]0.{10}", text)
    assert "| 1e-4 |" in md  # t7's learning rate, as learning rates are written


def test_knob_axis_has_exactly_the_swept_values(sweep):
    """`choice` knobs on an evenly spaced axis of exactly the swept values (r=32 and 4 both tried);
    a log-uniform range on a log axis; every trial that reported the metric has its point."""
    trials = read_trials(client_for(sweep["uri"]), sweep["parent"])
    looks = {t.label: plots.Look("#123456", t.label) for t in trials}
    rows = [{**t.params, **t.metrics, "label": t.label} for t in trials]
    params = list(SPACE)
    fig = plots.knob_figure(rows, params, SPACE, "eval_loss", looks)
    axes = dict(zip(params, fig.axes, strict=False))
    for param in ("lora.r", "lora.target_modules"):
        ax = axes[param]
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert labels == [str(v) for v in SPACE[param]["choice"]], (param, labels)
        assert list(ax.get_xticks()) == list(range(len(labels)))
        assert len(ax.collections) == len([t for t in TRIALS if t[3] is not None or t[1] == "FAILED"])
    assert axes["training.lr"].get_xscale() == "log"


def test_timeline_lanes_and_bars(sweep):
    """One bar per trial that ran; a lane per worker; phases in running order summing to the trial's
    wall time; a trial without a worker goes to the first free lane."""
    from sweep.report_timeline import bars

    client = client_for(sweep["uri"])
    start = client.get_run(sweep["parent"]).info.start_time
    trials = read_trials(client, sweep["parent"])
    found = bars(trials, start, {"t1": "best", "t5": "stopped", "t6": "failed"})
    timed = {t.label for t in trials if "trial_wall_s" in t.metrics}
    assert sorted(b.label for b in found) == sorted(t.label for t in trials)  # t6 from its run's times
    assert {b.lane for b in found if b.label in timed} == {"CPU · worker 1", "CPU · worker 2"}
    for b in found:
        if b.label in timed:
            assert [n for n, _ in b.segments] == [
                "load",
                "base eval",
                "first step (compile)",
                "train",
                "eval",
            ]
            assert abs(sum(s for _, s in b.segments) - b.wall_s) <= 0.05 * b.wall_s
    lanes = {}
    for b in found:
        lanes.setdefault(b.lane, []).append(b)
    for lane in lanes.values():  # a worker runs one trial at a time
        assert all(a.end_s <= b.start_s + 1e-6 for a, b in zip(lane, lane[1:], strict=False))


def test_timeline_draws_gpu_utilisation_where_sampled(tmp_path):
    """Two trials sharing GPU 0, one on GPU 1: utilisation per GPU at the times of the reports that
    carried it, drawn under the lanes; a sweep without samples gets the lanes alone."""
    from matplotlib.image import imread

    from sweep.report import Trial
    from sweep.report_timeline import bars, timeline_plot, utilisation

    start_ms = 1_000_000_000

    def trial(label, gpu, pid, begin, utils):
        reports = [begin + 20 * (i + 1) for i in range(len(utils))]
        metrics = {
            "gpu_index": gpu,
            "worker_pid": pid,
            "wall_time": reports[-1],
            "trial_wall_s": reports[-1] - begin,
        }
        metrics |= {
            "phase_train_s": 0.8 * metrics["trial_wall_s"],
            "phase_load_s": 0.2 * metrics["trial_wall_s"],
        }
        history = {"gpu_util": [(5 * (i + 1), u) for i, u in enumerate(utils)]}
        history["wall_time"] = [(5 * (i + 1), r) for i, r in enumerate(reports)]
        return Trial(label, label, "FINISHED", {}, metrics | {"gpu_util": utils[-1]}, {}, history)

    trials = [
        trial("a", 0, 11, 1_000_010.0, [40.0, 90.0]),
        trial("b", 0, 12, 1_000_015.0, [95.0]),
        trial("c", 1, 13, 1_000_010.0, [60.0]),
    ]
    util = utilisation(trials, start_ms)
    assert util == {"GPU 0": [(30.0, 40.0), (35.0, 95.0), (50.0, 90.0)], "GPU 1": [(30.0, 60.0)]}
    found = bars(trials, start_ms, {"a": "best"})
    assert [b.lane for b in found] == ["GPU 0 · worker 1", "GPU 1 · worker 3", "GPU 0 · worker 2"]  # by GPU
    looks = {t.label: plots.Look("#1f77b4", t.label) for t in trials}
    with_util = imread(timeline_plot(found, looks, 50.0, tmp_path / "with.png", util))
    lanes_only = imread(
        timeline_plot(found, looks, 50.0, tmp_path / "without.png", utilisation(trials[:0], start_ms))
    )
    assert with_util.shape[0] > lanes_only.shape[0] + 100  # the utilisation panel under the lanes
