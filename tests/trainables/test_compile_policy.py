"""`training.compile: auto` decides from the trial's predicted training time (issue 24)."""

import pytest

from trainables.compile_policy import COMPILE_S, bucket_width, decide_compile

OPEN_LLAMA_PARAMS = 3_426_473_600  # OpenLLaMA-3b-v2, all parameters
SMOLLM2_PARAMS = 134_515_008


def test_the_cpu_never_compiles():
    d = decide_compile("auto", on_gpu=False, packing=True, n_params=OPEN_LLAMA_PARAMS, train_tokens=10**9)
    assert not d.compile and "cpu" in d.reason


@pytest.mark.parametrize("setting", [True, False])
def test_true_and_false_force_it_on_a_gpu(setting):
    d = decide_compile(setting, on_gpu=True, packing=False, n_params=SMOLLM2_PARAMS, train_tokens=10)
    assert d.compile is setting and f"training.compile={str(setting).lower()}" == d.reason


def test_the_quickstart_is_not_compiled():
    # 10 steps x 2 rows x <= 192 tokens of SmolLM2: milliseconds of training, ~30 s of compile
    d = decide_compile("auto", on_gpu=True, packing=False, n_params=SMOLLM2_PARAMS, train_tokens=10 * 2 * 192)
    assert not d.compile and d.saved_s < 1 and "eager" in d.reason


def test_the_reference_job_is_compiled():
    # 3 epochs of the seed study's data (3.17 M tokens) on OpenLLaMA-3b-v2: minutes of training
    d = decide_compile("auto", on_gpu=True, packing=True, n_params=OPEN_LLAMA_PARAMS, train_tokens=3_170_000)
    assert d.compile and d.saved_s > COMPILE_S and "static packed shapes" in d.reason
    assert 100 < d.eager_train_s < 300  # the eager rate it assumes: 17.1k tokens/s on an H200


def test_the_threshold_is_where_the_saving_equals_the_compile_time():
    tokens = lambda s: int(s * 4 * OPEN_LLAMA_PARAMS / 1e6)  # noqa: E731 - tokens for s "units"
    below = decide_compile("auto", True, True, OPEN_LLAMA_PARAMS, 100_000)
    above = decide_compile("auto", True, True, OPEN_LLAMA_PARAMS, 2_000_000)
    assert below.saved_s < COMPILE_S < above.saved_s and (below.compile, above.compile) == (False, True)
    assert tokens(1) > 0


@pytest.mark.parametrize(
    ("length", "width"), [(1, 64), (64, 64), (65, 128), (130, 256), (300, 384), (384, 384)]
)
def test_unpacked_widths_fall_into_few_buckets(length, width):
    assert bucket_width(length, 384) == width


def test_compile_stages_say_where_a_compile_went_and_when_graphs_are_reused():
    """A trial's `compile_stages` metric: dynamo's own timers across its first step, by stage
    (AOT autograd without Inductor here: the CPU box would spend ~18 s building C++ kernels)."""
    import torch

    from trainables.model import COMPILE_STAGES, compile_seconds, compile_stages

    fn = torch.compile(lambda x: x.cos() * 3 + 1, backend="aot_eager")
    before = compile_seconds()
    fn(torch.randn(4))
    first = dict(part.rsplit(" ", 1) for part in compile_stages(before).split(", "))
    assert float(first["total"].rstrip("s")) > 0 and set(first) <= {name for name, _ in COMPILE_STAGES}
    before = compile_seconds()
    fn(torch.randn(4))  # same shape: the compiled graph runs, nothing is compiled
    assert compile_stages(before) == "none"


def test_compiled_decoder_layers_share_one_graph(tiny_model_dir):
    """Every layer of a LoRA model runs the one graph compiled for the first: the first layer's input
    (the frozen embedding's output) asks for its gradient like the others', so dynamo compiles once,
    not a second time for that layer alone."""
    import torch
    from torch._dynamo.utils import counters
    from transformers import AutoModelForCausalLM

    from trainables.config import LoraConfig
    from trainables.model import attach_lora, compile_decoder_layers

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = attach_lora(base, LoraConfig(r=4, target_modules="all-linear"))
    torch._dynamo.reset()
    assert compile_decoder_layers(model, backend="aot_eager") == base.config.num_hidden_layers >= 2
    graphs = counters["stats"]["unique_graphs"]
    ids = torch.randint(0, base.config.vocab_size, (2, 16))
    model.get_base_model().get_decoder()(input_ids=ids, use_cache=False).last_hidden_state.sum().backward()
    assert counters["stats"]["unique_graphs"] - graphs == 1
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_compiled_artifacts_go_to_the_cache_dir_unless_the_user_named_another(tmp_path):
    """torch._dynamo fixes TORCHINDUCTOR_CACHE_DIR (to /tmp/torchinductor_<user>) when it is imported;
    a trial worker imports it through peft long before it compiles. The package sets ours first: in a
    fresh interpreter that loads the worker's entry point, Inductor's own cache dir is under ours."""
    import os
    import subprocess
    import sys

    probe = (
        "import sweep.tune_reporter, trainables.trial\n"
        "from torch._inductor.runtime.cache_dir_utils import cache_dir, triton_cache_dir\n"
        "print(cache_dir()); print(triton_cache_dir(0))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
    env["QLORA_SWEEP_CACHE"] = str(tmp_path / "cache")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [
        str(tmp_path / "cache" / "inductor"),
        str(tmp_path / "cache" / "inductor" / "triton" / "0"),
    ]
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "mine")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == str(tmp_path / "mine")
