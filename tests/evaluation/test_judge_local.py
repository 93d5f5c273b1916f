"""The local judge on the project's tiny model: expected scores from the digit-token probabilities."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from evaluation.config import JudgeConfig
from evaluation.errors import ConfigError
from evaluation.judge import LOCAL_RUBRIC, LOCAL_SCORE_CUE, Sample, render_sample
from evaluation.judge_choice import build_judge
from evaluation.judge_local import LocalJudge
from evaluation.verdict_cache import VerdictCache

SAMPLES = [
    Sample("Kettle", "Kitchen Appliances", "A kettle."),
    Sample(
        "Trail Pack",
        "Hiking Backpacks",
        "A light pack with a padded hip belt and a rain cover for long hikes.",
    ),
    Sample(
        "Desk Lamp", "Lighting", "Warm light. " * 6, reference="A lamp with a dimmer and a weighted base."
    ),
    Sample("Yoga Mat", "Fitness", "Grippy, cushioned and easy to roll up after class."),
    Sample("Mug", "Kitchen", "Holds coffee."),
]

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


@pytest.fixture
def tokenizer(tiny_model_dir):
    """Fresh per test (the judge may set its pad token), without a chat template: the plain prompt."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = None
    return tok


def single_token_ids(tokenizer, label: str) -> list[int]:
    spellings = (tokenizer.encode(v, add_special_tokens=False) for v in (label, " " + label))
    return sorted({ids[0] for ids in spellings if len(ids) == 1 and ids[0] != tokenizer.unk_token_id})


def test_scores_are_in_range_and_batching_does_not_change_them(model, tokenizer):
    one = LocalJudge(model, tokenizer, batch_size=1).score(SAMPLES)
    batched = LocalJudge(model, tokenizer, batch_size=4).score(SAMPLES)  # a full batch and a partial one

    assert not any(v.missing for v in one + batched)
    assert all(1 <= v.score <= 10 for v in one + batched)
    assert [v.score for v in batched] == pytest.approx([v.score for v in one], abs=1e-4)
    assert max(v.score for v in one) - min(v.score for v in one) > 1e-6  # the score depends on the sample
    assert "expected" in one[0].reason


def test_score_is_the_rescaled_expectation_over_the_digit_tokens(model, tokenizer):
    sample = SAMPLES[1]
    verdict = LocalJudge(model, tokenizer).score([sample])[0]

    text = f"{LOCAL_RUBRIC}\n\n{render_sample(sample)}\n\n{LOCAL_SCORE_CUE}"
    with torch.no_grad():
        logits = model(**tokenizer(text, return_tensors="pt")).logits[0, -1]
    per_digit = torch.stack([logits[single_token_ids(tokenizer, str(d))].logsumexp(0) for d in range(1, 10)])
    expected = float((per_digit.softmax(0) * torch.arange(1, 10)).sum())
    assert verdict.score == pytest.approx(1 + (expected - 1) * 9 / 8, abs=1e-4)


def test_chat_template_is_used_when_the_tokenizer_has_one(model, tokenizer, tiny_model_dir):
    plain = LocalJudge(model, tokenizer).score(SAMPLES)
    templated_tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    templated_tok.chat_template = CHAT_TEMPLATE
    one = LocalJudge(model, templated_tok, batch_size=1).score(SAMPLES)
    batched = LocalJudge(model, templated_tok, batch_size=3).score(SAMPLES)

    assert all(1 <= v.score <= 10 for v in one)
    assert [v.score for v in batched] == pytest.approx([v.score for v in one], abs=1e-4)
    assert [v.score for v in one] != pytest.approx([v.score for v in plain], abs=1e-6)  # another prompt


def test_pairwise_reads_a_against_b_in_both_orders(model, tokenizer):
    a, b = SAMPLES[:4], SAMPLES[1:5]
    orders = LocalJudge(model, tokenizer, batch_size=1).compare_orders(a, b)
    combined = LocalJudge(model, tokenizer, batch_size=8).compare(a, b)

    assert all(x in (0.0, 0.5, 1.0) and y in (0.0, 0.5, 1.0) for x, y in orders)
    assert combined == [(x + y) / 2 for x, y in orders]  # batched, both orders, averaged


def test_cache_spares_the_model(model, tokenizer, tmp_path):
    calls = []
    hook = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        first = LocalJudge(model, tokenizer, batch_size=2, cache=VerdictCache(tmp_path)).score(SAMPLES)
        forwards = len(calls)
        again = LocalJudge(model, tokenizer, batch_size=2, cache=VerdictCache(tmp_path)).score(SAMPLES)
    finally:
        hook.remove()
    assert forwards == 3 and len(calls) == forwards  # 5 samples in batches of 2, then none
    assert again == first


def test_new_weights_or_a_new_chat_template_under_the_same_name_are_a_new_judge(
    model, tokenizer, tiny_model_dir, tmp_path
):
    # The same path (`_name_or_path`) and cache dir: only the weights, then only the template, differ.
    first = LocalJudge(model, tokenizer, cache=VerdictCache(tmp_path)).score(SAMPLES)
    changed = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        changed.lm_head.weight.mul_(1.5)  # as a fine-tune or a merged adapter would: every value moves
    assert changed.config._name_or_path == model.config._name_or_path
    calls = []
    hook = changed.register_forward_hook(lambda *_: calls.append(1))
    try:
        retuned = LocalJudge(changed, tokenizer, cache=VerdictCache(tmp_path)).score(SAMPLES)
        templated = AutoTokenizer.from_pretrained(tiny_model_dir)
        templated.chat_template = CHAT_TEMPLATE
        forwards = len(calls)
        LocalJudge(changed, templated, cache=VerdictCache(tmp_path)).score(SAMPLES)
    finally:
        hook.remove()
    assert forwards == 1 and len(calls) == 2  # each new judge asked its model, none read the other's verdicts
    assert [v.score for v in retuned] != pytest.approx([v.score for v in first], abs=1e-6)
    again = LocalJudge(model, tokenizer, cache=VerdictCache(tmp_path)).score(SAMPLES)
    assert again == first  # and the original judge still finds its own


def test_a_tokenizer_without_single_digit_tokens_is_refused(model):
    words = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1}, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<unk>", pad_token="<unk>")
    with pytest.raises(ConfigError) as err:
        LocalJudge(model, tokenizer)
    assert err.value.field == "judge.model" and "'1'" in err.value.allowed


def test_build_judge_loads_the_local_model_through_the_callers_loader(model, tokenizer, tmp_path):
    asked = []

    def load_local(name):
        asked.append(name)
        return model, tokenizer

    cfg = JudgeConfig(backend="local", model="my-judge", batch_size=2, cache_dir=str(tmp_path))
    judge = build_judge(cfg, load_local=load_local)
    assert asked == ["my-judge"] and isinstance(judge, LocalJudge) and judge.batch_size == 2
    assert all(1 <= v.score <= 10 for v in judge.score(SAMPLES[:2]))
