"""Rows -> prompts -> tokens, cached by content hash and shared by every trial on a node.

Loss is on the response tokens only (prompt tokens get label -100). The eval split holds out whole
products, so a product seen in training never scores the eval. Tokenized splits are stored with
`datasets` (Arrow, memory-mapped) under a key made of the rows, the tokenizer, the template and the
length settings: the first trial on a node tokenizes, the others load, guarded by a file lock.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from filelock import FileLock

from evaluation.errors import ConfigError
from trainables.builtin_models import cache_dir
from trainables.config import DataConfig
from trainables.sample_data import sample_path

ALPACA = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nCreate a detailed description for the following product: {product}, "
    "belonging to category: {category}\n\n### Response:\n"
)
COLUMNS = ("product", "category", "description")
_READERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class PreparedData:
    """Tokenized train/eval splits plus what a person should know about how they were made."""

    train: datasets.Dataset
    eval: datasets.Dataset
    eval_rows: list[dict]  # raw held-out rows (for generation and the judge)
    stats: dict = field(default_factory=dict)


def prompt_for(template: str, product: str, category: str) -> str:
    return (ALPACA if template == "alpaca" else template).format(product=product, category=category)


def load_rows(cfg: DataConfig) -> list[dict]:
    """The usable rows (see `read_rows`), without the counts."""
    return read_rows(cfg)[0]


def read_rows(cfg: DataConfig) -> tuple[list[dict], dict]:
    """The usable rows, with the configured columns renamed to product/category/description, and the
    counts of the rows left out, so that nothing is dropped without a number to show for it.

    A row is dropped when a cell is blank (missing, whitespace or not text: a number where a product
    name should be is not one); an exact duplicate of an earlier row (after stripping) is dropped
    too: it adds no information, only weight, and in the held-out split it would count twice.
    """
    ds = _read_table(cfg)
    wanted = cfg.columns.model_dump()
    missing = [f"{key} (column '{col}')" for key, col in wanted.items() if col not in ds.column_names]
    if missing:
        raise ConfigError(
            f"data.columns.{missing[0].split()[0]}", missing, f"columns present: {', '.join(ds.column_names)}"
        )
    counts = dict.fromkeys(
        ("rows_dropped_blank", *(f"blank_{c}" for c in COLUMNS), "rows_dropped_duplicate"), 0
    )
    counts["rows_read"] = len(ds)
    rows, seen = [], set()
    for raw in ds:
        row = {key: raw[col] for key, col in wanted.items()}
        blank = [key for key, v in row.items() if not (isinstance(v, str) and v.strip())]
        for key in blank:
            counts[f"blank_{key}"] += 1
        counts["rows_dropped_blank"] += bool(blank)
        if blank:
            continue
        row = {k: v.strip() for k, v in row.items()}
        identity = tuple(row[c] for c in COLUMNS)
        counts["rows_dropped_duplicate"] += identity in seen
        if identity not in seen:
            seen.add(identity)
            rows.append(row)
    if not rows:
        allowed = "a dataset with at least one row whose product, category and description are non-empty"
        raise ConfigError("data.source", cfg.source, allowed, f"all {len(ds)} rows have a blank cell")
    random.Random(cfg.seed).shuffle(rows)
    kept = rows[: cfg.max_rows] if cfg.max_rows else rows
    counts["rows_beyond_max_rows"] = len(rows) - len(kept)
    return kept, counts


def _read_table(cfg: DataConfig) -> datasets.Dataset:
    """The source as a `datasets.Dataset`; an unreadable or empty source is a ConfigError."""
    source = cfg.source
    if source == "sample":
        ds = datasets.load_dataset("json", data_files=str(sample_path()), split="train")
    elif Path(source).suffix.lower() in _READERS or Path(source).exists():
        path = Path(source).expanduser()
        reader = _READERS.get(path.suffix.lower())
        if not path.is_file() or reader is None:
            raise ConfigError(
                "data.source",
                source,
                "an existing .jsonl, .json, .csv or .parquet file, 'sample' or a hub id",
            )
        _check_utf8(path, reader)
        try:
            ds = datasets.load_dataset(reader, data_files=str(path), split="train")
        except Exception as err:  # noqa: BLE001 - any parse failure is the user's file, say so
            if _has_no_rows(path, reader):  # datasets says "StopIteration" or "no data" for these
                raise _empty(source) from None
            raise ConfigError("data.source", source, f"a readable {reader} file", _first_line(err)) from None
    else:
        try:
            ds = datasets.load_dataset(source, split=cfg.split)
        except Exception as err:  # noqa: BLE001 - offline, unknown id, bad split
            raise ConfigError(
                "data.source",
                source,
                "'sample', a local file, or a reachable hub dataset id",
                _first_line(err),
            ) from None
    if len(ds) == 0:
        raise _empty(source)
    return ds


def _empty(source: str) -> ConfigError:
    return ConfigError("data.source", source, "a dataset with at least one row", f"{source} is empty")


def _has_no_rows(path: Path, reader: str) -> bool:
    """Whether a file that failed to load holds no rows at all: nothing but whitespace, a CSV header
    alone, an empty JSON list, or a parquet file of zero rows."""
    if reader == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows == 0
        except Exception:  # noqa: BLE001 - not parquet at all: the parse error says more
            return False
    text = path.read_text(encoding="utf-8")  # _check_utf8 passed
    if not text.strip():
        return True
    if reader == "csv":
        return sum(1 for record in csv.reader(io.StringIO(text)) if any(c.strip() for c in record)) <= 1
    try:
        return json.loads(text) in ([], {})
    except ValueError:
        return False


def _first_line(err: Exception) -> str:
    """The first non-blank line of an error (some, like an empty file's StopIteration, have none)."""
    return next((ln.strip() for ln in str(err).splitlines() if ln.strip()), type(err).__name__)[:200]


def _check_utf8(path: Path, reader: str) -> None:
    """Fail with the byte offset instead of a pyarrow traceback when a text file is not UTF-8."""
    if reader == "parquet":
        return
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            "data.source", str(path), "a UTF-8 encoded file", f"invalid byte at offset {err.start}"
        ) from None


def split_by_product(rows: list[dict], eval_rows: int, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out whole products until `eval_rows` rows are held out."""
    products = sorted({r["product"] for r in rows})
    if len(products) < 2 or eval_rows >= len(rows):
        raise ConfigError(
            "data.eval_rows",
            eval_rows,
            f"fewer than the {len(rows)} rows, leaving at least one product to train on",
        )
    random.Random(seed).shuffle(products)
    held: set[str] = set()
    by_product: dict[str, int] = {}
    for r in rows:
        by_product[r["product"]] = by_product.get(r["product"], 0) + 1
    count = 0
    for p in products[:-1]:
        if count >= eval_rows:
            break
        held.add(p)
        count += by_product[p]
    return [r for r in rows if r["product"] not in held], [r for r in rows if r["product"] in held]


def tokenize_row(row: dict, tokenizer, template: str, max_len: int) -> dict:
    """input_ids and labels for one row: the prompt masked with -100, the response + EOS learned."""
    prompt = tokenizer(prompt_for(template, row["product"], row["category"]), add_special_tokens=True)[
        "input_ids"
    ]
    response = tokenizer(row["description"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids = prompt + response
    return {
        "input_ids": ids[:max_len],
        "labels": ([-100] * len(prompt) + response)[:max_len],
        "overlong": len(ids) > max_len,
        "prompt_only": len(prompt) >= max_len,
    }


def _tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    return hashlib.sha256((text + str(tokenizer.eos_token_id)).encode()).hexdigest()[:16]


def rows_hash(rows: list[dict]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


def _tokenize_split(rows: list[dict], tokenizer, cfg: DataConfig, max_len: int, name: str, key: str):
    """Tokenize once per content key; later calls (other trials, other processes) load the cache."""
    target = cache_dir() / "tokenized" / f"{key}-{name}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not target.exists():
            ds = datasets.Dataset.from_list(rows).map(
                lambda r: tokenize_row(r, tokenizer, cfg.template, max_len),
                remove_columns=["product", "category", "description"],
            )
            tmp = target.with_name(target.name + ".tmp")
            ds.save_to_disk(str(tmp))
            tmp.rename(target)
    return datasets.load_from_disk(str(target))


def prepare_data(cfg: DataConfig, tokenizer, max_seq_len: int) -> PreparedData:
    """Load, split by product, tokenize (cached), and apply the overlong policy, counting what it did."""
    rows, counts = read_rows(cfg)
    train_rows, eval_rows = split_by_product(rows, cfg.eval_rows, cfg.seed)
    data_hash = rows_hash(rows)
    key = hashlib.sha256(
        f"{data_hash}|{_tokenizer_fingerprint(tokenizer)}|{cfg.template}|{max_seq_len}|{cfg.eval_rows}|{cfg.seed}".encode()
    ).hexdigest()[:20]
    train = _tokenize_split(train_rows, tokenizer, cfg, max_seq_len, "train", key)
    evals = _tokenize_split(eval_rows, tokenizer, cfg, max_seq_len, "eval", key)
    overlong = sum(train["overlong"]) + sum(evals["overlong"])
    # A row whose prompt alone fills max_seq_len has nothing to learn from: always dropped.
    keep = (lambda r: not r["overlong"]) if cfg.overlong == "drop" else (lambda r: not r["prompt_only"])
    train, evals = train.filter(keep), evals.filter(keep)
    if len(train) == 0 or len(evals) == 0:
        raise ConfigError(
            "training.max_seq_len",
            max_seq_len,
            "a length that leaves room for the responses",
            f"no {'training' if len(train) == 0 else 'eval'} rows left after the overlong policy",
        )
    stats = {
        "dataset": cfg.source,
        "dataset_hash": data_hash,
        "train_rows": len(train),
        "eval_rows": len(evals),
        **counts,
        "overlong_rows": int(overlong),
        "overlong_policy": cfg.overlong,
        "rows_dropped_overlong": len(rows) - len(train) - len(evals),
        "train_tokens": int(sum(len(x) for x in train["input_ids"])),
    }
    return PreparedData(
        train=train.remove_columns(["overlong", "prompt_only"]),
        eval=evals.remove_columns(["overlong", "prompt_only"]),
        eval_rows=eval_rows,
        stats=stats,
    )


def describe_stats(stats: Mapping) -> str:
    """One line for a person: the rows trained and held out, and every row left out and why.

    E.g. "40 rows read: 24 train rows, 8 eval rows; 8 rows dropped (blank description); 0 duplicate
    rows dropped; 0 overlong (truncated)". Keys a stats dict lacks (older runs) are left out.
    """
    train, held = stats.get("train_rows", "?"), stats.get("eval_rows", "?")
    out = f"{_rows(train, 'train row')}, {_rows(held, 'eval row')}"
    if "rows_read" in stats:
        out = f"{stats['rows_read']} rows read: {out}"
    parts = [out]
    if "rows_dropped_blank" in stats:
        blank = {c: stats.get(f"blank_{c}", 0) for c in COLUMNS if stats.get(f"blank_{c}", 0)}
        which = next(iter(blank)) if len(blank) == 1 else ", ".join(f"{c}: {n}" for c, n in blank.items())
        parts.append(f"{_rows(stats['rows_dropped_blank'])} dropped (blank {which or 'cells'})")
    if "rows_dropped_duplicate" in stats:
        parts.append(f"{_rows(stats['rows_dropped_duplicate'], 'duplicate row')} dropped")
    if "overlong_rows" in stats:
        policy = stats.get("overlong_policy", "truncate")
        parts.append(f"{stats['overlong_rows']} overlong ({'dropped' if policy == 'drop' else 'truncated'})")
        prompt_only = stats.get("rows_dropped_overlong", 0) if policy != "drop" else 0
        if prompt_only:
            parts.append(f"{_rows(prompt_only)} dropped (the prompt alone fills max_seq_len)")
    if stats.get("rows_beyond_max_rows"):
        parts.append(f"{_rows(stats['rows_beyond_max_rows'])} beyond data.max_rows unused")
    return "; ".join(parts)


def _rows(n: int | str, what: str = "row") -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def sample_prompts(cfg, data) -> tuple[list[dict], list[str]]:
    """The fixed, seeded held-out rows a trial's (and `eval`'s) samples are generated for, and their
    prompts: the same ones for every trial of a sweep, so base and trials are compared on one set."""
    from evaluation.generation import choose

    rows = choose(data.eval_rows, cfg.generation)
    return rows, [prompt_for(cfg.data.template, r["product"], r["category"]) for r in rows]
