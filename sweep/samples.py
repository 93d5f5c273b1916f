"""Sample generations for the report, once per sweep: the best trial's adapter beside the base model.

Every trial used to generate its samples at its end (7-14 s each on an H100, eager; 37.5% of all trial
seconds in the GPU main job, issue 30) for text no one read unless a judge scored it. A sweep without
a judge now generates once, after it ends, for the trial the report shows: its adapter and the base
model, the same fixed prompts, on whatever device the trials used.

**Where.** When `qlora-sweep run` started Ray on this machine and it is the whole cluster (the
README's jobs), the driver generates them itself once the trials have ended: it has imported torch and
transformers already and the trials' devices are its own, so there is no process to start. An actor
meant 24-32 s of waiting after the trials in the quickstarts on one H200 (issue 30, fifteenth session:
a new process, its imports, the base's load and samples), against a 2.7-9 s generation. On a cluster
(or a Ray instance other jobs share) the driver's node may have no GPU, or its GPU may be another job's,
so there it is a Ray actor on a trial's share of one, with Ray's accounting.

That actor is started early: once every trial of the sweep has started and one has ended, no trial
waits for the GPU share it freed, and the sweep's last trials leave the GPU partly idle. The actor
takes that share, imports, loads the base model and generates the base's samples meanwhile, so what
is left after the sweep is the best adapter's own generation. Should a trial wait for a share again
(a failed trial retried), the actor is stopped at once: it never holds a trial back.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import traceback
from pathlib import Path

import ray
from ray import tune
from ray.tune.experiment import Trial

from sweep import stored
from sweep.config import SweepConfig
from sweep.placement import gpu_share
from sweep.preflight import spans_nodes
from sweep.space import trial_config
from sweep.tracking import client_for, log_base_generations, log_generations

log = logging.getLogger(__name__)
SAMPLE_TIMEOUT_S = 900  # the actor's: loading a base and generating 2 x num_prompts, minutes at most
# The driver generates in its own process, without a timeout (it cannot be cut short from outside and
# go on); it waits at most this long for Ray to take back the trials' GPU shares first.
RELEASE_WAIT_S = 30.0


class Sampler:
    """One base model held for sample generations (trainables.evaluate.Samples): a Ray actor on a
    cluster, a plain object in the driver on one machine."""

    def __init__(self, share: float | None = None, cap_gb: float | None = None):
        self.held = None
        self.ready_at = None  # when the prepared base and its samples were ready
        if share and share < 1:  # an actor on a trial's share of a GPU others still train on: held to a
            import torch  # trial's memory, as trials are, which a generation's dense weights respect

            from trainables.memory import cap_process_memory, grant_gpu_share

            if torch.cuda.is_available():
                grant_gpu_share(share, cap_gb)
                cap_process_memory(torch.device("cuda", torch.cuda.current_device()))

    def prepare(self, trial: dict, called: float) -> dict:
        """Load the base a trial names and generate its samples; the seconds spent, by phase."""
        seconds = {"start": time.time() - called}  # waiting for the actor: its process and imports
        self._hold(trial, seconds)
        started = time.perf_counter()
        self.held.base_outputs()
        seconds["generate"] = time.perf_counter() - started
        self.ready_at = time.time()
        return seconds

    def sample(self, trial: dict, checkpoint: str, called: float) -> tuple[list[dict], list[dict], dict]:
        """The records of the checkpoint's adapter and the base's, over the held base when it is the
        adapter's. The checkpoint may be in cloud storage: Ray's Checkpoint fetches it (a local one is
        read in place)."""
        from ray.train import Checkpoint

        from trainables.config import TrialConfig
        from trainables.evaluate import resolved, samples_key

        seconds = {"start": time.time() - called}
        with Checkpoint(checkpoint).as_directory() as local:
            adapter = str(Path(local) / "adapter")
            cfg = resolved(TrialConfig.model_validate(trial), adapter)
            if self.held is None or self.held.key != samples_key(cfg) or self.held.adapted:
                self._hold(cfg.model_dump(), seconds)
            elif self.ready_at is not None:  # how long before this call the base's samples were ready
                seconds["ready_before"] = max(0.0, called - self.ready_at)
            started = time.perf_counter()
            records, base = self.held.records(adapter)
        seconds["generate"] = time.perf_counter() - started
        return records, base, seconds

    def _hold(self, trial: dict, seconds: dict) -> None:
        started = time.perf_counter()
        from trainables.config import TrialConfig
        from trainables.evaluate import Samples

        self.held = None  # the previous base's memory goes before the next one loads
        self.held = Samples(TrialConfig.model_validate(trial))
        seconds["load"] = time.perf_counter() - started


def _sampler_name(cfg: SweepConfig) -> str:
    """One per experiment, so that a resumed sweep (whose callbacks Tune restores) finds it."""
    return f"qlora-sweep-samples:{Path(cfg.storage()) / cfg.name}"


def samples_wanted(cfg: SweepConfig) -> bool:
    """A judged sweep's trials generate their own."""
    return cfg.judge.backend == "none"


def samples_here(cfg: SweepConfig) -> bool:
    """Whether the driver generates the samples itself: Ray was started here, not joined (a submitted
    job or an existing instance has RAY_ADDRESS), and the cluster is this node alone, one that runs
    trials (a head with no CPUs waits for workers: `preflight.spans_nodes`), with a GPU where the
    sweep's trials used one (see the module's docstring)."""
    if os.environ.get("RAY_ADDRESS"):
        return False
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if spans_nodes([n["Resources"] for n in nodes]) or len(nodes) != 1:
        return False
    if nodes[0]["NodeID"] != ray.get_runtime_context().get_node_id():
        return False
    return not gpu_share(cfg) or nodes[0]["Resources"].get("GPU", 0) > 0


def _sample_in_driver(trial: dict, checkpoint: str, log: Path | None) -> tuple[list[dict], list[dict], dict]:
    """`Sampler.sample` in this process, its libraries' output (weights' loading, warnings) sent to
    `log` as a trial's is; the model's memory is given back afterwards (the report comes next)."""
    import gc

    import torch

    from sweep.console import trial_log

    _wait_for_gpus_released()
    sampler = Sampler()
    try:
        with trial_log(log, "samples") if log else contextlib.nullcontext():
            return sampler.sample(trial, checkpoint, time.time())
    except Exception as err:
        traceback.clear_frames(err.__traceback__)  # the frames hold the model: let it go below
        raise
    finally:
        sampler.held = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _wait_for_gpus_released(timeout_s: float = RELEASE_WAIT_S) -> None:
    """Until Ray counts every GPU free again: Tune ends its trial actors without waiting for them to
    exit, and a reused worker still holds its base model in GPU memory until it does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ray.available_resources().get("GPU", 0) >= ray.cluster_resources().get("GPU", 0):
            return
        time.sleep(0.2)  # Ray's resource view is polled: it has no event for a share returned


def _sampler(cfg: SweepConfig, name: str | None = None):
    """A new sampler actor on the share of a GPU a trial had (one trial's memory): asking for a whole
    GPU could wait forever on a cluster whose GPUs are shared."""
    share = gpu_share(cfg) if cfg.resources.workers_per_trial == 1 else 1.0
    actor = ray.remote(num_gpus=share, num_cpus=1, max_restarts=0)(Sampler)
    cap = cfg.resources.gpu_memory_gb
    return actor.options(name=name).remote(share, cap) if name else actor.remote(share, cap)


class SamplePrewarm(tune.Callback):
    """Starts the sampler on the first trial to end once every trial has started (see the module's
    docstring), and stops it whenever a trial waits for resources."""

    def __init__(self, cfg: SweepConfig):
        self.cfg = cfg
        self.total = 0  # how many trials the sweep will make: the searcher stops at the space's size
        self.actor = None
        self.stopped = False  # once stopped for a waiting trial, not started again (its name may linger)

    def setup(self, total_num_samples: int | None = None, **info):
        space = _space_size(self.cfg)
        self.total = min(total_num_samples, space or total_num_samples) if total_num_samples else 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        if self.actor is not None or self.stopped or not self.total or len(trials) < self.total:
            return
        if _waiting(trials):
            return
        try:
            self.actor = _sampler(self.cfg, _sampler_name(self.cfg))
            self.actor.prepare.remote(
                trial_config(self.cfg.trial_dict(), trial.config).model_dump(), time.time()
            )
        except Exception as err:  # noqa: BLE001 - an optimisation: the samples are made after the sweep instead
            log.warning("could not start the sampler early: %s", err)
            self.actor, self.stopped = None, True

    def on_step_begin(self, iteration, trials, **info):
        if self.actor is not None and _waiting(trials):
            log.info("a trial waits for resources: the early sampler stops and frees its share")
            ray.kill(self.actor)
            self.actor, self.stopped = None, True


def _space_size(cfg: SweepConfig) -> int | None:
    """How many configs a space of choices holds (the searcher stops there), else None."""
    sizes = [
        len(values) if kind == "choice" else 0
        for d in cfg.search.space.values()
        for kind, values in d.items()
    ]
    return math.prod(sizes) if sizes and all(sizes) else None


def _waiting(trials) -> bool:
    return any(t.status == Trial.PENDING for t in trials)


def sample_best(
    cfg: SweepConfig,
    best: dict,
    tracking_uri: str,
    parent_run_id: str,
    seconds: dict | None = None,
    log_path: Path | None = None,
) -> bool:
    """Generate and log the best trial's and the base's samples (MLflow: the best run's and the sweep
    run's `eval/*generations.json`, beside its checkpoint's `eval/`): in this process on a one-machine
    cluster, else on the sampler started during the sweep when there is one. False when there is
    nothing to do (see `samples_wanted`; no checkpoint with an adapter) or the generation failed or
    timed out (logged, not fatal: the sweep's results stand without samples). `seconds` gets the
    phases: waiting for the sampler, loading, generating. `log_path`: where this process's generation
    writes its libraries' output (None: to the console)."""
    ckpt = best.get("checkpoint")
    if not samples_wanted(cfg) or not ckpt or not stored.has(ckpt, "adapter"):
        stop_sampler(cfg)
        return False
    if stored.has(ckpt, "eval/generations.json"):
        stop_sampler(cfg)
        return False  # already sampled (a resumed sweep, or a `report` after the run)
    here, actor = False, None
    try:
        here = samples_here(cfg)
        if here:
            stop_sampler(cfg)  # none was started (`SamplePrewarm` is for clusters); a resumed one's
            records, base, took = _sample_in_driver(best["config"], ckpt, log_path)
        else:
            try:
                actor = ray.get_actor(_sampler_name(cfg))
            except ValueError:
                actor = _sampler(cfg)
            ref = actor.sample.remote(best["config"], ckpt, time.time())
            records, base, took = ray.get(ref, timeout=SAMPLE_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 - samples are for the report; the sweep's results stand
        log.warning(
            "sample generations for the best trial failed: %s%s",
            (str(err) or type(err).__name__).splitlines()[0],
            f" (its log: {log_path})" if here and log_path else "",
        )
        return False
    finally:
        if actor is not None:
            ray.kill(actor)
    if seconds is not None:
        seconds.update({k: round(v, 3) for k, v in took.items()})
    stored.write_json(ckpt, "eval/generations.json", records)
    stored.write_json(ckpt, "eval/base_generations.json", base)
    if best.get("run_id"):
        log_generations(client_for(tracking_uri), best["run_id"], records)
    log_base_generations(tracking_uri, parent_run_id, base)
    return True


def stop_sampler(cfg: SweepConfig) -> None:
    """Stop the sampler started during the sweep, if any (no trial to sample)."""
    try:
        ray.kill(ray.get_actor(_sampler_name(cfg)))
    except ValueError:
        pass
