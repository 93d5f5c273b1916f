"""Perplexity = exp(mean response-token loss); prompt tokens never count."""

import math

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from evaluation.loss import evaluate_loss, response_loss_sum


def test_perplexity_is_exp_of_mean_response_loss(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.tensor([[5, 9, 14, 20, 31, 7, 11, 3]])
    labels = ids.clone()
    labels[0, :5] = -100  # 5 prompt tokens; the last 3 are the response
    batch = {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    # By hand: position t predicts token t+1; only targets at 5, 6, 7 count.
    by_hand = [F.cross_entropy(logits[t - 1 : t], ids[0, t : t + 1]).item() for t in (5, 6, 7)]
    metrics = evaluate_loss(model, [batch])
    assert metrics["eval_tokens"] == 3
    assert math.isclose(metrics["eval_loss"], sum(by_hand) / 3, rel_tol=1e-5)
    assert math.isclose(metrics["perplexity"], math.exp(sum(by_hand) / 3), rel_tol=1e-5)


def test_prompt_tokens_do_not_change_the_loss(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids = torch.tensor([[5, 9, 14, 20, 31, 7, 11, 3]])
    labels = ids.clone()
    labels[0, :5] = -100
    other_labels = labels.clone()
    other_labels[0, 1:5] = torch.tensor([1, 2, 3, 4])  # unmasking the prompt must change it...
    with torch.no_grad():
        base, n = response_loss_sum(model, {"input_ids": ids, "labels": labels})
        more, m = response_loss_sum(model, {"input_ids": ids, "labels": other_labels})
    assert (n, m) == (3, 7) and not torch.isclose(base, more)


def test_evals_as_trained_run_the_compiled_training_graph_and_match_the_eager_eval(tiny_model_dir):
    """A compiled trial without dropout evaluates through its training graph (trainables/trial.py): no
    graph of its own is compiled, the loss is the eager eval's, and no gradient is left behind.
    `aot_eager`: dynamo's guards and AOT autograd as a sweep compiles them, without Inductor's build."""
    from torch._dynamo.utils import counters

    from evaluation.loss import eval_loss_sums, without_dropout
    from trainables import base_cache
    from trainables.config import LoraConfig, ModelConfig, QuantizationConfig
    from trainables.model import attach_lora, compile_decoder_layers

    model_cfg, q, cpu = (
        ModelConfig(path=str(tiny_model_dir)),
        QuantizationConfig(bits=16),
        torch.device("cpu"),
    )
    gen = torch.Generator().manual_seed(0)

    def batch():
        ids = torch.randint(0, 512, (2, 16), generator=gen)
        labels = ids.clone()
        labels[:, :6] = -100
        return {"input_ids": ids, "labels": labels}

    base, _ = base_cache.acquire_base(model_cfg, q, cpu, "sdpa")
    dropped = attach_lora(base, LoraConfig(r=4, target_modules="all-linear", dropout=0.05), seed=1)
    assert not without_dropout(dropped)  # train mode would drop: these evals stay eager
    base_cache.release_base(dropped, model_cfg, q, cpu, "sdpa")
    base, _ = base_cache.acquire_base(model_cfg, q, cpu, "sdpa")
    model = attach_lora(base, LoraConfig(r=4, target_modules="all-linear"), seed=1)
    assert without_dropout(model)
    torch._dynamo.reset()
    compile_decoder_layers(model, backend="aot_eager")
    model.train()
    loss, n = response_loss_sum(model, batch())
    (loss / n).backward()  # the training step's graph
    graphs = counters["stats"]["unique_graphs"]
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
    evals = [batch(), batch()]
    as_trained = eval_loss_sums(model, evals, as_trained=True)
    assert counters["stats"]["unique_graphs"] == graphs  # no graph of its own
    assert model.training and all(
        torch.equal(p.grad, grads[k]) for k, p in model.named_parameters() if k in grads
    )
    with torch.compiler.set_stance("force_eager"):
        eager = eval_loss_sums(model, evals)
    assert as_trained[1] == eager[1] and math.isclose(as_trained[0], eager[0], rel_tol=1e-5)
    base_cache.release_base(model, model_cfg, q, cpu, "sdpa")
    base_cache.drop_held()


def test_an_eval_as_trained_frees_each_batchs_saved_activations_before_the_next():
    """With gradients on, a loss holds the activations saved for its backward; an eval never runs one,
    so each batch's must be gone before the next forward (else two batches' activations at once, over
    what the run plan sized the trial for)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from evaluation.loss import eval_loss_sums

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
    )
    model = LlamaForCausalLM(config)
    for name, p in model.named_parameters():
        p.requires_grad = "q_proj" in name
    live, at_start = [0], []

    class Saved:  # counts the tensors saved for backward that are still alive
        def __init__(self, t):
            self.t = t.detach()  # not t itself: its grad_fn would tie the graph to this holder for good
            live[0] += 1

        def __del__(self):
            live[0] -= 1

    decoder = model.get_decoder()
    forward = decoder.forward
    decoder.forward = lambda *a, **k: (at_start.append(live[0]), forward(*a, **k))[1]
    gen = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(0, 512, (2, 16), generator=gen)} for _ in range(3)]
    for b in batches:
        b["labels"] = b["input_ids"].clone()
    with torch.autograd.graph.saved_tensors_hooks(Saved, lambda s: s.t):
        eval_loss_sums(model, batches, as_trained=True)
    assert at_start == [0, 0, 0] and live[0] == 0


def test_a_dropout_rate_is_found_in_nested_configs_too():
    from evaluation.loss import _dropout_rate

    assert _dropout_rate({"text_config": {"attention_dropout": 0.1}, "id2label": {0: "a"}})
    assert _dropout_rate({"resid_pdrop": 0.1})
    assert not _dropout_rate({"id2label": {0: "a"}, "hidden_dropout": 0.0, "text_config": {"vocab_size": 9}})
