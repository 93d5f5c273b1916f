"""The judge's verdict cache: one sqlite file of verdicts keyed by who judged what.

A key is the sha256 of the judge's identity (backend, normalised endpoint, model, prompt version,
and for a local judge its weights and tokenizer), the rubric and the texts judged. Two endpoints
serving the same model name are two judges: keying by the name alone let a new server's scores
come from the old one's cache. The identity holds no credentials, and the file holds only hashes
and verdicts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443}


def default_cache_dir() -> Path:
    """$QLORA_SWEEP_CACHE/judge, else the user cache dir ($XDG_CACHE_HOME or ~/.cache)/qlora-sweep/judge.

    The same root as the built-in models, so one variable moves everything the sweep caches.
    """
    root = os.environ.get("QLORA_SWEEP_CACHE")
    if root:
        return Path(root).expanduser() / "judge"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qlora-sweep" / "judge"


def endpoint_identity(base_url: str) -> str:
    """`base_url` as one spelling per endpoint: scheme and host lowercased, the default port and a
    trailing slash dropped, and never a user name, password, query or fragment (no credentials)."""
    parts = urlsplit(base_url)
    scheme, host, port = parts.scheme.lower(), (parts.hostname or "").lower(), parts.port
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), "", ""))


def cache_key(identity: Mapping[str, Any], rubric: str, *texts: str | None) -> str:
    """sha256 of the judge's identity + rubric + the texts judged: same judge and inputs, same verdict."""
    return hashlib.sha256(json.dumps([identity, rubric, *texts], sort_keys=True).encode()).hexdigest()


class VerdictCache:
    """Verdicts by key in one sqlite file.

    sqlite because trials running side by side on one node share the file and sqlite does the
    locking. Only successful verdicts are stored: a missing one is retried on the next run. A cache
    that cannot be read or written is logged and skipped, never an error for the trial.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.path = Path(directory).expanduser() / "verdicts.sqlite"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as con, con:
                con.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        except (OSError, sqlite3.Error) as err:
            log.warning("judge cache %s unusable, judging without it: %s", self.path, err)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def get(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        try:
            with closing(self._connect()) as con:
                for start in range(0, len(keys), 500):  # sqlite caps the number of bound parameters
                    chunk = list(keys[start : start + 500])
                    marks = ",".join("?" * len(chunk))
                    rows = con.execute(f"SELECT key, value FROM verdicts WHERE key IN ({marks})", chunk)
                    found.update((k, json.loads(v)) for k, v in rows)
        except sqlite3.Error as err:
            log.warning("judge cache %s not readable: %s", self.path, err)
        return found

    def put(self, items: dict[str, dict[str, Any]]) -> None:
        if not items:
            return
        try:
            with closing(self._connect()) as con, con:
                con.executemany(
                    "INSERT OR REPLACE INTO verdicts VALUES (?, ?)",
                    [(k, json.dumps(v)) for k, v in items.items()],
                )
        except sqlite3.Error as err:
            log.warning("judge cache %s not writable: %s", self.path, err)
