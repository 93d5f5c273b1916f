"""What every LLM judge shares: samples, verdicts, rubrics, verdict parsing and the cache in front.

The seed study judged descriptions by eye; a judge makes that automatic and repeatable. The two
backends import this module and nothing else of each other: `OpenAIJudge` (any OpenAI-compatible
chat endpoint, `judge_http.py`) and `LocalJudge` (a Hugging Face causal LM scoring by the
probability of the score tokens, `judge_local.py`); `judge_choice.build_judge` picks one from the
config. Both cache verdicts under the judge's identity (`verdict_cache.py`), so calibration sets
and repeated prompts are judged once per sweep, not once per trial. A judge never raises into a
trial for a failed verdict: it returns `Verdict(None, reason, missing=True)` and the trial reports
how many are missing.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from evaluation.verdict_cache import VerdictCache, cache_key

log = logging.getLogger(__name__)

# Part of every cache key. The rubric texts are hashed into the key anyway; bump this when what
# they cannot show changes a verdict: how a sample is rendered, how an answer is parsed or scaled.
PROMPT_VERSION = 2

CRITERIA = """Judge the description on four criteria:
1. Relevance: it describes this product and fits this category.
2. Coherence: it is logically consistent and does not contradict itself.
3. Fluency: it reads naturally, without rambling, repeated phrases or broken-off sentences.
4. Informativeness: it tells a shopper something useful about the product."""

RUBRIC = f"""You are grading a product description that a model wrote from a product name and a category.
{CRITERIA}
Give one overall score from 1 (useless) to 10 (excellent).
Answer strictly as JSON and nothing else: {{"score": <number from 1 to 10>, "reason": "<one sentence>"}}"""

PAIRWISE_RUBRIC = f"""You are comparing two product descriptions, A and B, written for the same product.
{CRITERIA}
Decide which description is better overall.
Answer strictly as JSON and nothing else: {{"winner": "A" or "B" or "tie", "reason": "<one sentence>"}}"""

# The local judge reads a distribution over one next token, so it is asked for one digit: 1..9
# (single tokens in most vocabularies; "10" is not). Its expected score is rescaled to 1..10.
LOCAL_RUBRIC = f"""You are grading a product description that a model wrote from a product name and a category.
{CRITERIA}
Give one overall score from 1 (useless) to 9 (excellent), as a single digit."""
LOCAL_SCORE_CUE = "Score (1-9):"

LOCAL_PAIRWISE_RUBRIC = f"""You are comparing two product descriptions, A and B, written for the same product.
{CRITERIA}
Answer with the letter of the better description."""
LOCAL_PAIRWISE_CUE = "Better description (A or B):"


@dataclass
class Sample:
    """One generated description with the prompt it answers (and the human reference, if any)."""

    product: str
    category: str
    output: str
    reference: str | None = None


@dataclass
class Verdict:
    """A score in 1..10, or `missing` with the reason the judge gave none."""

    score: float | None
    reason: str = ""
    missing: bool = False


class Judge(Protocol):
    def score(self, samples: list[Sample]) -> list[Verdict]:
        """One verdict per sample, in order; failures are missing verdicts, never exceptions."""
        ...

    def compare(self, a: list[Sample], b: list[Sample]) -> list[float | None]:
        """Per pair: 1.0 a better, 0.0 b better, 0.5 tie (or the orders disagree); None if missing."""
        ...

    def compare_orders(self, a: list[Sample], b: list[Sample]) -> list[tuple[float | None, float | None]]:
        """Per pair, the preference for a when shown first and when shown second (for consistency)."""
        ...

    def fresh(self) -> Judge:
        """This judge, asking anew instead of answering from its cache (a check of the judge must)."""
        ...


def render_sample(sample: Sample) -> str:
    """The user message for one description; tags delimit the model's text from our instructions."""
    parts = [f"Product: {sample.product}", f"Category: {sample.category}"]
    if sample.reference:
        parts.append(
            "Reference description written by a person (the description need not match it word for word):\n"
            f"<reference>\n{sample.reference}\n</reference>"
        )
    parts.append(f"Description:\n<description>\n{sample.output}\n</description>")
    return "\n".join(parts)


def render_pair(first: Sample, second: Sample) -> str:
    """The user message for a comparison; both descriptions answer `first`'s product."""
    return (
        f"Product: {first.product}\nCategory: {first.category}\n"
        f"Description A:\n<description_a>\n{first.output}\n</description_a>\n"
        f"Description B:\n<description_b>\n{second.output}\n</description_b>"
    )


class VerdictError(ValueError):
    """The judge's answer was not the JSON the rubric asks for (so the request is retried)."""


_FENCED = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL | re.IGNORECASE)


def _json_object(text: str) -> dict[str, Any]:
    """The one JSON object in an answer, also when wrapped in ```json fences or a sentence."""
    text = text.strip()
    fenced = _FENCED.search(text)
    candidates = [text] + ([fenced.group(1)] if fenced else [])
    if "{" in text and "}" in text:
        candidates.append(text[text.index("{") : text.rindex("}") + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    raise VerdictError(f"no JSON object in {text[:80]!r}")


def parse_verdict(text: str) -> Verdict:
    """`{"score": 1..10, "reason": str}` -> Verdict; anything else raises VerdictError."""
    obj = _json_object(text)
    score = obj.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise VerdictError(f"score is not a number: {score!r}")
    if not 1 <= score <= 10:
        raise VerdictError(f"score {score} is outside 1..10")
    reason = obj.get("reason", "")
    return Verdict(float(score), reason if isinstance(reason, str) else json.dumps(reason))


def parse_preference(text: str) -> float:
    """`{"winner": "A"|"B"|"tie"}` -> preference for A (1.0, 0.0, 0.5); else VerdictError."""
    winner = _json_object(text).get("winner")
    prefs = {"a": 1.0, "b": 0.0, "tie": 0.5}
    if not isinstance(winner, str) or winner.strip().lower() not in prefs:
        raise VerdictError(f"winner is not 'A', 'B' or 'tie': {winner!r}")
    return prefs[winner.strip().lower()]


def summarize(verdicts: Sequence[Verdict]) -> dict[str, float | int | None]:
    """`judge_score`: mean of the scores given (None if none), `judge_missing`: how many failed."""
    scores = [v.score for v in verdicts if not v.missing and v.score is not None]
    return {
        "judge_score": sum(scores) / len(scores) if scores else None,
        "judge_missing": len(verdicts) - len(scores),
    }


def win_rate(results: Sequence[float | None]) -> float | None:
    """Mean preference over the pairs judged (ties count half); None when every pair is missing."""
    done = [r for r in results if r is not None]
    return sum(done) / len(done) if done else None


def combine_orders(first: float | None, second: float | None) -> float | None:
    """Average the two orders so position bias cancels: disagreeing orders make a tie."""
    return None if first is None or second is None else (first + second) / 2


class CachedJudge:
    """What both backends share: the cache in front, both orders for comparisons.

    A backend implements `_score_uncached(samples)` and `_prefer_first_uncached(pairs)` (the
    preference for the first-shown description of each pair, or None when missing), and passes
    its `identity`: everything that changes its verdicts (endpoint, model, weights...) and no
    credentials. The identity, not the model's name, keys the cache.
    """

    rubric = RUBRIC
    pairwise_rubric = PAIRWISE_RUBRIC

    def __init__(self, name: str, identity: Mapping[str, Any], cache: VerdictCache | None = None) -> None:
        self.name, self.cache = name, cache
        self.identity = {**identity, "prompt_version": PROMPT_VERSION}
        self.read_cache = True

    def fresh(self) -> CachedJudge:
        """A copy that asks the judge every time; what it hears still replaces the cached verdicts,
        so later trials score with the judge as it answers now."""
        judge = copy.copy(self)
        judge.read_cache = False
        return judge

    def _score_uncached(self, samples: list[Sample]) -> list[Verdict]:
        raise NotImplementedError

    def _prefer_first_uncached(self, pairs: list[tuple[Sample, Sample]]) -> list[float | None]:
        raise NotImplementedError

    def _through_cache(
        self, keys: list[str], compute: Callable[[list[int]], list[Any]], to_record, from_record
    ):
        found = self.cache.get(keys) if self.cache and self.read_cache else {}
        out: list[Any] = [from_record(found[k]) if k in found else None for k in keys]
        todo = [i for i, k in enumerate(keys) if k not in found]
        fresh = compute(todo) if todo else []
        store = {}
        for i, value in zip(todo, fresh, strict=True):
            out[i] = value
            record = to_record(value)
            if record is not None:
                store[keys[i]] = record
        if self.cache:
            self.cache.put(store)
        return out

    def score(self, samples: list[Sample]) -> list[Verdict]:
        keys = [
            cache_key(self.identity, self.rubric, s.product, s.category, s.output, s.reference)
            for s in samples
        ]
        verdicts = self._through_cache(
            keys,
            lambda todo: self._score_uncached([samples[i] for i in todo]),
            lambda v: None if v.missing else {"score": v.score, "reason": v.reason},
            lambda r: Verdict(r["score"], r["reason"]),
        )
        if missing := sum(v.missing for v in verdicts):
            log.warning("judge %s gave no verdict for %d of %d samples", self.name, missing, len(samples))
        return verdicts

    def compare_orders(self, a: list[Sample], b: list[Sample]) -> list[tuple[float | None, float | None]]:
        if len(a) != len(b):
            raise ValueError(f"compare needs pairs: got {len(a)} and {len(b)} samples")
        pairs = [p for x, y in zip(a, b, strict=True) for p in ((x, y), (y, x))]
        keys = [cache_key(self.identity, self.pairwise_rubric, render_pair(x, y)) for x, y in pairs]
        prefs = self._through_cache(
            keys,
            lambda todo: self._prefer_first_uncached([pairs[i] for i in todo]),
            lambda p: None if p is None else {"pref": p},
            lambda r: r["pref"],
        )
        # Order 2 showed b first: its preference for a is one minus its preference for the first.
        return [
            (prefs[2 * i], None if prefs[2 * i + 1] is None else 1.0 - prefs[2 * i + 1])
            for i in range(len(a))
        ]

    def compare(self, a: list[Sample], b: list[Sample]) -> list[float | None]:
        return [combine_orders(x, y) for x, y in self.compare_orders(a, b)]
