"""Prompts, response-only labels, the by-product split, the tokenization cache and bad datasets."""

import json

import pytest
from transformers import AutoTokenizer

import trainables.data as data_mod
from evaluation.errors import ConfigError
from trainables.config import DataConfig
from trainables.data import load_rows, prepare_data, split_by_product, tokenize_row


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
        load_rows(DataConfig(source=_write(tmp_path / "b.jsonl", [{"product": "", "category": "c", "description": ""}])))
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
    rows = [{"product": f"p{i}", "category": "c", "description": "word " * (5 if i % 2 else 400)} for i in range(40)]
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
