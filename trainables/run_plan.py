"""How a trial will run on the memory it gets: compiled or eager, gradient checkpointing, micro-batch.

One home for the policy (issue 30: it was spread over four modules that re-entered each other, and
the plan packed trials on the compiled memory estimate while they ran eager at twice that). One
input: the trial as configured, the memory it may use, how many trials share its GPU, and what this
node has measured (trainables/node_stats.py). One answer, `RunPlan`: the trial runs it
(trainables/trial.py) and `qlora-sweep plan` prints it (sweep/plan.py), from the same function.

Memory comes from a measured peak of the same run (same shape, compile, checkpointing, micro-batch)
when this node has one, else from the estimate (trainables/memory.py). The plan keeps the step's rows
(batch_size x grad_accum) and groups them for speed: a micro-batch smaller than the default's 16 x 512
is regrouped into larger ones where they fit. When the configured run does not fit, it gives up speed
in the cheapest order: a smaller micro-batch (more accumulation) while it still fills the GPU, then
gradient checkpointing (~1/3 more compute), then smaller micro-batches with checkpointing. A compiled
run first lowers AOT autograd's activation memory budget (LEAN_BUDGETS: the partitioner recomputes the
cheapest saved activations in backward), which costs far less than either.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainables.compile_policy import CompileDecision, decide_compile
from trainables.config import TrialConfig
from trainables.memory import CPU_FACTOR, estimate
from trainables.node_stats import NodeStats

HEADROOM = 0.9  # of the budget: allocator fragmentation, the caching allocator's rounding
HOST_HEADROOM = 0.8  # of the host's free memory (CPU trials)
MIN_FULL_TOKENS = (
    2048  # a micro-batch this large still keeps a GPU's matmuls busy: halve before checkpointing
)
# The default micro-batch (16 x 512): on an H100, 8 x 512 trained 27% slower (17.6k vs 24.0k tokens/s,
# benchmarks/RESULTS.md). A smaller configured micro-batch is regrouped up to it where memory allows.
FAST_TOKENS = 8192
CHECKPOINT_COST = 4 / 3  # recomputing each layer's forward: training FLOPs x this
SMALL_MICRO_COST = 1 / 0.73  # a micro-batch below FAST_TOKENS (where the step has more): training time x this
# torch._functorch.config.activation_memory_budget of a compiled run -> (share of the estimated
# activations it keeps, training time x this). Measured on an H100 (issue 30, `budget` step of
# benchmarks/issue30_gpu.sh): a seed-study trial's shape (3B, 4-bit, all-linear+lm_head, dropout 0.05,
# 16 x 512) peaked at 33.9 GB / 26,944 tokens/s at 1.0, 23.2 GB / 26,871 at 0.9 (0.66 of the estimated
# activations kept, no measurable cost) and 16.8 GB / 22,890 at 0.6 (0.45; 15% fewer tokens/s, 1.18x
# the time). In the e2e sweep at 0.9, all-linear r=8 without dropout kept 0.71 of its measured
# activations (25.9 -> 19.4 GB), and attention-only 0.27 (19.4 -> 7.4 GB); the estimate itself ran 12%
# under the all-linear peak, which came within 1% of its 19.8 GB cap at 0.7 here. The shares below
# leave that margin; a measured peak replaces them after the first run of a shape.
LEAN_BUDGETS = {1.0: (1.0, 1.0), 0.9: (0.75, 1.0), 0.6: (0.5, 1.18)}


@dataclass(frozen=True)
class RunPlan:
    compile: CompileDecision
    gradient_checkpointing: bool
    batch_size: int  # micro-batch rows
    grad_accum: int  # micro-batches per step (batch_size x grad_accum = the configured effective batch)
    need_gb: float  # peak memory of this run: measured here if `measured`, else the estimate
    budget_gb: float  # memory the trial may use
    measured: bool
    fits: bool
    activation_budget: float = 1.0  # AOT autograd's activation memory budget (compiled runs; LEAN_BUDGETS)
    slowdown: float = 1.0  # training time x this, for what the run gives up to fit (see `_slowdown`)

    def memory_reason(self) -> str:
        source = "measured peak" if self.measured else "estimate"
        ckpt = "with" if self.gradient_checkpointing else "without"
        fit = "fits" if self.fits else "does NOT fit"
        lean = f", activation memory budget {self.activation_budget:g}" if self.activation_budget < 1 else ""
        return (
            f"{self.batch_size} rows x {self.grad_accum} micro-batches {ckpt} gradient checkpointing{lean}: "
            f"{self.need_gb:.1f} GB ({source}) {fit} {HEADROOM:.0%} of {self.budget_gb:.1f} GB"
        )

    def describe(self) -> str:
        kind = "compiled" if self.compile.compile else "eager"
        return f"{kind} ({self.compile.reason}); {self.memory_reason()}"

    def key(self, cfg: TrialConfig) -> str:
        """The node's record of this run's peak (trainables/node_stats.py) is kept under this."""
        return run_key(
            cfg, self.compile.compile, self.gradient_checkpointing, self.batch_size, self.activation_budget
        )

    def applied(self, cfg: TrialConfig) -> TrialConfig:
        """`cfg` with this plan's settings: what the trial then runs."""
        t = cfg.training.model_copy(
            update={
                "batch_size": self.batch_size,
                "grad_accum": self.grad_accum,
                "gradient_checkpointing": "on" if self.gradient_checkpointing else "off",
                "compile": self.compile.compile,
            }
        )
        return cfg.model_copy(update={"training": t})


def run_key(
    cfg: TrialConfig, compiled: bool, checkpointing: bool, batch_size: int, activation_budget: float = 1.0
) -> str:
    """What a measured peak belongs to: everything that changes a trial's memory."""
    q, lora, t, m = cfg.quantization, cfg.lora, cfg.training, cfg.model
    targets = lora.target_modules if isinstance(lora.target_modules, str) else ",".join(lora.target_modules)
    return "|".join(
        map(
            str,
            (
                m.path,
                m.revision,
                m.dtype,
                m.attn_implementation,
                q.bits,
                q.int8_matmul if q.bits == 8 else "",
                q.quant_type if q.bits == 4 else "",
                q.double_quant if q.bits == 4 else "",
                q.compute_dtype,
                lora.r,
                targets,
                lora.dropout,
                t.max_seq_len,
                t.packing,
                batch_size,
                "ckpt" if checkpointing else "full",
                "compiled" if compiled else "eager",
            ),
        )
    ) + (f"|budget{activation_budget:g}" if activation_budget < 1 else "")  # older records: budget 1


def _candidates(cfg: TrialConfig, regroup: bool, compiled: bool) -> list[tuple[int, int, bool, float]]:
    """(micro-batch, accumulation, checkpointing, activation budget) in the order the plan tries them.

    A step's rows (batch_size x grad_accum) are fixed; how they are grouped is the plan's (the loss is
    normalised by the step's tokens, so the grouping changes speed and memory, not the result). First
    larger micro-batches, up to FAST_TOKENS (the seed study's 4 x 4 runs as 16 x 1 where it fits:
    fewer, fuller kernels, one dequantization of the base per step instead of four); then the
    configured one and halvings that still fill the GPU; then checkpointing; all sorted by their
    predicted slowdown, so the plan takes the fastest run that fits (at budget 0.6 a compiled run takes
    ~1.18x as long, checkpointed 4/3x; 8 x 512 trained 27% slower than 16 x 512). Without `regroup` (the
    CPU, whose test path stays as it was; a multi-worker trial, whose workers must agree) the
    micro-batch stays as configured and only checkpointing is chosen."""
    t = cfg.training
    rows = t.batch_size * t.grad_accum
    if regroup:
        larger = [
            b for b in range(rows, t.batch_size, -1) if rows % b == 0 and b * t.max_seq_len <= FAST_TOKENS
        ]
        halvings = [t.batch_size >> i for i in range(t.batch_size.bit_length())]
        sizes = [b for b in halvings if t.batch_size % b == 0]
    else:
        larger, sizes = [], [t.batch_size]
    full = larger + [b for b in sizes if b == t.batch_size or b * t.max_seq_len >= MIN_FULL_TOKENS]
    budgets = list(LEAN_BUDGETS) if compiled else [1.0]
    lean = [(b, False, a) for b in full for a in budgets]
    order = {
        "auto": lean + [(b, True, 1.0) for b in larger + sizes],
        "off": lean + [(b, False, a) for b in larger + sizes if b not in full for a in budgets],
        "on": [(b, True, 1.0) for b in larger + sizes],
    }[t.gradient_checkpointing]
    # Fastest first (stable: ties keep the order above): 16 x 512 at budget 0.6 (1.18x) comes before
    # 16 x 512 checkpointed (1.33x), which comes before 8 x 512 (1.37x).
    order.sort(key=lambda c: _slowdown(cfg, c[0], c[1], c[2]))
    return [(b, rows // b, ck, a) for b, ck, a in order]


def plan_run(
    cfg: TrialConfig,
    model_config,
    n_params: int,
    trainable_params: int,
    train_tokens: int,
    budget_gb: float,
    on_gpu: bool,
    per_gpu: int = 1,
    stats: NodeStats | None = None,
    regroup: bool = True,
) -> RunPlan:
    """The first run (see the module docstring) whose memory fits the budget; the leanest if none does."""
    decision = decide_compile(
        cfg.training.compile, on_gpu, cfg.training.packing, n_params, train_tokens, per_gpu, stats
    )
    peaks = stats.peaks if stats else {}
    plan = None
    for batch, accum, ckpt, lean in _candidates(cfg, regroup and on_gpu, on_gpu and decision.compile):
        sized = cfg.model_copy(update={"training": cfg.training.model_copy(update={"batch_size": batch})})
        if on_gpu:
            key = run_key(cfg, decision.compile, ckpt, batch, lean)
            need = peaks.get(key)
            measured = need is not None
            if need is None:
                est = estimate(sized, model_config, trainable_params, ckpt, compiled=decision.compile)
                fixed = est.total_gb - est.activations_gb
                # A lean run's activations are a share of the full run's: measured here when it ran.
                full = peaks.get(run_key(cfg, decision.compile, ckpt, batch)) or est.total_gb
                need = fixed + (full - fixed) * LEAN_BUDGETS[lean][0]
            fits = need <= HEADROOM * budget_gb
        else:  # eager fp32 on the host, well above the GPU-calibrated estimate (trainables/memory.py)
            need = CPU_FACTOR * estimate(sized, model_config, trainable_params, ckpt, on_gpu=False).total_gb
            measured, fits = False, need <= HOST_HEADROOM * budget_gb
        slow = _slowdown(cfg, batch, ckpt, lean)
        plan = RunPlan(decision, ckpt, batch, accum, need, budget_gb, measured, fits, lean, slow)
        if fits:
            return plan
    return plan


def _slowdown(cfg: TrialConfig, batch: int, checkpointing: bool, activation_budget: float) -> float:
    """Training time of this run relative to the same trial's fastest: checkpointing's recompute, a lean
    activation budget's, and a micro-batch smaller than the default's 16 x 512 tokens where the step's
    rows could have filled one (sweep/throughput.py weighs this against sharing the GPU more ways)."""
    t = cfg.training
    full = min(FAST_TOKENS, t.batch_size * t.grad_accum * t.max_seq_len)
    small = SMALL_MICRO_COST if batch * t.max_seq_len < full else 1.0
    return LEAN_BUDGETS[activation_budget][1] * (CHECKPOINT_COST if checkpointing else 1.0) * small


def training_seconds(plan: RunPlan) -> float:
    """Predicted training seconds of the plan (the compile decision's rates, times its slowdown)."""
    seconds = plan.compile.eager_train_s - (plan.compile.saved_s if plan.compile.compile else 0.0)
    return seconds * plan.slowdown
