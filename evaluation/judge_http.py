"""The `openai` judge backend: any OpenAI-compatible chat endpoint (vLLM, llama.cpp, OpenAI, ...).

Requests go out from a small thread pool (`concurrency` in flight at most), each with a timeout
and retried with exponential backoff on timeouts, connection errors, 408/429/5xx and answers that
are not the JSON the rubric asks for. What still fails becomes a missing verdict with its reason.
The API key is read from the environment variable named in the config and kept in a `Secret`
whose repr is redacted; it is sent only as the Authorization header and scrubbed from every
reason and log line we write (a server may echo it back in an error body).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx

from evaluation.errors import ConfigError
from evaluation.judge import (
    PAIRWISE_RUBRIC,
    RUBRIC,
    CachedJudge,
    Sample,
    Verdict,
    VerdictError,
    parse_preference,
    parse_verdict,
    render_pair,
    render_sample,
)
from evaluation.verdict_cache import VerdictCache, endpoint_identity

log = logging.getLogger(__name__)
T = TypeVar("T")

# Worth another try: the server was busy, restarting or slow. Other 4xx (bad key, unknown model)
# will not change on retry, so they fail at once.
RETRY_STATUS = {408, 409, 425, 429}


class Secret:
    """A credential that prints as '***' in reprs, logs and tracebacks that show locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def redact(self, text: str) -> str:
        return text.replace(self._value, "***") if self._value else text

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    @classmethod
    def from_env(cls, name: str | None) -> Secret | None:
        """The key in environment variable `name` (None when no key is configured)."""
        if name is None:
            return None
        value = os.environ.get(name, "")
        if not value:
            raise ConfigError(
                "judge.api_key_env",
                name,
                "the name of a set, non-empty environment variable",
                hint="export the key under that name before starting",
            )
        return cls(value)


def checked_endpoint(base_url: str | None) -> str:
    """The API root as the cache knows it (`endpoint_identity`). A URL carrying a user:password@,
    a ?query (where keys hide) or a #fragment is refused without echoing those parts."""
    allowed = "an http(s) URL of the API root, e.g. http://127.0.0.1:8000/v1"
    parts = urlsplit(base_url or "")
    if parts.username is not None or parts.query or parts.fragment:
        shown = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
        raise ConfigError(
            "judge.base_url",
            f"{shown} (its credentials, query or fragment not shown)",
            allowed + ", without user:password@, ?query or #fragment ('/chat/completions' is appended)",
            hint="a key belongs in the environment variable named by judge.api_key_env",
        )
    if parts.scheme.lower() in ("http", "https") and parts.hostname:
        try:
            return endpoint_identity(parts.geturl())
        except ValueError:  # a port that is not a number
            pass
    raise ConfigError("judge.base_url", base_url, allowed)


class OpenAIJudge(CachedJudge):
    """Scores and comparisons from `POST {base_url}/chat/completions`, temperature 0."""

    rubric = RUBRIC
    pairwise_rubric = PAIRWISE_RUBRIC

    def __init__(
        self,
        base_url: str | None,
        model: str,
        api_key_env: str | None = None,
        *,
        concurrency: int = 4,
        timeout_s: float = 30.0,
        retries: int = 2,
        backoff_s: float = 0.5,
        max_tokens: int = 256,
        cache: VerdictCache | None = None,
    ) -> None:
        endpoint = checked_endpoint(base_url)
        if concurrency < 1:
            raise ConfigError("judge.concurrency", concurrency, "an integer >= 1")
        # Retries, timeouts and concurrency change when an answer comes, not what it says.
        identity = {"backend": "openai", "base_url": endpoint, "model": model, "max_tokens": max_tokens}
        super().__init__(f"openai:{model}@{endpoint}", identity, cache)
        self.url = endpoint + "/chat/completions"
        self.model, self.api_key_env = model, api_key_env
        self.concurrency, self.timeout_s, self.retries, self.backoff_s = (
            concurrency,
            timeout_s,
            retries,
            backoff_s,
        )
        self.max_tokens = max_tokens
        self._key = Secret.from_env(api_key_env)

    def __repr__(self) -> str:
        return (
            f"OpenAIJudge(url={self.url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
            f"concurrency={self.concurrency})"
        )

    def _redact(self, text: str) -> str:
        return self._key.redact(text) if self._key else text

    def _ask(
        self, client: httpx.Client, system: str, user: str, parse: Callable[[str], T]
    ) -> tuple[T | None, str]:
        """One judgement with retries: (parsed answer, "") or (None, why it failed)."""
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }
        headers = {"Authorization": f"Bearer {self._key.reveal()}"} if self._key else {}
        reason = ""
        for attempt in range(self.retries + 1):
            if attempt:
                log.debug("judge attempt %d/%d failed: %s", attempt, self.retries + 1, reason)
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = client.post(self.url, json=body, headers=headers)
            except httpx.TimeoutException:
                reason = f"timed out after {self.timeout_s:g} s"
                continue
            except httpx.HTTPError as err:
                reason = f"{type(err).__name__}: {self._redact(str(err))[:200]}"
                continue
            if response.status_code >= 400:
                reason = f"HTTP {response.status_code}: {self._redact(response.text)[:200]}"
                if response.status_code in RETRY_STATUS or response.status_code >= 500:
                    continue
                return None, reason
            try:
                content = response.json()["choices"][0]["message"]["content"]
                return parse(self._redact(content)), ""  # an endpoint echoing the key must not leak it
            except (ValueError, KeyError, IndexError, TypeError) as err:
                # VerdictError (a ValueError) for a bad verdict, the others for a non-OpenAI reply.
                kind = "unparsable verdict" if isinstance(err, VerdictError) else "not a chat completion"
                reason = f"{kind}: {self._redact(str(err))[:200]}"
        return None, f"{reason} (after {self.retries + 1} attempts)"

    def _ask_all(
        self, system: str, users: list[str], parse: Callable[[str], T]
    ) -> list[tuple[T | None, str]]:
        """Every judgement, `concurrency` at a time; results in the order of `users`."""
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        with (
            httpx.Client(timeout=self.timeout_s, limits=limits) as client,
            ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="judge") as pool,
        ):
            return list(pool.map(lambda user: self._ask(client, system, user, parse), users))

    def _score_uncached(self, samples: list[Sample]) -> list[Verdict]:
        results = self._ask_all(self.rubric, [render_sample(s) for s in samples], parse_verdict)
        return [
            verdict if verdict is not None else Verdict(None, reason, missing=True)
            for verdict, reason in results
        ]

    def _prefer_first_uncached(self, pairs: list[tuple[Sample, Sample]]) -> list[float | None]:
        results = self._ask_all(self.pairwise_rubric, [render_pair(x, y) for x, y in pairs], parse_preference)
        for pref, reason in results:
            if pref is None:
                log.warning("judge %s gave no comparison: %s", self.name, reason)
        return [pref for pref, _ in results]
