"""GPU utilisation sampled while a trial runs (sweep/gpu_usage.py). There is no GPU here, so
`nvidia-smi` is a stand-in script on PATH that answers as the real one does for two GPUs."""

import os
import time

from sweep.gpu_usage import GpuSampler, sample

# `nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -i 0,1`: one value per GPU.
FAKE = """#!/bin/sh
case "$*" in *"-i 0,1"*) printf '30\\n45\\n' ;; *"-i 1"*) printf '45\\n' ;; *) exit 6 ;; esac
"""


def _fake_nvidia_smi(tmp_path, monkeypatch):
    script = tmp_path / "nvidia-smi"
    script.write_text(FAKE)
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


def test_sample_asks_for_the_trials_own_gpus(tmp_path, monkeypatch):
    _fake_nvidia_smi(tmp_path, monkeypatch)
    assert sample([0, 1]) == 37.5 and sample(["1"]) == 45.0
    assert sample([7]) is None  # nvidia-smi failed: unknown, not zero


def test_sampler_reports_the_mean_since_its_last_call(tmp_path, monkeypatch):
    _fake_nvidia_smi(tmp_path, monkeypatch)
    with GpuSampler([0, 1], every_s=0.01).running() as usage:
        deadline, first = time.monotonic() + 30, None
        while first is None and time.monotonic() < deadline:  # the thread's first sample
            first = usage.mean()
        assert first == 37.5
    assert usage._thread is not None and not usage._thread.is_alive()  # stopped with the trial


def test_no_gpu_no_sampling(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    with GpuSampler([0]).running() as usage:
        assert usage._thread is None and usage.mean() is None
    with GpuSampler([]).running() as usage:  # a CPU trial
        assert usage._thread is None
