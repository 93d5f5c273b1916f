"""Plain helpers and constants shared by the test packages; fixtures live in conftest.py.

Imported as `helpers` (pyproject.toml puts tests/ on pytest's pythonpath; spawned worker processes
inherit the path). Heavy imports stay inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# OpenLLaMA-3b-v2's config.json (numbers only, no weights), shipped in the repository so that the seed
# study's table needs nothing beside the checkout; the README's offline `plan` command names this path.
OPEN_LLAMA = ROOT / "examples" / "models" / "open_llama_3b_v2"
# A sweep's overrides for seconds-long CPU trials of the built-in tiny model (one prompt generated).
TINY_SWEEP = [
    "model.path=tiny",
    "data.eval_rows=30",
    "training.max_steps=8",
    "training.eval_interval=2",
    "training.batch_size=4",
    "training.grad_accum=1",
    "training.max_seq_len=256",
    "generation.num_prompts=1",
    "generation.max_new_tokens=4",
    "resources.cpu=1",
    "resources.gpu=0",
]


def __getattr__(name: str):  # noqa: ANN202 - SMOLLM2_SHAPE is built on first use (transformers is heavy)
    if name == "SMOLLM2_SHAPE":
        from transformers import LlamaConfig

        return LlamaConfig(
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            vocab_size=49152,
            tie_word_embeddings=True,
        )
    raise AttributeError(name)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server a test starts, or a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler of a test server: logs nothing, answers through `reply`."""

    def reply(self, status: int, body: str) -> None:
        data = body.encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            pass

    def log_message(self, *args) -> None:
        pass


class LoopbackServer:
    """`handler` served on a free 127.0.0.1 port from a daemon thread until `close()`.

    `base_url` is OpenAI-style (`.../v1`): the judges' endpoints are what the tests serve."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _gloo_rank(rank: int, world: int, port: int, fn: Callable, args: tuple) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        fn(rank, *args)
    finally:
        dist.destroy_process_group()


def spawn_gloo(fn: Callable, *args, world: int = 2) -> None:
    """`fn(rank, *args)` in `world` spawned processes joined in one gloo process group (CPU DDP/FSDP)."""
    import torch.multiprocessing as mp

    mp.start_processes(
        _gloo_rank, args=(world, free_port(), fn, args), nprocs=world, join=True, start_method="spawn"
    )


def one_step_cfg(tiny: Path | str, *sets: str):  # noqa: ANN201 - a TrialConfig
    """One optimizer step (batch 4 x grad_accum 2) on the tiny model, no dropout, no generation: the
    trial the multi-worker tests run on one worker and on two, and compare."""
    from trainables.config import load_trial_config

    base = [f"model.path={tiny}", "data.eval_rows=30", "training.max_steps=1", "training.eval_interval=1"]
    base += ["training.batch_size=4", "training.grad_accum=2", "training.max_seq_len=256", "lora.dropout=0"]
    return load_trial_config(None, [*base, "generation.num_prompts=0", "training.lr=1e-2", *sets])
