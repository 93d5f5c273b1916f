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
