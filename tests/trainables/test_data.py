"""Prompts, response-only labels, the by-product split, the tokenization cache and bad datasets."""

import json

import pytest
from transformers import AutoTokenizer

import trainables.data as data_mod
from evaluation.errors import ConfigError
from trainables.config import DataConfig
from trainables.data import describe_stats, load_rows, prepare_data, read_rows, split_by_product, tokenize_row


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_prompt_tokens_are_masked(tok):
    row = {"product": "Acme Lamp", "category": "lighting", "description": "A warm, dimmable lamp."}
    out = tokenize_row(row, tok, "alpaca", 512)
    n_masked = sum(1 for x in out["labels"] if x == -100)
    response = tok(row["description"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert out["labels"][n_masked:] == response
    assert out["input_ids"][n_masked:] == response
    assert n_masked == len(out["input_ids"]) - len(response) > 10


def test_split_holds_out_whole_products():
    rows = [{"product": f"p{i % 20}", "category": "c", "description": f"d{i}"} for i in range(100)]
    train, held = split_by_product(rows, 20, seed=1)
    assert len(held) >= 20 and len(train) + len(held) == 100
    assert not {r["product"] for r in train} & {r["product"] for r in held}


def test_bad_datasets(tmp_path):
    with pytest.raises(ConfigError, match="data.columns.category"):
        load_rows(DataConfig(source=_write(tmp_path / "a.jsonl", [{"product": "x", "description": "y"}])))
    with pytest.raises(ConfigError, match="data.source"):
        load_rows(
            DataConfig(
                source=_write(tmp_path / "b.jsonl", [{"product": "", "category": "c", "description": ""}])
            )
        )
    bad = tmp_path / "c.jsonl"
    bad.write_bytes(b'{"product": "caf\xe9", "category": "c", "description": "d"}\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        load_rows(DataConfig(source=str(bad)))
    with pytest.raises(ConfigError, match="data.source"):
        load_rows(DataConfig(source=str(tmp_path / "absent.csv")))


def test_column_mapping_and_csv(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("name,cat,text\nLamp A,lighting,Bright.\nChair B,furniture,Comfy.\n", encoding="utf-8")
    cfg = DataConfig(source=str(path), columns={"product": "name", "category": "cat", "description": "text"})
    assert sorted(r["product"] for r in load_rows(cfg)) == ["Chair B", "Lamp A"]


def test_overlong_rows_counted_and_handled(tok, tmp_path):
    rows = [
        {"product": f"p{i}", "category": "c", "description": "word " * (5 if i % 2 else 400)}
        for i in range(40)
    ]
    src = _write(tmp_path / "long.jsonl", rows)
    truncated = prepare_data(DataConfig(source=src, eval_rows=6), tok, 256)
    dropped = prepare_data(DataConfig(source=src, eval_rows=6, overlong="drop"), tok, 256)
    assert truncated.stats["overlong_rows"] == dropped.stats["overlong_rows"] == 20
    assert max(len(x) for x in truncated.train["input_ids"]) == 256
    assert truncated.stats["train_rows"] + truncated.stats["eval_rows"] == 40
    assert dropped.stats["train_rows"] + dropped.stats["eval_rows"] == 20


def test_tokenized_once_then_cached(tok, monkeypatch):
    calls = []
    real = data_mod.tokenize_row
    monkeypatch.setattr(data_mod, "tokenize_row", lambda *a: calls.append(1) or real(*a))
    cfg = DataConfig(eval_rows=30, seed=12345)
    first = prepare_data(cfg, tok, 200)
    n = len(calls)
    second = prepare_data(cfg, tok, 200)
    assert len(calls) == n  # nothing re-tokenized
    assert first.train["input_ids"] == second.train["input_ids"]
    assert first.stats["dataset_hash"] == second.stats["dataset_hash"]


def _blank_csv(path, n=40, blank_every=5):
    """n rows of 10 products; every `blank_every`-th row has a blank description (8 of 40)."""
    lines = ["product,category,description"]
    for i in range(n):
        desc = "" if i % blank_every == 0 else f"A fine product number {i}."
        lines.append(f"Product {i % 10},Things,{desc}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_blank_cells_and_duplicates_are_counted_not_dropped_silently(tok, tmp_path):
    src = _blank_csv(tmp_path / "blank.csv")
    data = prepare_data(DataConfig(source=src, eval_rows=6), tok, 256)
    s = data.stats
    assert (s["rows_read"], s["rows_dropped_blank"], s["blank_description"]) == (40, 8, 8)
    assert s["blank_product"] == s["blank_category"] == 0
    assert s["train_rows"] + s["eval_rows"] == 32 and s["rows_dropped_duplicate"] == 0
    assert "40 rows read" in describe_stats(s) and "8 rows dropped (blank description)" in describe_stats(s)
    assert "0 overlong (truncated)" in describe_stats(s)

    rows = [{"product": "Lamp", "category": "c", "description": "Bright."}] * 3 + [
        {"product": " Lamp ", "category": "c", "description": "Bright. "},  # the same row once stripped
        {"product": "Lamp", "category": "c", "description": "Dim."},
        {"product": None, "category": "", "description": "No name."},
        {"product": "Chair", "category": "c", "description": "Comfy."},
    ]
    kept, counts = read_rows(DataConfig(source=_write(tmp_path / "dups.jsonl", rows)))
    assert len(kept) == 3 and counts["rows_dropped_duplicate"] == 3 and counts["rows_dropped_blank"] == 1
    assert (counts["blank_product"], counts["blank_category"]) == (1, 1)
    assert "1 row dropped (blank product: 1, category: 1); 3 duplicate rows dropped" in describe_stats(counts)


def test_every_row_is_accounted_for(tok, tmp_path):
    """Read = dropped (blank, duplicate, beyond max_rows, overlong) + trained + held out."""
    rows = [
        {"product": f"p{i}", "category": "c", "description": "word " * (3 if i % 7 else 400)}
        for i in range(30)
    ]
    rows += [{"product": "p1", "category": "c", "description": "word " * 3}]  # a duplicate
    rows += [{"product": "p2", "category": "c", "description": " "}]  # a blank
    src = _write(tmp_path / "mixed.jsonl", rows)
    s = prepare_data(DataConfig(source=src, eval_rows=4, overlong="drop", max_rows=25), tok, 128).stats
    left_out = (
        "rows_dropped_blank",
        "rows_dropped_duplicate",
        "rows_beyond_max_rows",
        "rows_dropped_overlong",
    )
    assert [s[k] for k in left_out[:3]] == [1, 1, 5] and s["rows_read"] == 32
    assert s["rows_dropped_overlong"] == s["overlong_rows"] >= 1
    assert sum(s[k] for k in left_out) + s["train_rows"] + s["eval_rows"] == s["rows_read"]


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.jsonl", ""),
        ("blank.jsonl", "\n \n"),
        ("empty.csv", ""),
        ("header_only.csv", "product,category,description\n"),
        ("empty.json", ""),
        ("empty_list.json", "[]"),
    ],
)
def test_an_empty_file_says_it_is_empty(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^data\.source: .* is empty\)$") as err:
        load_rows(DataConfig(source=str(path)))
    assert str(path) in str(err.value) and "StopIteration" not in str(err.value)


def test_an_empty_parquet_file_says_it_is_empty(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "empty.parquet"
    pq.write_table(
        pa.table({c: pa.array([], pa.string()) for c in ("product", "category", "description")}), path
    )
    with pytest.raises(ConfigError, match=r"^data\.source: .* is empty\)$"):
        load_rows(DataConfig(source=str(path)))
