"""Check a judge before trusting it: does it prefer a real description over a corrupted one?

Each held-out reference description is paired with corrupted copies whose defect a competent
judge must notice: its words shuffled, a phrase repeated, the description of another product from
a different category, and the text cut off mid-sentence. The judge is right on a pair when it
prefers the reference. A judge that cannot tell these apart (say, a tiny local model) still gives
numbers, but the trial marks them untrusted instead of ranking fine-tunes by noise.

A check of the judge asks the judge: `calibrate` never reads the verdict cache, so a judge whose
server changed since the last run is checked as it answers now.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from evaluation.judge import Judge, Sample, combine_orders

KINDS = ("shuffled", "repeated", "other_product", "truncated")


def _text(sample: Sample) -> str:
    """A reference's description, whitespace normalised so that only the corruption differs."""
    return " ".join((sample.output or sample.reference or "").split())


def _shuffled(words: list[str], rng: random.Random) -> str | None:
    """The same words in a random order (None if every order reads the same)."""
    for _ in range(10):
        out = rng.sample(words, len(words))
        if out != words:
            return " ".join(out)
    return None


def _repeated(words: list[str], rng: random.Random) -> str | None:
    """A phrase of 2-4 words said three times in a row, the loop small models fall into."""
    if len(words) < 4:
        return None
    k = min(4, max(2, len(words) // 4))
    start = rng.randrange(len(words) - k + 1)
    return " ".join(words[: start + k] + words[start : start + k] * 2 + words[start + k :])


def _truncated(words: list[str], rng: random.Random) -> str | None:
    """The first 30-60% of the words, ending without punctuation: cut off mid-sentence."""
    if len(words) < 6:
        return None
    cut = rng.randint(max(2, int(len(words) * 0.3)), max(3, int(len(words) * 0.6)))
    kept = words[:cut]
    kept[-1] = kept[-1].rstrip(".,;:!?")
    return " ".join(kept)


def calibration_pairs(references: Sequence[Sample], seed: int) -> list[tuple[Sample, Sample, str]]:
    """(good, bad, kind) for every reference and every corruption that applies to it.

    `references` hold human descriptions in `output` (or `reference`). A corruption that cannot
    apply (too few words; no product of another category) is skipped for that reference.
    """
    rng = random.Random(seed)
    pairs = []
    for ref in references:
        text = _text(ref)
        if not text:
            continue
        good = Sample(ref.product, ref.category, text)
        words = text.split()
        others = [
            _text(o) for o in references if o.category.casefold() != ref.category.casefold() and _text(o)
        ]
        bad = {
            "shuffled": _shuffled(words, rng),
            "repeated": _repeated(words, rng),
            "other_product": rng.choice(others) if others else None,
            "truncated": _truncated(words, rng),
        }
        pairs += [(good, Sample(ref.product, ref.category, bad[k]), k) for k in KINDS if bad[k] is not None]
    return pairs


def _fraction(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def calibrate(
    judge: Judge,
    references: Sequence[Sample],
    seed: int = 0,
    min_accuracy: float = 0.8,
    pairwise: bool = True,
) -> dict[str, float | int | bool | None]:
    """Calibration metrics for `judge` on pairs built from `references`.

    - `judge_accuracy`: fraction of pairs where the good description scores strictly higher than
      the bad one (pointwise `score`, which is what trials report). A missing verdict or an equal
      score counts as wrong: a judge that cannot answer has not told the two apart.
    - `judge_accuracy_<kind>`: the same per corruption kind.
    - `judge_accuracy_pairwise`: fraction of pairs where `compare(good, bad)` > 0.5 (both orders
      averaged; missing counts as wrong). Only with `pairwise`.
    - `judge_consistency`: among pairs judged in both orders, the fraction where swapping the two
      descriptions leaves the verdict unchanged (the same one preferred, or a tie both times).
    - `judge_trusted`: accuracy >= `min_accuracy`, and pairwise accuracy too when it was measured.
    """
    judge = judge.fresh()  # every verdict asked now; cached ones could be another judge's
    pairs = calibration_pairs(references, seed)
    # Score each distinct description once: a reference appears in up to four pairs.
    unique = list(dict.fromkeys((s.product, s.category, s.output) for g, b, _ in pairs for s in (g, b)))
    verdicts = dict(zip(unique, judge.score([Sample(*u) for u in unique]), strict=True))

    def verdict(s: Sample):
        return verdicts[(s.product, s.category, s.output)]

    answered = [not verdict(g).missing and not verdict(b).missing for g, b, _ in pairs]
    correct = [
        a and verdict(g).score > verdict(b).score for a, (g, b, _) in zip(answered, pairs, strict=True)
    ]
    missing = len(pairs) - sum(answered)
    result: dict[str, float | int | bool | None] = {
        "judge_calibration_pairs": len(pairs),
        "judge_calibration_missing": missing,  # pairs without both scores
        "judge_accuracy": _fraction(correct),
    }
    for kind in KINDS:
        result[f"judge_accuracy_{kind}"] = _fraction(
            [c for c, (_, _, k) in zip(correct, pairs, strict=True) if k == kind]
        )
    result["judge_accuracy_pairwise"] = result["judge_consistency"] = None
    if pairwise and pairs:
        orders = judge.compare_orders([g for g, _, _ in pairs], [b for _, b, _ in pairs])
        combined = [combine_orders(x, y) for x, y in orders]
        result["judge_accuracy_pairwise"] = _fraction([c is not None and c > 0.5 for c in combined])
        result["judge_consistency"] = _fraction(
            [x == y for x, y in orders if x is not None and y is not None]
        )
    trusted = result["judge_accuracy"] is not None and result["judge_accuracy"] >= min_accuracy
    if result["judge_accuracy_pairwise"] is not None:
        trusted = trusted and result["judge_accuracy_pairwise"] >= min_accuracy
    result["judge_trusted"] = trusted
    return result
