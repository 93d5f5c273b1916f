"""Packing gives the same loss as padding, and attention never crosses an example boundary."""

import torch
from transformers import AutoModelForCausalLM

from evaluation.loss import response_loss_sum
from trainables.batching import collate


def _examples():
    g = torch.Generator().manual_seed(0)
    out = []
    for n, prompt in ((9, 4), (14, 6), (6, 2)):
        ids = torch.randint(4, 200, (n,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out


def test_packed_loss_equals_unpacked(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    examples = _examples()
    packed_row = {
        "input_ids": sum((e["input_ids"] for e in examples), []),
        "labels": sum((e["labels"] for e in examples), []),
        "seq_lengths": [len(e["input_ids"]) for e in examples],
    }
    with torch.no_grad():
        packed, n_packed = response_loss_sum(model, collate([packed_row], pad_id=0))
        padded, n_padded = response_loss_sum(model, collate(examples, pad_id=0))
    assert n_packed == n_padded == sum(sum(1 for x in e["labels"][1:] if x != -100) for e in examples)
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-5)


def test_no_attention_across_examples(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    first, second, _ = _examples()
    row = {
        "input_ids": first["input_ids"] + second["input_ids"],
        "labels": first["labels"] + second["labels"],
        "seq_lengths": [len(first["input_ids"]), len(second["input_ids"])],
    }
    batch = collate([row], pad_id=0)
    changed = dict(batch)
    changed["input_ids"] = batch["input_ids"].clone()
    changed["input_ids"][0, : len(first["input_ids"])] = 7  # rewrite the first example entirely
    with torch.no_grad():
        a = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        b = model(
            input_ids=changed["input_ids"], position_ids=changed["position_ids"], use_cache=False
        ).logits
        alone = model(input_ids=torch.tensor([second["input_ids"]]), use_cache=False).logits
    start = len(first["input_ids"])
    torch.testing.assert_close(a[0, start:], b[0, start:])  # the second example never saw the first
    torch.testing.assert_close(a[0, start:], alone[0], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(a[0, :start], b[0, :start])  # ...while the first one did change


def test_packed_eval_batches_hold_16_x_512_tokens_and_score_as_the_configured_batch_would(tiny_model_dir):
    """A small configured batch (the seed study's 4 x 512) no longer means 4-row eval batches: 11 eager
    forwards of the base an eval where 3 do. The rows and the loss are those of the 4-row grouping."""
    import datasets

    from evaluation.loss import eval_loss_sums
    from trainables.batching import eval_batches, trial_eval_batches
    from trainables.config import TrainingConfig
    from trainables.run_plan import FAST_TOKENS

    g = torch.Generator().manual_seed(1)
    rows = []
    for _ in range(60):
        n, prompt = int(torch.randint(40, 120, (1,), generator=g)), 8
        ids = torch.randint(4, 500, (n,), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    ds = datasets.Dataset.from_list(rows)
    training = TrainingConfig(batch_size=4, grad_accum=4, max_seq_len=128, packing=True)
    batches = trial_eval_batches(training, ds, pad_id=0)
    four_rows = eval_batches(ds, 8, 0, None, (4, 128))  # as the configured batch grouped them before
    assert all(b["input_ids"].shape == (FAST_TOKENS // 128, 128) for b in batches[:-1])
    assert len(batches) < len(four_rows)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    with torch.no_grad():
        total, count = eval_loss_sums(model, batches)
        total4, count4 = eval_loss_sums(model, four_rows)
    assert count == count4 > 0
    assert abs(total / count - total4 / count4) < 1e-5


def test_a_compiled_trials_evals_are_split_into_its_training_micro_batches(tiny_model_dir):
    """Evals through the training graph (trainables/trial.py) need the micro-batch's shape: eval batches
    of 4 rows split into 2-row ones (the same rows, in order), and where they cannot, or the trial is not
    compiled, runs on several workers or has dropout, the evals stay eager (None)."""
    import torch
    from transformers import AutoModelForCausalLM

    from trainables.trial import _evals_as_trained

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    evals = [
        {"input_ids": torch.arange(64).reshape(4, 16) + 100 * i, "labels": torch.ones(4, 16)}
        for i in range(2)
    ]
    split = _evals_as_trained(model, evals, True, 1, (2, 16))
    assert [tuple(b["input_ids"].shape) for b in split] == [(2, 16)] * 4
    assert torch.equal(torch.cat([b["input_ids"] for b in split]), torch.cat([b["input_ids"] for b in evals]))
    assert _evals_as_trained(model, evals, True, 1, (4, 16)) is not None
    for compiled, world, shape in (
        (True, 1, (3, 16)),
        (True, 1, (2, 32)),
        (False, 1, (2, 16)),
        (True, 2, (2, 16)),
        (True, 1, None),
    ):
        assert _evals_as_trained(model, evals, compiled, world, shape) is None
    model.config.attention_dropout = 0.1  # attention applies the config's rate in train mode
    assert _evals_as_trained(model, evals, True, 1, (2, 16)) is None
