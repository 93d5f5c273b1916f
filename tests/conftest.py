"""Fixtures shared by every test package.

Built models go to one cache per checkout (pytest's own cache dir, .pytest_cache/d/qlora-sweep):
a CI run builds the tiny model once, and a developer's reruns reuse it and the converted SmolLM2.
Set QLORA_SWEEP_CACHE to choose another place (CI can persist it). The variable is set at
configure time, before any test starts a Ray worker or subprocess, so they all share the cache.
"""

from __future__ import annotations

import contextlib
import os
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


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get("QLORA_SWEEP_CACHE"):
        cache = getattr(config, "cache", None)  # None when run with -p no:cacheprovider
        where = cache.mkdir("qlora-sweep") if cache else tempfile.mkdtemp(prefix="qlora-sweep-cache-")
        os.environ["QLORA_SWEEP_CACHE"] = str(where)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The built-in "tiny" Llama (2 layers, hidden 64, byte-level BPE 1024), built once per cache."""
    from trainables.builtin_models import tiny_model_dir as build

    return build()


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
