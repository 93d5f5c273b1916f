"""Calibration: corrupted references, and the metrics of judges that can and cannot tell them apart."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from evaluation.calibration import KINDS, calibrate, calibration_pairs
from evaluation.judge import Sample
from evaluation.judge_http import OpenAIJudge
from evaluation.judge_local import LocalJudge
from evaluation.verdict_cache import VerdictCache

REFERENCES = [
    Sample(
        "Trail Daypack",
        "Hiking Backpacks",
        "This daypack carries a full day of gear on steep trails. "
        "Its padded hip belt spreads the load, and a mesh back panel keeps you cool.",
    ),
    Sample(
        "Electric Kettle",
        "Kitchen Appliances",
        "The kettle boils a full liter of water in under three "
        "minutes. It switches off by itself when the water is ready.",
    ),
    Sample(
        "Cast Iron Skillet",
        "Cookware",
        "A heavy skillet that holds heat for an even sear. Season it "
        "once and it turns naturally nonstick over the years.",
    ),
    Sample(
        "Desk Lamp",
        "Lighting",
        "This lamp bends to light exactly the page you are reading. A dimmer "
        "lets you soften the glow late at night.",
    ),
    Sample(
        "Yoga Mat",
        "Fitness Equipment",
        "The mat grips the floor during every pose and cushions your "
        "knees. Roll it up after class and carry it by the strap.",
    ),
    Sample(
        "Rain Jacket",
        "Outdoor Clothing",
        "This jacket keeps you dry through steady rain on long walks. "
        "Taped seams and a snug hood shut out the wind.",
    ),
]


FUNCTION_WORDS = set(
    "a an the of in on at by to for with and or but is are it its itself you your this that when off up".split()
)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def rule_score(product: str, category: str, text: str) -> int:
    """A strict but simple reader: 9 for a fluent, relevant description, 3 points off per defect."""
    tokens = text.split()
    defects = 0
    # Relevance: it must name something from the product or its category.
    defects += not {w for w in words(product + " " + category) if len(w) > 2} & set(words(text))
    # Repetition: a phrase of three words said twice.
    trigrams = Counter(zip(tokens, tokens[1:], tokens[2:], strict=False))
    defects += any(n > 1 for n in trigrams.values())
    # Sentences: start with a capital, end with a full stop, and a sentence end is followed by a capital.
    broken = not tokens or not tokens[0][0].isupper() or not tokens[-1].endswith((".", "!", "?"))
    broken = broken or any(
        a.endswith((".", "!", "?")) and not b[0].isupper() for a, b in zip(tokens, tokens[1:], strict=False)
    )
    # Grammar, crudely: an article is followed by a content word, not by another function word.
    pairs = zip(words(text), words(text)[1:], strict=False)
    broken = broken or any(a in {"a", "an", "the"} and b in FUNCTION_WORDS for a, b in pairs)
    defects += broken
    return max(1, 9 - 3 * defects)


def answer(body: dict) -> str:
    system, user = body["messages"][0]["content"], body["messages"][1]["content"]
    product = re.search(r"^Product: (.*)$", user, re.MULTILINE).group(1)
    category = re.search(r"^Category: (.*)$", user, re.MULTILINE).group(1)

    def text(tag: str) -> str:
        return re.search(rf"<{tag}>\n(.*)\n</{tag}>", user, re.DOTALL).group(1)

    if '"winner"' in system:
        a, b = (
            rule_score(product, category, text("description_a")),
            rule_score(product, category, text("description_b")),
        )
        return json.dumps({"winner": "tie" if a == b else "A" if a > b else "B", "reason": f"{a} vs {b}"})
    return json.dumps({"score": rule_score(product, category, text("description")), "reason": "rule"})


def http_judge(chat_server, reply) -> OpenAIJudge:
    """A judge asking a new server that answers every request with `reply(body) -> (status, content)`."""
    url = chat_server(lambda body, _: reply(body)).base_url
    return OpenAIJudge(url, "rule-judge", concurrency=4, retries=0, backoff_s=0.0, timeout_s=10)


def test_pairs_cover_every_corruption_of_every_reference():
    pairs = calibration_pairs(REFERENCES, seed=0)

    assert Counter(kind for _, _, kind in pairs) == {kind: len(REFERENCES) for kind in KINDS}
    for good, bad, kind in pairs:
        ref = next(r for r in REFERENCES if r.product == good.product)
        assert good.output == ref.output and (bad.product, bad.category) == (ref.product, ref.category)
        g, b = good.output.split(), bad.output.split()
        if kind == "shuffled":
            assert sorted(b) == sorted(g) and b != g
        elif kind == "repeated":
            assert len(b) > len(g) and any(
                b[i : i + k] == b[i + k : i + 2 * k] for k in (2, 3, 4) for i in range(len(b))
            )
        elif kind == "other_product":
            other = next(r for r in REFERENCES if r.output == bad.output)
            assert other.category != ref.category
        else:
            assert (
                g[: len(b) - 1] == b[:-1]
                and len(b) < len(g)
                and not bad.output.endswith((".", ",", "!", "?"))
            )


def test_pairs_are_reproducible_and_skip_what_does_not_apply():
    assert calibration_pairs(REFERENCES, seed=3) == calibration_pairs(REFERENCES, seed=3)
    assert calibration_pairs(REFERENCES, seed=3) != calibration_pairs(REFERENCES, seed=4)
    same_category = [Sample(r.product, "Kitchen", r.output) for r in REFERENCES[:2]]
    assert "other_product" not in {k for _, _, k in calibration_pairs(same_category, seed=0)}
    assert calibration_pairs(
        [Sample("Mug", "Kitchen", "Holds tea."), Sample("Pen", "Office", "")], seed=0
    ) == [(Sample("Mug", "Kitchen", "Holds tea."), Sample("Mug", "Kitchen", "tea. Holds"), "shuffled")]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_judge_right_on_every_corruption_is_trusted(chat_server, seed):
    result = calibrate(http_judge(chat_server, lambda body: (200, answer(body))), REFERENCES, seed=seed)

    assert result["judge_accuracy"] == 1.0 and result["judge_accuracy_pairwise"] == 1.0
    assert result["judge_consistency"] == 1.0
    assert all(result[f"judge_accuracy_{kind}"] == 1.0 for kind in KINDS)
    assert (
        result["judge_calibration_pairs"] == 4 * len(REFERENCES) and result["judge_calibration_missing"] == 0
    )
    assert result["judge_trusted"] is True


def test_a_judge_that_cannot_tell_them_apart_is_not_trusted(chat_server):
    # Same score for everything and always "A": no pointwise wins, and every comparison flips with the order.
    def indifferent(body):
        winner = '"winner"' in body["messages"][0]["content"]
        return 200, json.dumps({"winner": "A"} if winner else {"score": 5})

    result = calibrate(http_judge(chat_server, indifferent), REFERENCES, seed=0, min_accuracy=0.5)

    assert result["judge_accuracy"] == 0.0 and result["judge_accuracy_pairwise"] == 0.0
    assert result["judge_consistency"] == 0.0 and result["judge_trusted"] is False


def test_a_judge_that_never_answers_is_not_trusted(chat_server):
    result = calibrate(http_judge(chat_server, lambda body: (503, "overloaded")), REFERENCES[:2], seed=0)

    assert result["judge_calibration_missing"] == result["judge_calibration_pairs"] == 8
    assert result["judge_accuracy"] == 0.0 and result["judge_consistency"] is None
    assert result["judge_trusted"] is False


def test_local_tiny_judge_calibration_gives_fractions(tiny_model_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    judge = LocalJudge(model, tokenizer, batch_size=8, cache=VerdictCache(tmp_path))
    result = calibrate(judge, REFERENCES[:2], seed=0, pairwise=True)

    assert result["judge_calibration_pairs"] == 8 and result["judge_calibration_missing"] == 0
    fractions = ["judge_accuracy", "judge_accuracy_pairwise", "judge_consistency"]
    fractions += [f"judge_accuracy_{kind}" for kind in KINDS]
    assert all(0.0 <= result[name] <= 1.0 for name in fractions)
    assert isinstance(result["judge_trusted"], bool)
    without_pairwise = calibrate(judge, REFERENCES[:2], seed=0, pairwise=False)  # asked again, same answers
    assert (
        without_pairwise["judge_consistency"] is None and without_pairwise["judge_accuracy_pairwise"] is None
    )
    assert without_pairwise["judge_accuracy"] == result["judge_accuracy"]
