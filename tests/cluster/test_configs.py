"""What goes with a submission, checked without a cluster: the runtime_env (settings by name, never
secrets), the submission rules (fail on the submitter's machine), and the cluster configs (valid
for `ray up` and KubeRay, secrets only from the cluster)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cluster.runtime_env import EXTRA_ENV, TEMPLATE, build_runtime_env, load_template, passed_env
from cluster.submit import entrypoint, submit
from evaluation.errors import ConfigError
from sweep.preflight import SHARED_ENV

ROOT = Path(__file__).resolve().parents[2]


def write_sweep(path: Path, storage: Path) -> Path:
    data = {"name": "s", "storage_path": str(storage), "model": {"path": "tiny"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_runtime_env_passes_settings_by_name_never_secrets(tmp_path):
    environ = {
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "HF_TOKEN": "hf_abcdefghijklmnop",
        "HF_HOME": "/laptop/hf",
        "QLORA_SWEEP_CACHE": "/laptop/cache",
        "OPENAI_API_KEY": "sk-secret-value",
        SHARED_ENV: "1",
    }
    env = build_runtime_env(load_template(None, environ), tmp_path, environ)
    assert env["working_dir"] == str(tmp_path.resolve())
    assert env["env_vars"] == {
        "TOKENIZERS_PARALLELISM": "false",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        SHARED_ENV: "1",
    }  # paths stay the nodes' own; secrets stay on the cluster
    assert "sk-secret-value" not in json.dumps(env) and "hf_abcdefghijklmnop" not in json.dumps(env)
    # Paths travel when asked for; a secret name does not, even when asked for.
    assert passed_env({**environ, EXTRA_ENV: "HF_HOME, QLORA_SWEEP_CACHE"})["HF_HOME"] == "/laptop/hf"
    with pytest.raises(ConfigError) as err:
        passed_env({**environ, EXTRA_ENV: "HF_TOKEN"})
    assert err.value.field == EXTRA_ENV and "hf_abc" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        passed_env({"MLFLOW_TRACKING_URI": "https://me:pa55word@mlflow.example:443"})
    assert err.value.field == "MLFLOW_TRACKING_URI" and "pa55word" not in str(err.value)


def test_runtime_env_file_names_secrets_only_as_node_references(tmp_path):
    template = tmp_path / "runtime_env.yaml"
    template.write_text(yaml.safe_dump({"working_dir": ".", "env_vars": {"HF_TOKEN": "hf_written_down"}}))
    with pytest.raises(ConfigError) as err:
        build_runtime_env(load_template(template, {}), tmp_path, {})
    assert err.value.field == "env_vars.HF_TOKEN" and "hf_written_down" not in str(err.value)
    template.write_text(
        yaml.safe_dump({"working_dir": ".", "env_vars": {"HF_TOKEN": "${HF_TOKEN}"}, "pip": ["x"]})
    )
    env = build_runtime_env(load_template(None, {"QLORA_SWEEP_RUNTIME_ENV": str(template)}), tmp_path, {})
    assert env["env_vars"] == {"HF_TOKEN": "${HF_TOKEN}"} and env["pip"] == ["x"]
    with pytest.raises(ConfigError) as err:
        build_runtime_env(load_template(None, {}), tmp_path / "missing", {})
    assert err.value.field == "working_dir"
    # The bundled template is a valid Ray runtime_env (what `ray job submit --runtime-env` parses).
    from ray.runtime_env import RuntimeEnv

    RuntimeEnv(**yaml.safe_load(TEMPLATE.read_text()))


def test_submit_refuses_what_cannot_work_before_contacting_a_cluster(tmp_path, monkeypatch, capsys):
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "QLORA_SWEEP_RUNTIME_ENV"):
        monkeypatch.delenv(name, raising=False)
    wd = tmp_path / "wd"
    monkeypatch.chdir(write_sweep(wd / "sweep.yaml", tmp_path / "store").parent)
    with pytest.raises(ConfigError) as err:
        submit("sweep.yaml", ["storage_path=./results"])  # would land in the job's temporary working_dir
    assert err.value.field == "storage_path"
    with pytest.raises(ConfigError) as err:
        submit("sweep.yaml", ["lora.r=0"])  # a plain config mistake fails here, not on the cluster
    assert err.value.field == "lora.r"
    outside = write_sweep(tmp_path / "elsewhere.yaml", tmp_path / "store")
    with pytest.raises(ConfigError) as err:
        submit(str(outside))
    assert err.value.field == "config"
    with pytest.raises(ConfigError) as err:
        submit("sweep.yaml")
    assert err.value.field == "--address"
    assert capsys.readouterr().out == ""  # nothing was submitted, no job id printed
    assert (
        entrypoint("conf/my sweep.yaml", ["lora.r=8"])
        == "python -m sweep.cli run 'conf/my sweep.yaml' --set lora.r=8"
    )


def _docs(name: str) -> list[dict]:
    return list(yaml.safe_load_all((ROOT / "cluster" / name).read_text()))


def test_cluster_configs_are_valid_and_keep_secrets_out(monkeypatch, tmp_path):
    from ray.autoscaler._private.commands import prepare_config, validate_config

    from sweep.config import load_sweep_config
    from sweep.preflight import check_cluster
    from sweep.tracking_params import looks_secret

    aws = yaml.safe_load((ROOT / "cluster" / "ray-cluster-aws.yaml").read_text())
    validate_config(prepare_config(aws))  # Ray's own schema, as `ray up` applies it
    assert aws["available_node_types"]["head"]["resources"] == {"CPU": 0}  # trials go to the GPU workers
    assert "g5" in aws["available_node_types"]["gpu_worker"]["node_config"]["InstanceType"]
    for name in ("kuberay-raycluster.yaml", "kuberay-rayjob.yaml"):
        docs = _docs(name)
        kinds = {d["kind"]: d for d in docs}
        spec = (
            kinds["RayCluster"]["spec"]
            if "RayCluster" in kinds
            else kinds["RayJob"]["spec"]["rayClusterSpec"]
        )
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0" and spec["enableInTreeAutoscaling"]
        worker = spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
        assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            container = group["template"]["spec"]["containers"][0]
            assert {"secretRef": {"name": "qlora-sweep-secrets", "optional": True}} in container["envFrom"]
            assert not any(looks_secret(e["name"]) and "value" in e for e in container.get("env", []))
        for config_map in (d for d in docs if d["kind"] == "ConfigMap"):
            assert not any(looks_secret(k) for k in config_map["data"])  # secrets live in the Secret only

    # The RayJob's sweep is valid and passes the multi-node preflight with the pods' settings.
    job = {d["metadata"]["name"]: d for d in _docs("kuberay-rayjob.yaml")}
    settings = job["qlora-sweep-env"]["data"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings["MLFLOW_TRACKING_URI"])
    (tmp_path / "sweep.yaml").write_text(job["qlora-sweep-job"]["data"]["sweep.yaml"])
    cfg = load_sweep_config(tmp_path / "sweep.yaml")
    check_cluster(cfg, [{"CPU": 0.0}, {"CPU": 8.0, "GPU": 1.0}], settings)
    assert job["qlora-sweep"]["spec"]["entrypoint"] == "qlora-sweep run /home/ray/job/sweep.yaml"
