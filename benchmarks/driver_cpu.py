"""Where a sweep's wall goes outside its trials, on the CPU (issue 30): `qlora-sweep run` of the
quickstart cut to 2 trials of 2 steps, its console lines time-stamped, so that the seconds before Ray,
after the trials and after the summary show apart. Run from a checkout (PYTHONPATH picks which):

    python -m benchmarks.driver_cpu --out FILE.json [--label NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SETS = ["training.max_steps=2", "search.num_samples=2", "search.scheduler.type=none"]


def run(label: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "sweep.cli", "run", "--set", f"storage_path={tmp}/runs"]
        cmd += ["--set", f"tracking.tracking_uri=sqlite:///{tmp}/mlflow.db"]
        cmd += [a for s in SETS for a in ("--set", s)]
        t0 = time.time()
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        lines = [(round(time.time() - t0, 2), ln.rstrip()) for ln in proc.stdout]
        proc.wait()
        wall = time.time() - t0

    def at(pattern: str) -> float | None:
        return next((t for t, ln in lines if re.search(pattern, ln)), None)

    summary = at(r"^=== sweep")
    return {
        "label": label,
        "exit": proc.returncode,
        "wall_s": round(wall, 2),
        "ray_started_at_s": at("Started a local Ray instance"),
        "first_trial_line_at_s": at(r"^trial "),
        "summary_at_s": summary,
        "exit_after_summary_s": round(wall - summary, 2) if summary else None,
        "driver_line": next((ln for _, ln in lines if ln.startswith("driver:")), None),
        "lines": [f"{t:7.2f} {ln[:160]}" for t, ln in lines if not ln.startswith(("│", "╭", "╰", "├"))],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--label", default="head")
    args = ap.parse_args()
    result = run(args.label)
    args.out.write_text(json.dumps(result, indent=1))
    print({k: v for k, v in result.items() if k != "lines"})


if __name__ == "__main__":
    main()
