"""The bundled sample data: reproducible, varied, coherent, and fast to generate at benchmark size."""

from __future__ import annotations

import json
import statistics

from trainables.sample_data import generate_rows, sample_path, write_sample
from trainables.sample_vocab import CATEGORIES


def _words(row: dict) -> int:
    return len(row["description"].split())


def test_bundled_file_is_what_the_generator_writes_now(tmp_path):
    fresh = write_sample(tmp_path / "rows.jsonl")
    assert sample_path().is_file()
    assert fresh.read_bytes() == sample_path().read_bytes(), "regenerate: python -m trainables.sample_data"


def test_bundled_rows_are_varied_enough_for_fine_tunes_to_differ():
    rows = [json.loads(line) for line in sample_path().read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 600
    assert all({"product", "category", "description", "attributes"} <= set(r) for r in rows)
    assert len({r["category"] for r in rows}) >= 20
    assert len({r["product"] for r in rows}) == len(rows)  # whole products can be held out
    lengths = sorted(_words(r) for r in rows)
    p10, p90 = lengths[len(lengths) // 10], lengths[len(lengths) * 9 // 10]
    assert p90 >= 3 * p10
    assert min(lengths) <= 20 and max(lengths) >= 180  # short blurbs and long write-ups
    assert len({w for r in rows for w in r["description"].lower().split()}) > 1500


def test_descriptions_state_their_attributes_and_stay_in_their_category():
    by_name = {c.name: c for c in CATEGORIES}
    for row in generate_rows(300, seed=7):
        cat, text = by_name[row["category"]], row["description"]
        attrs = row["attributes"]
        assert row["product"] in text and row["product"].startswith(attrs["brand"] + " ")
        for feature in attrs.get("features", []):
            assert feature in cat.features.split("|") and feature in text
        for use in attrs.get("uses", []):
            assert use in cat.uses.split("|") and use in text
        if "material" in attrs:
            assert attrs["material"] in text
        assert text[0].isupper() and text.endswith(".")


def test_same_seed_same_rows_and_another_seed_other_rows():
    assert generate_rows(50, seed=3) == generate_rows(50, seed=3)
    assert [r["product"] for r in generate_rows(50, seed=3)] != [
        r["product"] for r in generate_rows(50, seed=4)
    ]


def test_benchmark_size_follows_the_median():
    rows = generate_rows(5000, seed=1, median_words=120)
    assert len({r["product"] for r in rows}) == 5000
    assert 100 <= statistics.median(_words(r) for r in rows) <= 150
