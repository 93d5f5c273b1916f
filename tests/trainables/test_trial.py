"""One QLoRA trial end to end on the tiny model, with real bitsandbytes 4- and 8-bit layers."""

import pytest
import torch
from safetensors.torch import load_file

from trainables.config import load_trial_config
from trainables.reporting import PrintReporter
from trainables.trial import run_trial


def tiny_cfg(tiny_model_dir, *sets):
    return load_trial_config(
        None,
        [
            f"model.path={tiny_model_dir}",
            "data.eval_rows=40",
            "training.max_steps=20",
            "training.eval_interval=5",
            "training.batch_size=4",
            "training.grad_accum=1",
            "training.max_seq_len=256",
            "training.lr=3e-3",
            "generation.num_prompts=2",
            "generation.max_new_tokens=8",
            *sets,
        ],
    )


@pytest.mark.parametrize("bits", [4, 8, 16])
def test_trial_lowers_eval_loss(tiny_model_dir, tmp_path, bits):
    reporter = PrintReporter(tmp_path, echo=lambda _: None)
    final = run_trial(tiny_cfg(tiny_model_dir, f"quantization.bits={bits}"), reporter)
    assert [m["step"] for m in reporter.history] == [5, 10, 15, 20]
    assert final["eval_loss"] < final["base_eval_loss"] - 0.05
    assert final["trainable_params"] > 0 and final["tokens_per_s"] > 0
    ckpt = reporter.checkpoint_dir(20)
    assert (ckpt / "adapter" / "adapter_model.safetensors").is_file()
    assert (ckpt / "eval" / "generations.json").is_file() and (ckpt / "trial_config.yaml").is_file()
    assert len(list((tmp_path / "checkpoints").glob("step-*"))) == 2  # keep_checkpoints


class Interrupt(Exception):
    pass


class StopAfter(PrintReporter):
    def __init__(self, root, step):
        super().__init__(root, echo=lambda _: None)
        self.stop = step

    def report(self, metrics, checkpoint):
        super().report(metrics, checkpoint)
        if metrics["step"] == self.stop:
            raise Interrupt


def test_resume_continues_from_the_saved_step(tiny_model_dir, tmp_path):
    cfg = tiny_cfg(tiny_model_dir, "quantization.bits=4")
    with pytest.raises(Interrupt):
        run_trial(cfg, StopAfter(tmp_path / "a", 10))
    resumed = PrintReporter(tmp_path / "a", echo=lambda _: None)
    run_trial(cfg, resumed)
    assert [m["step"] for m in resumed.history] == [15, 20]  # not from zero
    straight = PrintReporter(tmp_path / "b", echo=lambda _: None)
    run_trial(cfg, straight)
    a = load_file(str(resumed.checkpoint_dir(20) / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(straight.checkpoint_dir(20) / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:  # same data order, optimizer moments and RNG: the same adapter as an uninterrupted run
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)


def test_lm_head_adapter_really_trains(tiny_model_dir, tmp_path):
    reporter = PrintReporter(tmp_path, echo=lambda _: None)
    cfg = tiny_cfg(
        tiny_model_dir,
        "lora.target_modules=all-linear+lm_head",
        "training.max_steps=1",
        "training.eval_interval=1",
        "quantization.bits=16",
        "generation.num_prompts=0",
    )
    run_trial(cfg, reporter)
    weights = load_file(str(reporter.checkpoint_dir(1) / "adapter" / "adapter_model.safetensors"))
    head_b = [v for k, v in weights.items() if "lm_head" in k and "lora_B" in k]
    assert head_b, f"no lm_head adapter saved: {sorted(weights)[:5]}"
    assert head_b[0].abs().sum() > 0  # LoRA B starts at zero: non-zero means the step updated it


def test_how_a_step_is_split_into_micro_batches_does_not_change_training(tiny_model_dir, tmp_path):
    """Issue 30: the run plan may train a step as smaller micro-batches (more accumulation) to fit the
    memory it has; a step's rows come from batch_size x grad_accum, so 4 x 1 and 2 x 2 (and a retry
    after out of memory, at half the micro-batch) train on the same rows and reach the same adapter;
    the trial's written config is the one configured, not the plan's settings."""
    import yaml

    losses = []
    for i, (rows, accum) in enumerate([(4, 1), (2, 2)]):
        cfg = tiny_cfg(
            tiny_model_dir,
            "training.max_steps=3",
            "training.eval_interval=3",
            f"training.batch_size={rows}",
            f"training.grad_accum={accum}",
            "lora.dropout=0",
            "generation.num_prompts=1",
        )
        reporter = PrintReporter(tmp_path / str(i), echo=lambda _: None)
        final = run_trial(cfg, reporter)
        losses.append(final["eval_loss"])
        written = yaml.safe_load((reporter.checkpoint_dir(3) / "trial_config.yaml").read_text())
        assert (
            written["training"]["compile"] == "auto"
            and written["training"]["gradient_checkpointing"] == "auto"
        )
        assert final["run_plan"].startswith("eager (cpu: never compiled)")
    assert final["total_steps"] == 3
    assert abs(losses[0] - losses[1]) < 1e-4, losses
