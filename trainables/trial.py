"""One trial, top to bottom: load, attach LoRA, train, evaluate, checkpoint, report.

A plain function of the trial config and a small reporter, so `qlora-sweep train`, a Ray Tune
trial and each Ray Train worker run this same loop. With torch.distributed initialised (Ray Train),
every worker takes its share of each micro-batch and gradients are summed across workers, so N
workers on 1/N of the batch take the same step as one worker on the whole batch. The `strategy`
says how workers hold the model: "ddp" gives each a whole copy and all-reduces the LoRA gradients;
"fsdp" shards the base and the adapter across them (trainables/sharding.py), which makes every
forward a collective, so under FSDP all workers evaluate, generate and gather checkpoints in step.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import resource
import time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from filelock import FileLock

from evaluation.eager import eager_sdpa
from evaluation.generation import generate, with_outputs
from evaluation.generation import records as generation_records
from evaluation.loss import eval_loss_sums, loss_metrics, response_loss_sum, without_dropout
from trainables.base_cache import acquire_base, release_base, use_activation_budget
from trainables.batching import (
    bucket_shape,
    collate,
    micro_batch_plan,
    pack,
    response_tokens,
    trial_eval_batches,
)
from trainables.builtin_models import cache_dir
from trainables.checkpoint import full_state, load_checkpoint, save_checkpoint
from trainables.config import DataConfig, ModelConfig, TrialConfig
from trainables.data import prepare_data, sample_prompts
from trainables.gpu_peers import RateWindow, Trainers, compiled_here, gpu_turn, gpu_uuid, holding, takes_turn
from trainables.judging import judge_outputs
from trainables.memory import (
    CUDA_CONTEXT_GB,
    FRACTION_ENV,
    GIB,
    cap_process_memory,
    count_params,
    gpu_budget_gb,
    host_available_gb,
    use_expandable_segments,
)
from trainables.model import (
    attach_lora,
    compile_decoder_layers,
    compile_seconds,
    compile_stages,
    count_trainable_params_for,
    device_for_trial,
    load_config,
    load_tokenizer,
    resolve_attn,
)
from trainables.node_cache import base_generations_path, base_identity, node_cache_path, node_cached
from trainables.node_stats import load_stats, record, stats_path
from trainables.phases import PhaseTimer
from trainables.reporting import PrintReporter, Reporter
from trainables.run_plan import FAST_TOKENS, RunPlan, plan_run
from trainables.sharding import STRATEGIES, check_shardable, shard_model


def _world() -> tuple[int, int]:
    return (
        (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    )


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum host numbers across workers (a no-op for one worker)."""
    if _world()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _eval_sums(
    model, evals: list[dict], lockstep: bool, device: torch.device, as_trained: bool = False
) -> list[float]:
    """Loss sum and token count over `evals`, each worker taking every world-th batch. `lockstep`
    (FSDP): a worker with one batch fewer runs a discarded extra forward, because every forward
    all-gathers weights with all other workers. `as_trained`: through the compiled training graph
    (see `_evals_as_trained`)."""
    rank, world = _world()
    mine = evals[rank::world]
    if as_trained:
        return _all_sum(list(eval_loss_sums(model, mine, as_trained=True)), device)
    # Eager, with sdpa: a compiled trial would otherwise compile a second (no-grad) graph for a few
    # hundred rows of forward passes (4-12 s per trial on an H100, issue 30).
    with eager_sdpa(model):
        sums = list(eval_loss_sums(model, mine))
        if lockstep and len(mine) < math.ceil(len(evals) / world):
            eval_loss_sums(model, evals[:1])
    return _all_sum(sums, device)


def _evals_as_trained(model, evals: list[dict], compiled: bool, world: int, shape) -> list[dict] | None:
    """A compiled trial's eval batches as its training micro-batches, to run through its training graph;
    None where they cannot: several workers, unpacked batches, dropout (train mode would drop), or eval
    batches that do not split into the micro-batch's rows. Split, the rows and hence the loss sum are
    the same. Its forward runs at ~2x the eager one's speed (28-30k tokens/s trained compiled against
    12-14k eager, issue 30), and dynamo's guards (shapes, grad mode, train mode) match, so nothing
    compiles; each batch's saved activations are freed with its loss, as in training."""
    if not compiled or world != 1 or shape is None or not without_dropout(model):
        return None
    rows, width = shape
    if any(b["input_ids"].shape[1] != width or b["input_ids"].shape[0] % rows for b in evals):
        return None
    return [
        {k: v[i : i + rows] for k, v in b.items()}
        for b in evals
        for i in range(0, b["input_ids"].shape[0], rows)
    ]


def _schedule(cfg, total_steps: int):
    warm = max(1, int(cfg.warmup_ratio * total_steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.lr_schedule == "constant":
            return 1.0
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1 + math.cos(math.pi * progress)) if cfg.lr_schedule == "cosine" else 1 - progress

    return factor


def _peak_mem_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux -> GiB


def run_trial(cfg: TrialConfig, reporter: Reporter | None = None, strategy: str = "ddp") -> dict:
    """Train one adapter per `cfg`; returns the final metrics. Resumes from `reporter.restore_dir()`.
    `strategy` ("ddp" or "fsdp") matters only with several workers (see the module docstring)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r}: one of {', '.join(STRATEGIES)}")
    reporter = reporter or PrintReporter(cfg.output_dir, keep=cfg.training.keep_checkpoints)
    rank, world = _world()
    sharded = strategy == "fsdp" and world > 1
    if sharded:
        check_shardable(cfg.quantization.bits)
    t_cfg = cfg.training
    device = device_for_trial()
    use_expandable_segments(device)
    torch.manual_seed(t_cfg.seed)
    timer = PhaseTimer(device)
    trial_start = time.perf_counter()

    # 1. Data: tokenized once per node (cached), eval split held out by product. The step plan is a
    # pure function of the seed (resume sees the same batches).
    with timer("data"):
        tokenizer, data, train_rows = _prepared(
            cfg.model.model_dump_json(), cfg.data.model_dump_json(), t_cfg.max_seq_len, t_cfg.packing
        )
        # How it runs (compile, checkpointing, micro-batch) for the memory it has: trainables/run_plan.py.
        width = t_cfg.max_seq_len if t_cfg.packing else data.stats["train_tokens"] / max(len(train_rows), 1)
        tokens = (
            t_cfg.max_steps * t_cfg.grad_accum * t_cfg.batch_size
            if t_cfg.max_steps
            else t_cfg.epochs * len(train_rows)
        )
        run = _plan(cfg, device, int(tokens * width), world)
        planned, cfg = cfg, run.applied(cfg)  # checkpoints record `planned`: the config as the user wrote it
        t_cfg = cfg.training
        # A step's rows come from the configured batch_size x grad_accum, split into the planned
        # micro-batches: the data, the step count and the schedule never depend on the plan (nor on the
        # GPU a resumed or retried trial gets), only how a step's rows are grouped for the GPU.
        step_size = t_cfg.batch_size * t_cfg.grad_accum
        epochs = max(1, math.ceil(t_cfg.epochs))
        plan = micro_batch_plan(len(train_rows), step_size, t_cfg.seed, epochs)
        total_steps = t_cfg.max_steps or max(1, int(len(plan) * t_cfg.epochs / epochs))
        while len(plan) < total_steps:  # max_steps past the data: keep cycling epochs
            plan += micro_batch_plan(len(train_rows), step_size, t_cfg.seed + len(plan), 1)
        decision = run.compile
        # Packed micro-batches all have one shape (this worker's rows x max_seq_len): see collate.
        # Compiled unpacked ones are padded to a few length buckets.
        rows_per_worker = -(-t_cfg.batch_size // world)
        shape = (rows_per_worker, t_cfg.max_seq_len) if t_cfg.packing else None
        bucketed = decision.compile and not t_cfg.packing
        # Evals run eager (no buckets needed) on batches from the configured training (packed: at least
        # 16 x 512 tokens each): the same batches whatever the plan.
        evals = trial_eval_batches(planned.training, data.eval, tokenizer.pad_token_id)

    # 2. Model: quantized frozen base (held from this process's last trial when it matches: the sweep
    # reuses workers) + fresh LoRA adapters (sharded across the workers with FSDP).
    attn = resolve_attn(cfg.model, device, compiled=decision.compile)
    with timer("load"):
        model, reused = acquire_base(cfg.model, cfg.quantization, device, attn, shardable=sharded)
    with timer("lora"):
        grad_ckpt = run.gradient_checkpointing
        model = attach_lora(model, cfg.lora, seed=t_cfg.seed, gradient_checkpointing=grad_ckpt)
        if decision.compile:
            use_activation_budget(run.activation_budget)
            compile_decoder_layers(model)
        if sharded:
            shard_model(model)
        params = [p for p in model.parameters() if p.requires_grad]
        trainable = sum(p.numel() for p in params)
        optimizer = torch.optim.AdamW(
            params, lr=t_cfg.lr, weight_decay=t_cfg.weight_decay, fused=device.type == "cuda"
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(t_cfg, total_steps))

    # 3. Resume, or measure the base model (LoRA starts at zero, so this *is* the base model).
    restore = reporter.restore_dir()  # once: Tune copies the checkpoint on every call
    if restore is not None:
        state = load_checkpoint(restore, model, optimizer, scheduler)
        for name, seconds in state.get("phases", {}).items():  # the phases before the interruption count too
            timer.seconds[name] = timer.seconds.get(name, 0.0) + seconds
        if state["step"] >= total_steps and state.get("last_metrics"):
            # Restored from the final checkpoint (the sweep's state predates the trial's end): report
            # the result again instead of training past the end.
            reporter.report(state["last_metrics"], None)
            return state["last_metrics"]
    else:
        with timer("base_eval"):
            base, base_shared = _base_eval(cfg, model, evals, sharded, device)
        state = {
            "step": 0,
            "base_eval_loss": base["eval_loss"],
            "base_perplexity": base["perplexity"],
            "elapsed_s": 0.0,
            "tokens": 0,
            "history": [],
            "base_eval_shared": base_shared,
        }
    model.train()
    first_step, first_tokens = state["step"] + 1, 0
    compiled_before = compile_seconds() if decision.compile else None
    graph_evals = _evals_as_trained(model, evals, decision.compile, world, shape)
    reuse = not sharded and world == 1  # the next trial of this process may take the base (base_cache.py)
    fixed = {
        "compiled": decision.compile,
        "evals_as_trained": graph_evals is not None,
        "compile_reason": decision.reason,
        "run_plan": run.describe(),
        "batch_size_run": t_cfg.batch_size,
        "grad_accum_run": t_cfg.grad_accum,
        "base_reused": reused,
        "base_eval_shared": bool(state.get("base_eval_shared", False)),
        "trainable_params": trainable,
        "workers": world,
        "gradient_checkpointing": grad_ckpt,
        "total_steps": total_steps,
    }

    # 5. Train. Loss = sum over the step's response tokens / their global count (token-level mean).
    started = time.perf_counter() - state["elapsed_s"]
    window_loss = torch.zeros((), device=device)
    window_tokens = 0
    micro = t_cfg.batch_size  # the planned micro-batch: a step's rows are split into groups this large
    # Generations only where they are read: by the judge, or by `train`'s user; a sweep without a judge
    # generates once after it ends, for the best trial (sweep/samples.py).
    generates = cfg.judge.backend != "none" or getattr(reporter, "generates", True)
    measured = False  # the node is told this trial's figures at its first report (ASHA may stop it next)
    # The GPU's peers (trainables/gpu_peers.py): a fresh worker's compiled first step waits for the
    # compile turn; a rate is recorded for the number of trials that trained beside it, seen at every step.
    peers = device.type == "cuda" and world == 1
    uuid = gpu_uuid(device) if peers else None
    turn = gpu_turn(cache_dir(), uuid) if takes_turn(peers, decision.compile) else None
    trainers, window, rate_known = None, RateWindow(), not peers
    with _oom_recorded(planned, run, device), contextlib.ExitStack() as marks:  # a retry plans smaller
        while state["step"] < total_steps:
            step = state["step"]
            step_rows = plan[step]
            rows = [
                [train_rows[i] for i in step_rows[j : j + micro]][rank::world]
                for j in range(0, len(step_rows), micro)
            ]
            batches = [
                collate(
                    r,
                    tokenizer.pad_token_id,
                    bucket_shape(r, rows_per_worker, t_cfg.max_seq_len) if bucketed else shape,
                )
                for r in rows
            ]
            # The first step holds the compilation (lazy) and the allocator's warm-up: timed on its own.
            first = step + 1 == first_step
            with (
                holding(turn if first else None, timer("compile_wait")),
                timer("first_step" if first else "train"),
            ):
                n_step = _all_sum([sum(response_tokens(b) for b in batches)], device)[0]
                for batch in batches:
                    loss_sum, _ = response_loss_sum(model, batch)
                    (loss_sum / n_step).backward()
                    window_loss += loss_sum.detach()
                if world > 1 and not sharded:  # FSDP reduce-scatters (sums) the gradients itself
                    for p in params:
                        if p.grad is not None:
                            dist.all_reduce(p.grad)
                torch.nn.utils.clip_grad_norm_(params, t_cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            window_tokens += int(n_step)
            state["step"] = step = step + 1
            step_tokens = sum(len(r["input_ids"]) for rs in rows for r in rs)
            state["tokens"] += step_tokens
            first_tokens += step_tokens if step == first_step else 0
            if step == first_step and compiled_before is not None:  # what the compile's seconds went to
                fixed["compile_stages"] = compile_stages(compiled_before)
                compiled_here()
            if step == first_step and peers:
                trainers = marks.enter_context(Trainers(cache_dir(), uuid))
                window.restart(state["tokens"], timer.seconds.get("train", 0.0))
            elif trainers is not None:
                window.saw(trainers.count())

            if step % t_cfg.eval_interval == 0 or step == total_steps:
                # window_tokens already counts every worker's tokens (n_step is global); losses are summed
                # here. A sync: the window's steps are done.
                loss_sum_all = _all_sum([float(window_loss)], device)[0]
                t_eval = time.perf_counter()
                with timer("eval"):
                    ev = loss_metrics(
                        *_eval_sums(model, graph_evals or evals, sharded, device, graph_evals is not None)
                    )
                state["eval_s"] = state.get("eval_s", 0.0) + time.perf_counter() - t_eval
                state["elapsed_s"] = time.perf_counter() - started
                tokens_all = _all_sum([state["tokens"], first_tokens], device)
                metrics = {
                    **fixed,
                    "step": step,
                    "epoch": step / max(1, len(plan) / epochs),
                    "train_loss": loss_sum_all / max(window_tokens, 1),
                    **ev,
                    "base_eval_loss": state["base_eval_loss"],
                    "base_perplexity": state["base_perplexity"],
                    "tokens": int(tokens_all[0]),
                    "tokens_per_s": tokens_all[0] / max(state["elapsed_s"], 1e-9),
                    # steady state: the steps after the first, without evals (the sweep compares to this)
                    "train_tokens_per_s": (tokens_all[0] - tokens_all[1])
                    / max(timer.seconds.get("train", 0.0), 1e-9),
                    "peak_mem_gb": _peak_mem_gb(device),
                    "elapsed_s": state["elapsed_s"],
                    "eval_s": state["eval_s"],
                    "done": step == total_steps,
                    "data_stats": data.stats,  # rows used and left out: train's summary, MLflow params, the report
                }
                state["history"].append({k: metrics[k] for k in ("step", "train_loss", "eval_loss")})
                window_loss.zero_()
                window_tokens = 0
                ckpt = reporter.checkpoint_dir(step) if rank == 0 else None
                # Under FSDP the adapter and the final generations need every worker (collectives).
                gathered = full_state(model, optimizer) if sharded else None
                with timer("generation"):
                    outputs = (
                        _generations(cfg, model, tokenizer, data, sharded)
                        if step == total_steps and generates and (ckpt is not None or sharded)
                        else None
                    )
                if ckpt is not None:
                    if step == total_steps:
                        with timer("judge"):
                            metrics.update(_final_evaluation(planned, data, outputs, ckpt))
                    state["last_metrics"] = metrics
                    state["phases"] = timer.seconds
                    with timer("checkpoint"):
                        save_checkpoint(
                            ckpt, model, tokenizer, optimizer, scheduler, state, gathered, planned
                        )
                metrics.update(timer.metrics(), trial_wall_s=time.perf_counter() - trial_start)
                if not measured and restore is None and world == 1:  # once; this attempt's phases only
                    _record_run(planned, run, metrics, device, step - first_step)
                    measured = True
                if not rate_known:  # the first window whose steps all saw the same number of trainers
                    rate = window.rate(state["tokens"], timer.seconds.get("train", 0.0))
                    if rate and window.sharing:
                        _record_rate(planned, run, device, rate, window.sharing)
                        rate_known = True
                    window.restart(state["tokens"], timer.seconds.get("train", 0.0))
                with timer("report"):
                    try:
                        reporter.report(metrics, ckpt)
                    except BaseException:  # Ray Tune ends a finished or stopped trial here (SystemExit)
                        if reuse:
                            release_base(model, cfg.model, cfg.quantization, device, attn)
                        raise

    if reuse:
        release_base(model, cfg.model, cfg.quantization, device, attn)
    return metrics


def _base_generations(cfg: TrialConfig, model, tokenizer, prompts: list[str], lockstep: bool) -> list[str]:
    """The base model's outputs for the same prompts (adapter disabled), computed once per node
    (trainables/node_cache.py): every trial of a sweep, and the sweep's sampler, share its base model,
    so the first one to get here writes the cache. `lockstep` (FSDP): generating is collective, so
    rank 0's cache decides for every worker."""
    path = base_generations_path(cfg, model, prompts)
    if lockstep:
        cached = [path.is_file()]
        dist.broadcast_object_list(cached, src=0)
        if not cached[0]:
            with model.disable_adapter():
                outputs = generate(model, tokenizer, prompts, cfg.generation)
            if _world()[0] == 0:
                with FileLock(str(path) + ".lock"):
                    path.write_text(json.dumps(outputs))
            return outputs
        if _world()[0] != 0:  # only rank 0 judges; the others' node may not have the cache
            return []

    def base_outputs() -> list[str]:
        with model.disable_adapter():
            return generate(model, tokenizer, prompts, cfg.generation)

    return node_cached(path, base_outputs)[0]


def _generations(cfg: TrialConfig, model, tokenizer, data, lockstep: bool) -> tuple[list, list, list, list]:
    """The fixed held-out rows, their prompts, and the trained and the base model's outputs."""
    rows, prompts = sample_prompts(cfg, data)
    outputs = generate(model, tokenizer, prompts, cfg.generation)
    return rows, prompts, outputs, _base_generations(cfg, model, tokenizer, prompts, lockstep)


def _final_evaluation(cfg: TrialConfig, data, generations: tuple | None, ckpt: Path) -> dict:
    """The judge's verdicts on the final generations (if generated), and the files a person reads."""
    out = ckpt / "eval"
    out.mkdir(parents=True, exist_ok=True)
    judged = {}
    if generations is not None:
        rows, prompts, outputs, base_outputs = generations
        records = generation_records(rows, prompts, outputs)
        base = with_outputs(records, base_outputs)
        judged = judge_outputs(cfg, records, base_outputs)
        (out / "generations.json").write_text(json.dumps(records, indent=1))
        (out / "base_generations.json").write_text(json.dumps(base, indent=1))
    summary = {**data.stats, **judged}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (ckpt / "trial_config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    return {k: v for k, v in judged.items() if isinstance(v, (int, float))}


@functools.lru_cache(maxsize=2)
def _prepared(model: str, data_cfg: str, max_seq_len: int, packing: bool):  # noqa: ANN202 - (tok, data, rows)
    """Tokenizer, tokenized data and training rows, once per process: the trials of a sweep that a
    reused worker runs share them (0.5-1 s each from the node's datasets cache). Read-only after."""
    tokenizer = load_tokenizer(ModelConfig.model_validate_json(model))
    data = prepare_data(DataConfig.model_validate_json(data_cfg), tokenizer, max_seq_len)
    return tokenizer, data, pack(data.train, max_seq_len) if packing else data.train


@functools.lru_cache(maxsize=8)
def _n_params(path: str, revision: str | None) -> int:
    """All parameters of a model (a meta model: seconds for billions), once per process."""
    return count_params(load_config(ModelConfig(path=path, revision=revision)))


def _per_gpu() -> int:
    """Trials sharing this GPU, from the share the sweep granted (1 outside a sweep)."""
    return max(1, round(1 / float(os.environ.get(FRACTION_ENV, "1") or 1)))


def _node_stats_file(cfg: TrialConfig, device: torch.device) -> Path:
    return stats_path(cache_dir(), torch.cuda.get_device_name(device), cfg.model.path)


def _plan(cfg: TrialConfig, device: torch.device, train_tokens: int, world: int) -> RunPlan:
    """This trial's run plan, for the memory it may use (capped here on a GPU) and what this node
    measured. Workers of one multi-worker trial must agree without talking: they plan from the same
    inputs only (no node measurements, the configured micro-batch, whole GPUs)."""
    on_gpu = device.type == "cuda"
    if on_gpu:
        # A reused worker: this trial's peak, not the last one's. The peak recorded is memory *reserved*,
        # which keeps the last trial's cached blocks until they are handed back.
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model_config = load_config(cfg.model)
    alone = world == 1
    if not on_gpu:
        budget = host_available_gb()
    else:  # one worker is held to its share here; several use whole GPUs (sweep/train_workers.py)
        budget = cap_process_memory(device) if alone else gpu_budget_gb(device)
    return plan_run(
        cfg,
        model_config,
        _n_params(cfg.model.path, cfg.model.revision) if on_gpu else 0,  # FLOPs: the compile decision
        count_trainable_params_for(model_config, cfg.lora),
        train_tokens,
        budget,
        on_gpu,
        _per_gpu(),
        load_stats(_node_stats_file(cfg, device)) if on_gpu and alone else None,
        regroup=alone,
    )


@contextlib.contextmanager
def _oom_recorded(cfg: TrialConfig, run: RunPlan, device: torch.device):
    """Out of memory in this run: note it as not fitting its budget (the node's record of its peak),
    so that the retry (sweep/tune_reporter.py) plans a smaller one instead of the same again. The error
    names the micro-batch that ran out, which the plan may have regrouped from the configured one."""
    try:
        yield
    except torch.OutOfMemoryError as err:
        if device.type == "cuda":
            record(
                _node_stats_file(cfg, device), peaks={run.key(cfg): round(run.budget_gb + CUDA_CONTEXT_GB, 2)}
            )
        named = torch.OutOfMemoryError(f"at {run.batch_size} rows x {run.grad_accum} micro-batches: {err}")
        named.micro_batch = run.batch_size  # the retry halves this one (sweep/tune_reporter.py)
        raise named from err


def _record_run(cfg: TrialConfig, run: RunPlan, metrics: dict, device: torch.device, steps: int) -> None:
    """Tell the node (trainables/node_stats.py) this run's memory peak and, when it compiled, the first
    step's extra seconds (the CPU measures nothing). A reused worker's trial of a shape it ran before
    compiles nothing (trainables/base_cache.py): that is no figure for what a compile costs."""
    if device.type != "cuda":
        return
    peak = torch.cuda.max_memory_reserved(device) / GIB + CUDA_CONTEXT_GB
    steady = metrics["phase_train_s"] / steps if steps > 0 else None
    compiled_now = run.compile.compile and metrics.get("compile_stages", "none") != "none"
    record(
        _node_stats_file(cfg, device),
        peaks={run.key(cfg): round(peak, 2)},
        compile_s=metrics["phase_first_step_s"] - steady if compiled_now and steady else None,
    )


def _record_rate(cfg: TrialConfig, run: RunPlan, device: torch.device, tokens_per_s: float, k: int) -> None:
    """Tell the node this trial's steady rate while k trials trained on its GPU (itself included):
    alone, the rate the compile decision uses; shared by k, compiled, what k at once train together
    (how many should share a GPU). Only from full micro-batches (FAST_TOKENS, as the default's
    16 x 512): the seed study's 4 x 512 ones trained 3 at once at 87% of one trial alone where 16 x 512
    ones trained at 122% (issue 30), and mixed into one median they would misjudge both. Nor from runs
    that give up speed to fit (their plan's slowdown: checkpointing, a lean activation budget)."""
    if run.batch_size * cfg.training.max_seq_len < FAST_TOKENS or run.slowdown != 1:
        return
    rate = 4.0 * _n_params(cfg.model.path, cfg.model.revision) * tokens_per_s
    compiled = run.compile.compile
    record(
        _node_stats_file(cfg, device),
        shared_flops={k: rate} if k > 1 and compiled else {},
        compiled_flops=rate if k == 1 and compiled else None,
        eager_flops=rate if k == 1 and not compiled else None,
    )


BASE_EVAL_VERSION = 2  # bump when the eval computation changes (2: eager with sdpa, issue 30)


def _base_eval(
    cfg: TrialConfig, model, evals: list[dict], lockstep: bool, device: torch.device
) -> tuple[dict, bool]:
    """The base model's eval loss (LoRA at zero), measured once per node for a base, its quantization
    and the exact eval batches: every trial of a sweep shares it (issue 30: an eval in every trial).
    Returns it and whether it came from an earlier trial."""
    if _world()[1] > 1:  # workers evaluate in step; one cached answer on one node would split them
        return loss_metrics(*_eval_sums(model, evals, lockstep, device)), False
    digest = hashlib.sha256()
    for batch in evals:
        for name in sorted(batch):
            digest.update(f"{name}{tuple(batch[name].shape)}{batch[name].dtype}".encode())
            digest.update(batch[name].cpu().numpy().tobytes())
    key = [BASE_EVAL_VERSION, *base_identity(cfg, model), digest.hexdigest()]
    return node_cached(
        node_cache_path("base_eval", key), lambda: loss_metrics(*_eval_sums(model, evals, lockstep, device))
    )
