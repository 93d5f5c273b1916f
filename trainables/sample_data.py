"""The project's own product-description rows: the bundled sample data and the benchmark's data.

Why generate rather than ship a scraped set: no licence questions, reproducible from a seed, and
any size (the benchmark asks for 5000 rows). The seed study fine-tunes "product name + category ->
description", so the rows are built for differences between fine-tunes to show: 24 narrow
categories with their own materials, features, uses and audiences; brands with a voice (premium,
budget, eco, technical) that a model can pick up from the product name; description lengths drawn
from a lognormal around `median_words` (short blurbs and long write-ups in one set); and unique
product names so the eval split can hold out whole products.

A description is an intro sentence followed by body sentences in a fixed order of topics
(material, then features, specs, uses and audiences in turn, then variant, care and warranty),
cut off once the drawn length is reached, so short descriptions keep the essentials. Each slot type
has several sentence templates. `attributes` lists only the facts the description states.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from trainables.sample_vocab import (
    ADJECTIVES,
    BRANDS,
    CATEGORIES,
    CLOSINGS,
    MODELS,
    SUFFIXES,
    WARRANTY_YEARS,
    Category,
)

LENGTH_SIGMA = 0.7  # lognormal spread of the drawn length: its 90th percentile is ~6x its 10th
CLOSING_WORDS = 11  # about the length of a closing line, kept free when filling the body
BUNDLED_ROWS, BUNDLED_SEED = 600, 0

INTROS = (
    "The {product} is {a_adj} {noun} for {use}.",
    "Meet the {product}, {a_adj} {noun} designed for {aud}.",
    "{A_adj} {noun} for {use}, the {product} is made for {aud}.",
    "With the {product}, {brand} offers {a_adj} {noun} that is ready for {use}.",
    "The {product} is {a_adj} {noun} built around {f}.",
)
TEMPLATES = {
    "material": (
        "{It} uses {m}, which {mb}.",
        "{It} relies on {m}, which {mb}.",
        "{brand} chose {m}, which {mb}.",
    ),
    "feature": (
        "{It} features {f}.",
        "You also get {f}.",
        "Look closely and you will find {f}.",
        "On top of that, it has {f}.",
        "{brand} added {f}.",
    ),
    "feature2": (
        "{It} comes with {f} and {f2}.",
        "Highlights include {f}, plus {f2}.",
        "{brand} fitted it with {f}, along with {f2}.",
    ),
    "spec": ("{It} offers {s}.", "By the numbers, you get {s}.", "Expect {s}."),
    "spec2": ("{It} has {s} and {s2}.", "On paper, it offers {s} and {s2}."),
    "use": (
        "It is ideal for {u}.",
        "It is a dependable companion for {u}.",
        "Many owners rely on it for {u}.",
    ),
    "use2": ("It works well for {u} and {u2}.", "Whether you need it for {u} or {u2}, it is up to the job."),
    "audience": (
        "It is a great fit for {aud}.",
        "{brand} designed it with {aud} in mind.",
        "It also makes a thoughtful gift for {aud}.",
    ),
    "audience_feature": ("{Aud} will appreciate {f}.", "{Aud} tend to love {f}."),
    "variant": ("It comes in {v}.", "You can order it in {v}."),
    "warranty": (
        "{brand} backs it with a {n}-year warranty.",
        "It is covered by a {n}-year warranty from {brand}.",
    ),
    "guarantee": (
        "{brand} offers a {n}-day satisfaction guarantee.",
        "If you are not happy, {brand} refunds you within {n} days.",
    ),
}
BODY_PLAN = (
    ("material",)
    + ("feature", "spec", "use", "feature", "audience") * 4
    + ("variant", "care", "warranty", "care")
)


def generate_rows(n: int, seed: int = 0, median_words: int = 60) -> list[dict]:
    """`n` rows of product, category, description and attributes; the same seed gives the same rows."""
    if n < 0 or median_words < 1:
        raise ValueError(f"need n >= 0 and median_words >= 1, got n={n}, median_words={median_words}")
    rng = random.Random(seed)
    seen: set[str] = set()
    rows = []
    for _ in range(n):
        cat = rng.choice(CATEGORIES)
        brand, voice = rng.choice(BRANDS)
        noun = rng.choice(cat.nouns.split("|"))
        product = _unique_name(rng, brand, noun, seen)
        target = max(8, round(median_words * rng.lognormvariate(0.0, LENGTH_SIGMA)))
        description, attributes = _describe(rng, cat, product, brand, voice, noun, target)
        rows.append(
            {"product": product, "category": cat.name, "description": description, "attributes": attributes}
        )
    return rows


def write_sample(path: str | Path, n: int = BUNDLED_ROWS, seed: int = BUNDLED_SEED) -> Path:
    """Write `generate_rows(n, seed)` as JSON lines (how the bundled file is made)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in generate_rows(n, seed):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def sample_path() -> Path:
    """The bundled sample file (package data, next to this module)."""
    return Path(__file__).with_name("data") / "sample_products.jsonl"


def _unique_name(rng: random.Random, brand: str, noun: str, seen: set[str]) -> str:
    """Brand + model + noun, redrawn until unused (the space holds ~600k names per noun)."""
    while True:
        name = f"{brand} {rng.choice(MODELS)}{rng.choice(SUFFIXES)} {noun}"
        if name not in seen:
            seen.add(name)
            return name


def _a(phrase: str) -> str:
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _describe(
    rng: random.Random, cat: Category, product: str, brand: str, voice: str, noun: str, target: int
) -> tuple[str, dict]:
    """Intro + body sentences until `target` words, then a closing line if the text is not a blurb."""
    w = _Writer(rng, cat, brand, voice, noun.lower())
    adj = rng.choice(ADJECTIVES[voice])
    slots = {"product": product, "brand": brand, "noun": w.noun, "a_adj": _a(adj), "A_adj": _cap(_a(adj))}
    intro = rng.choice(INTROS)
    for topic, slot in (("use", "use"), ("audience", "aud"), ("feature", "f")):
        if "{" + slot + "}" in intro:
            slots[slot] = w.take(topic, record=True)
    sentences = [intro.format(**slots)]
    words = len(sentences[0].split())
    for topic in BODY_PLAN:
        if words + CLOSING_WORDS >= target:
            break
        made = w.sentence(topic)
        if made:
            sentences.append(made)
            words += len(made.split())
    if words >= 25:
        sentences.append(rng.choice(CLOSINGS[voice]).format(noun=w.noun, brand=brand))
    return " ".join(sentences), w.attrs


class _Writer:
    """Writes body sentences for one product from shuffled copies of its category's vocab.

    Each vocab item is used at most once per description (no repeated features), and every fact a
    sentence states is recorded in `attrs`.
    """

    def __init__(self, rng: random.Random, cat: Category, brand: str, voice: str, noun: str) -> None:
        self.rng, self.cat, self.brand, self.voice, self.noun = rng, cat, brand, voice, noun
        vocab = {
            "feature": cat.features.split("|"),
            "use": cat.uses.split("|"),
            "audience": cat.audiences.split("|"),
            "material": cat.materials.split("|"),
            "spec": list(cat.specs),
            "variant": cat.variants.split("|"),
            "care": cat.care.split("|"),
        }
        self.pools = {key: rng.sample(items, len(items)) for key, items in vocab.items()}
        self.attrs: dict = {"brand": brand}

    def take(self, topic: str, record: bool = False):  # noqa: ANN201 - a string, or a spec tuple
        """The next unused item of `topic` (None when used up); `record` lists it in the attributes."""
        item = self.pools[topic].pop() if self.pools[topic] else None
        if record and item is not None:
            self.attrs.setdefault(topic + "s", []).append(item)
        return item

    def say(self, kind: str, **slots: object) -> str:
        it = self.rng.choice(("It", "It", f"The {self.noun}", f"This {self.noun}"))
        return _cap(self.rng.choice(TEMPLATES[kind]).format(It=it, brand=self.brand, **slots))

    def sentence(self, topic: str) -> str | None:
        """One body sentence on `topic`; None when the topic is used up."""
        if topic in ("feature", "use", "spec"):
            first = self.take(topic, record=topic != "spec")
            if first is None:
                return None
            second = self.take(topic, record=topic != "spec") if self.rng.random() < 0.4 else None
            values = [first] + ([second] if second else [])
            if topic == "spec":
                values = [self.spec(s) for s in values]
            key = {"feature": "f", "use": "u", "spec": "s"}[topic]
            return self.say(
                topic + ("2" if second else ""), **dict(zip((key, key + "2"), values, strict=False))
            )
        if topic == "material":
            if "material" in self.attrs:
                return None
            m, mb = self.take("material").split("=")
            self.attrs["material"] = m
            return self.say("material", m=m, mb=mb)
        if topic == "audience":
            aud = self.take("audience", record=True)
            if aud is None:
                return None
            f = self.take("feature", record=True)
            return self.say("audience_feature", Aud=_cap(aud), f=f) if f else self.say("audience", aud=aud)
        if topic == "variant":
            self.attrs["variant"] = v = self.take("variant")
            return self.say("variant", v=v)
        if topic == "care":
            return self.take("care")
        if self.cat.consumable:
            self.attrs["guarantee_days"] = n = self.rng.choice((30, 60, 90))
            return self.say("guarantee", n=n)
        self.attrs["warranty_years"] = n = self.rng.choice(WARRANTY_YEARS[self.voice])
        return self.say("warranty", n=n)

    def spec(self, spec: tuple) -> str:
        key, phrase, values = spec
        self.attrs[key] = n = self.rng.choice(values)
        return phrase.format(n=n)


if __name__ == "__main__":  # regenerate the bundled file after changing the generator or its vocab
    print(write_sample(sample_path()))
