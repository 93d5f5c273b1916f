"""`qlora-sweep submit` and `qlora-sweep jobs`, added to sweep's command line from here.

`sweep` must not import `cluster` (the arrow points `cluster -> sweep`), so sweep's CLI does not
know these commands: it asks the installed packages for entry points in the `qlora_sweep.commands`
group, and pyproject.toml declares `add_commands` below as cluster's. Nothing of Ray loads until a
command runs.
"""

from __future__ import annotations

import argparse

from sweep.cli import _add_sets  # the same --set as every other subcommand


def cmd_submit(a: argparse.Namespace) -> int:
    from cluster.submit import submit

    return submit(a.config, a.sets, a.address, follow=a.follow)


def cmd_jobs(a: argparse.Namespace) -> int:
    from cluster.submit import jobs

    return jobs(a.action, a.job_id, a.address)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add `submit` and `jobs` to the `qlora-sweep` subcommands (in this order, as the help lists them)."""
    sb = sub.add_parser("submit", help="submit a sweep to a Ray cluster (Job Submission SDK)")
    sb.add_argument("config")
    sb.add_argument("--address", default=None, help="http://HEAD:8265 (default: $RAY_ADDRESS)")
    sb.add_argument("--follow", action="store_true", help="stream the job's logs until it ends")
    _add_sets(sb)
    sb.set_defaults(fn=cmd_submit)
    jb = sub.add_parser("jobs", help="status, logs or stop of a submitted job")
    jb.add_argument("action", choices=["status", "logs", "stop"])
    jb.add_argument("job_id")
    jb.add_argument("--address", default=None)
    jb.set_defaults(fn=cmd_jobs)
