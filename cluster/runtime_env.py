"""The runtime_env a submitted sweep runs in: the code and config to ship, and which variables go along.

A Ray job's runtime_env is visible to anyone who can read the dashboard, so it carries settings,
never secrets: HF_TOKEN, the judge's API key and MLflow credentials are set on the cluster (a k8s
Secret mounted as env, the node's environment) where every Ray worker sees them without our help.
Variables travel by name from the submitter's environment: only the names in `PASS_ENV` (plus
those listed in $QLORA_SWEEP_PASS_ENV), and never one whose name looks secret.

Paths such as HF_HOME or QLORA_SWEEP_CACHE are not passed by default: they name a directory on the
submitter's machine, while each node keeps its own cache at its own path (set in the node's image
or pod spec). Add them to $QLORA_SWEEP_PASS_ENV when the submitter's path is right for every node.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import yaml

from evaluation.errors import ConfigError
from sweep.preflight import SHARED_ENV
from sweep.tracking_params import looks_secret

TEMPLATE_ENV = "QLORA_SWEEP_RUNTIME_ENV"  # path of the user's runtime_env YAML (else the bundled template)
EXTRA_ENV = "QLORA_SWEEP_PASS_ENV"  # comma-separated names to pass through besides PASS_ENV
PASS_ENV = (
    "MLFLOW_TRACKING_URI",
    SHARED_ENV,
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_ENDPOINT",
    "QLORA_SWEEP_COMPILE_TURNS",  # read by every trial (trainables/gpu_peers.py)
)
TEMPLATE = Path(__file__).resolve().parent / "runtime_env.yaml"
_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")  # Ray expands ${NAME} on the node itself


def load_template(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> dict:
    """The runtime_env YAML to start from: `path`, else $QLORA_SWEEP_RUNTIME_ENV, else the bundled one."""
    environ = os.environ if environ is None else environ
    chosen = Path(path or environ.get(TEMPLATE_ENV) or TEMPLATE).expanduser()
    if not chosen.is_file():
        raise ConfigError(TEMPLATE_ENV, str(chosen), "the path of a runtime_env YAML file")
    data = yaml.safe_load(chosen.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(
            TEMPLATE_ENV, str(chosen), "a YAML mapping of runtime_env fields (working_dir, pip, env_vars)"
        )
    return data


def passed_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The submitter's values of the pass-through names that are set; a secret name is refused."""
    environ = os.environ if environ is None else environ
    extra = [n.strip() for n in environ.get(EXTRA_ENV, "").split(",") if n.strip()]
    out = {}
    for name in dict.fromkeys([*PASS_ENV, *extra]):
        if looks_secret(name):
            raise ConfigError(
                EXTRA_ENV,
                name,
                "names of non-secret variables",
                "set secrets on the cluster (a k8s Secret or the nodes' environment), not in a job",
            )
        if environ.get(name):
            out[name] = environ[name]
    uri = out.get("MLFLOW_TRACKING_URI", "")
    if urlparse(uri).password:
        raise ConfigError(
            "MLFLOW_TRACKING_URI",
            "<a URI with a password>",
            "a URI without credentials",
            "set MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD on the cluster instead",
        )
    return out


def check_env_vars(env_vars: Mapping[str, str]) -> None:
    """A runtime_env file may name a secret only as a ${NAME} reference that the node expands."""
    for name, value in env_vars.items():
        if looks_secret(name) and not _REFERENCE.match(str(value)):
            raise ConfigError(
                f"env_vars.{name}",
                "<hidden>",
                f'a reference to the node\'s own variable: "${{{name}}}"',
                "secrets are set on the cluster, never written into a runtime_env file",
            )


def build_runtime_env(
    template: dict, working_dir: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> dict:
    """The template with an absolute working_dir and the passed-through variables (they win over the
    template's literal values: the submitter's environment is the more specific setting)."""
    env = dict(template)
    wd = working_dir if working_dir is not None else env.get("working_dir", ".")
    if "://" not in str(wd):  # a local directory is zipped and uploaded; a URI (s3://...zip) is used as is
        wd = Path(wd).expanduser().resolve()
        if not wd.is_dir():
            raise ConfigError("working_dir", str(wd), "an existing directory holding the sweep YAML")
    env["working_dir"] = str(wd)
    env_vars = {str(k): str(v) for k, v in (env.get("env_vars") or {}).items()}
    check_env_vars(env_vars)
    env_vars.update(passed_env(environ))
    if env_vars:
        env["env_vars"] = env_vars
    return env
