"""The `openai` judge against a real OpenAI-compatible server on 127.0.0.1, started by each test."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from helpers import LoopbackServer, QuietHandler

from evaluation.config import JudgeConfig
from evaluation.errors import ConfigError
from evaluation.judge import (
    RUBRIC,
    Sample,
    Verdict,
    VerdictError,
    build_judge,
    parse_preference,
    parse_verdict,
    summarize,
    win_rate,
)
from evaluation.judge_http import OpenAIJudge

Answer = Callable[[dict, "ChatServer"], tuple[int, str]]


class ChatServer(LoopbackServer):
    """`/v1/chat/completions` answered by `answer(request_json, server) -> (status, content)`.

    Counts requests per product, records the Authorization headers and the most requests ever in
    flight at once. `release` is set at teardown so that handlers told to hang can finish.
    """

    def __init__(self, answer: Answer) -> None:
        self.answer, self.lock, self.release = answer, threading.Condition(), threading.Event()
        self.per_product: Counter[str] = Counter()
        self.auth: list[str | None] = []
        self.bodies: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        owner = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.in_flight += 1
                    owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
                    owner.lock.notify_all()
                    owner.per_product[product_of(body)] += 1
                    owner.auth.append(self.headers.get("Authorization"))
                    owner.bodies.append(body)
                try:
                    if self.path != "/v1/chat/completions":
                        status, text = 404, "no such route"
                    else:
                        status, text = owner.answer(body, owner)
                finally:
                    with owner.lock:
                        owner.in_flight -= 1
                if status == 200:
                    text = json.dumps(
                        {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
                    )
                self.reply(status, text)

        super().__init__(Handler)

    def close(self) -> None:
        self.release.set()
        super().close()


def user_message(body: dict) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def product_of(body: dict) -> str:
    match = re.search(r"^Product: (.*)$", user_message(body), re.MULTILINE)
    return match.group(1) if match else ""


def description_of(body: dict) -> str:
    return re.search(r"<description>\n(.*)\n</description>", user_message(body), re.DOTALL).group(1)


def verdict_json(score: float, reason: str = "ok") -> str:
    return json.dumps({"score": score, "reason": reason})


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], ChatServer]]:
    servers: list[ChatServer] = []

    def start(answer: Answer) -> ChatServer:
        servers.append(ChatServer(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def make_judge(server: ChatServer, tmp_path, **overrides) -> OpenAIJudge:
    settings = dict(
        backend="openai", model="judge-7b", base_url=server.base_url, retries=2, backoff_s=0.01, timeout_s=5.0
    )
    settings.update(overrides)
    settings.setdefault("cache_dir", str(tmp_path / "cache"))
    judge = build_judge(JudgeConfig(**settings))
    assert isinstance(judge, OpenAIJudge)
    return judge


def samples(*products: str) -> list[Sample]:
    return [Sample(p, "Kitchen", f"The {p} is a sturdy, useful thing for any kitchen.") for p in products]


def test_well_formed_verdicts_keep_their_order_and_accept_fences(serve, tmp_path):
    def answer(body, server):
        score = 1 + len(product_of(body)) % 10  # different per sample, so order mix-ups show
        text = verdict_json(score, f"len {len(product_of(body))}")
        return 200, f"```json\n{text}\n```" if score % 2 else text

    server = serve(answer)
    products = ["kettle", "toaster", "pan", "whisk", "stand mixer", "colander", "rolling pin"]
    verdicts = make_judge(server, tmp_path, concurrency=3).score(samples(*products))

    assert [v.score for v in verdicts] == [1 + len(p) % 10 for p in products]
    assert [v.reason for v in verdicts] == [f"len {len(p)}" for p in products]
    assert not any(v.missing for v in verdicts)
    body = server.bodies[0]
    assert body["model"] == "judge-7b" and body["temperature"] == 0
    assert body["messages"][0] == {"role": "system", "content": RUBRIC}
    assert summarize(verdicts) == {"judge_score": sum(v.score for v in verdicts) / 7, "judge_missing": 0}


def test_malformed_verdicts_are_retried_then_missing_with_reason(serve, tmp_path):
    answers = {
        "kettle": "I would say it is pretty good.",
        "toaster": verdict_json(42),
        "pan": verdict_json(7),
    }
    server = serve(lambda body, _: (200, answers[product_of(body)]))
    kettle, toaster, pan = make_judge(server, tmp_path, retries=2).score(samples("kettle", "toaster", "pan"))

    assert server.per_product == {"kettle": 3, "toaster": 3, "pan": 1}
    assert kettle.missing and kettle.score is None and "unparsable verdict" in kettle.reason
    assert toaster.missing and "outside 1..10" in toaster.reason and "3 attempts" in toaster.reason
    assert pan == Verdict(7.0, "ok")
    assert summarize([kettle, toaster, pan]) == {"judge_score": 7.0, "judge_missing": 2}


def test_a_request_hanging_past_the_timeout_is_retried_then_missing(serve, tmp_path):
    def answer(body, server):
        if product_of(body) == "slow cooker":
            server.release.wait(timeout=10)  # hangs until teardown; the judge must not wait for it
        return 200, verdict_json(6)

    server = serve(answer)
    slow, fast = make_judge(server, tmp_path, timeout_s=0.2, retries=1).score(samples("slow cooker", "pan"))

    assert slow.missing and "timed out after 0.2 s" in slow.reason
    assert server.per_product["slow cooker"] == 2
    assert fast == Verdict(6.0, "ok")


def test_server_errors_are_retried_and_a_recovery_is_scored(serve, tmp_path):
    def answer(body, server):
        product = product_of(body)
        if product == "broken" or (product == "flaky" and server.per_product["flaky"] == 1):
            return 500, "internal error"
        return 200, verdict_json(8)

    server = serve(answer)
    broken, flaky = make_judge(server, tmp_path, retries=2).score(samples("broken", "flaky"))

    assert broken.missing and broken.reason.startswith("HTTP 500") and server.per_product["broken"] == 3
    assert flaky == Verdict(8.0, "ok") and server.per_product["flaky"] == 2


def test_concurrency_is_bounded(serve, tmp_path):
    # Each request waits until `concurrency` are in flight together (so the server sees at least
    # that many), then gives one more request a short window to show up (it must not).
    barrier = threading.Barrier(3)

    def answer(body, server):
        try:
            barrier.wait(timeout=10)
        except threading.BrokenBarrierError:
            return 500, "fewer requests in flight than the concurrency"
        with server.lock:
            server.lock.wait_for(lambda: server.in_flight > 3, timeout=0.1)
        return 200, verdict_json(5)

    server = serve(answer)
    verdicts = make_judge(server, tmp_path, concurrency=3, retries=0).score(
        samples(*[f"p{i}" for i in range(9)])
    )

    assert [v.score for v in verdicts] == [5.0] * 9
    assert server.max_in_flight == 3


def test_cache_answers_identical_samples_without_a_request(serve, tmp_path):
    server = serve(lambda body, s: (500, "down") if product_of(body) == "down" else (200, verdict_json(4)))
    batch = samples("kettle", "pan", "down")
    first = make_judge(server, tmp_path, retries=0).score(batch)
    # A new judge (as in the next trial) on the same cache dir: only the failed sample is asked again.
    second = make_judge(server, tmp_path, retries=0).score(batch)

    assert server.per_product == {"kettle": 1, "pan": 1, "down": 2}
    assert first == second and [v.score for v in second] == [4.0, 4.0, None]
    changed = [Sample("kettle", "Kitchen", "A different text.")]
    make_judge(server, tmp_path, retries=0).score(changed)
    assert server.per_product["kettle"] == 2  # the output is part of the key
    make_judge(server, tmp_path, retries=0, model="other-judge").score(batch[:1])
    assert server.per_product["kettle"] == 3  # so is the judge model


def test_pairwise_judges_both_orders_and_cancels_position_bias(serve, tmp_path):
    def answer(body, server):
        text = user_message(body)
        a = re.search(r"<description_a>\n(.*)\n</description_a>", text, re.DOTALL).group(1)
        b = re.search(r"<description_b>\n(.*)\n</description_b>", text, re.DOTALL).group(1)
        if product_of(body) == "biased":
            return 200, json.dumps({"winner": "A", "reason": "first is best"})
        winner = "tie" if len(a) == len(b) else ("A" if len(a) > len(b) else "B")
        return 200, f'Verdict: {{"winner": "{winner}", "reason": "longer"}}'

    server = serve(answer)
    judge = make_judge(server, tmp_path)
    a = [Sample("kettle", "Kitchen", "A long and detailed text."), Sample("pan", "Kitchen", "Short.")]
    a += [Sample("biased", "Kitchen", "One."), Sample("cup", "Kitchen", "Same.")]
    b = [
        Sample(s.product, s.category, t)
        for s, t in zip(a, ["Short.", "A long and detailed text.", "Two.", "Also."], strict=True)
    ]

    assert judge.compare(a, b) == [1.0, 0.0, 0.5, 0.5]
    # Both 0.5, for different reasons: the biased judge flips with the order, the tie does not.
    assert judge.compare_orders(a, b)[2:] == [(1.0, 0.0), (0.5, 0.5)]
    assert server.per_product == {"kettle": 2, "pan": 2, "biased": 2, "cup": 2}  # the repeat hit the cache
    assert win_rate([1.0, 0.0, 0.5, None]) == 0.5 and win_rate([None]) is None


def test_api_key_is_sent_but_never_shown(serve, tmp_path, monkeypatch, caplog):
    key = "sk-test-7f3a9c1d-SECRET"
    monkeypatch.setenv("QLORA_JUDGE_KEY", key)

    def answer(body, server):
        echo = f"bad credentials {server.auth[-1]}"  # a careless server echoing the header back
        return {"unauthorised": (401, echo), "crashing": (500, echo)}.get(
            product_of(body), (200, verdict_json(9))
        )

    caplog.set_level(logging.DEBUG)
    server = serve(answer)
    judge = make_judge(server, tmp_path, api_key_env="QLORA_JUDGE_KEY", retries=1)
    verdicts = judge.score(samples("unauthorised", "crashing", "pan"))

    assert set(server.auth) == {f"Bearer {key}"}
    assert server.per_product["unauthorised"] == 1  # a 401 will not change on retry
    assert [v.missing for v in verdicts] == [True, True, False]
    assert all("Bearer ***" in v.reason for v in verdicts[:2])  # redacted, not dropped
    shown = [repr(judge), str(judge), repr(vars(judge)), *(repr(v) for v in verdicts)]
    shown += [r.getMessage() for r in caplog.records] + [repr(r.args) for r in caplog.records]
    assert caplog.records and not [text for text in shown if key in text]
    monkeypatch.delenv("QLORA_JUDGE_KEY")
    with pytest.raises(ConfigError) as err:
        make_judge(server, tmp_path, api_key_env="QLORA_JUDGE_KEY")
    assert err.value.field == "judge.api_key_env" and key not in str(err.value)


def test_config_errors_name_the_field_and_leave_no_cache_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("QLORA_SWEEP_CACHE", str(tmp_path))
    with pytest.raises(ConfigError) as err:
        build_judge(JudgeConfig(backend="openai", base_url=None))
    assert err.value.field == "judge.base_url" and not (tmp_path / "judge").exists()
    assert build_judge(JudgeConfig(backend="none")) is None
    with pytest.raises(ValueError, match="load_local"):
        build_judge(JudgeConfig(backend="local"))
    judge = build_judge(JudgeConfig(backend="openai", base_url="http://127.0.0.1:9/v1"))
    assert judge.cache.path == tmp_path / "judge" / "verdicts.sqlite"  # the sweep's cache root by default


@pytest.mark.parametrize(
    "text, score",
    [
        ('{"score": 7, "reason": "fine"}', 7.0),
        ('```json\n{"score": 3.5, "reason": "meh"}\n```', 3.5),
        ('Here is my verdict: {"score": 10, "reason": "great"} Thanks.', 10.0),
        ('{"score": 1}', 1.0),
    ],
)
def test_parse_verdict_accepts_json_in_fences_or_prose(text, score):
    assert parse_verdict(text).score == score


@pytest.mark.parametrize(
    "text",
    ['{"score": 0}', '{"score": 10.5}', '{"score": "7"}', '{"score": true}', '{"score": NaN}', "7", "{}"],
)
def test_parse_verdict_rejects_anything_else(text):
    with pytest.raises(VerdictError):
        parse_verdict(text)


def test_parse_preference():
    assert [parse_preference(json.dumps({"winner": w})) for w in ("A", "b", "tie")] == [1.0, 0.0, 0.5]
    with pytest.raises(VerdictError):
        parse_preference('{"winner": "both"}')
