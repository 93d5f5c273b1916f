"""The `openai` judge against a real OpenAI-compatible server on 127.0.0.1, started by each test."""

from __future__ import annotations

import json
import logging
import re
import threading

import pytest
from chat_server import ChatServer, product_of, user_message

from evaluation.config import JudgeConfig
from evaluation.errors import ConfigError
from evaluation.judge import (
    RUBRIC,
    Sample,
    Verdict,
    VerdictError,
    parse_preference,
    parse_verdict,
    summarize,
    win_rate,
)
from evaluation.judge_choice import build_judge
from evaluation.judge_http import OpenAIJudge


def description_of(body: dict) -> str:
    return re.search(r"<description>\n(.*)\n</description>", user_message(body), re.DOTALL).group(1)


def verdict_json(score: float, reason: str = "ok") -> str:
    return json.dumps({"score": score, "reason": reason})


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


def test_well_formed_verdicts_keep_their_order_and_accept_fences(chat_server, tmp_path):
    def answer(body, server):
        score = 1 + len(product_of(body)) % 10  # different per sample, so order mix-ups show
        text = verdict_json(score, f"len {len(product_of(body))}")
        return 200, f"```json\n{text}\n```" if score % 2 else text

    server = chat_server(answer)
    products = ["kettle", "toaster", "pan", "whisk", "stand mixer", "colander", "rolling pin"]
    verdicts = make_judge(server, tmp_path, concurrency=3).score(samples(*products))

    assert [v.score for v in verdicts] == [1 + len(p) % 10 for p in products]
    assert [v.reason for v in verdicts] == [f"len {len(p)}" for p in products]
    assert not any(v.missing for v in verdicts)
    body = server.bodies[0]
    assert body["model"] == "judge-7b" and body["temperature"] == 0
    assert body["messages"][0] == {"role": "system", "content": RUBRIC}
    assert summarize(verdicts) == {"judge_score": sum(v.score for v in verdicts) / 7, "judge_missing": 0}


def test_malformed_verdicts_are_retried_then_missing_with_reason(chat_server, tmp_path):
    answers = {
        "kettle": "I would say it is pretty good.",
        "toaster": verdict_json(42),
        "pan": verdict_json(7),
    }
    server = chat_server(lambda body, _: (200, answers[product_of(body)]))
    kettle, toaster, pan = make_judge(server, tmp_path, retries=2).score(samples("kettle", "toaster", "pan"))

    assert server.per_product == {"kettle": 3, "toaster": 3, "pan": 1}
    assert kettle.missing and kettle.score is None and "unparsable verdict" in kettle.reason
    assert toaster.missing and "outside 1..10" in toaster.reason and "3 attempts" in toaster.reason
    assert pan == Verdict(7.0, "ok")
    assert summarize([kettle, toaster, pan]) == {"judge_score": 7.0, "judge_missing": 2}


def test_a_request_hanging_past_the_timeout_is_retried_then_missing(chat_server, tmp_path):
    def answer(body, server):
        if product_of(body) == "slow cooker":
            server.release.wait(timeout=10)  # hangs until teardown; the judge must not wait for it
        return 200, verdict_json(6)

    server = chat_server(answer)
    slow, fast = make_judge(server, tmp_path, timeout_s=0.2, retries=1).score(samples("slow cooker", "pan"))

    assert slow.missing and "timed out after 0.2 s" in slow.reason
    assert server.per_product["slow cooker"] == 2
    assert fast == Verdict(6.0, "ok")


def test_server_errors_are_retried_and_a_recovery_is_scored(chat_server, tmp_path):
    def answer(body, server):
        product = product_of(body)
        if product == "broken" or (product == "flaky" and server.per_product["flaky"] == 1):
            return 500, "internal error"
        return 200, verdict_json(8)

    server = chat_server(answer)
    broken, flaky = make_judge(server, tmp_path, retries=2).score(samples("broken", "flaky"))

    assert broken.missing and broken.reason.startswith("HTTP 500") and server.per_product["broken"] == 3
    assert flaky == Verdict(8.0, "ok") and server.per_product["flaky"] == 2


def test_concurrency_is_bounded(chat_server, tmp_path):
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

    server = chat_server(answer)
    verdicts = make_judge(server, tmp_path, concurrency=3, retries=0).score(
        samples(*[f"p{i}" for i in range(9)])
    )

    assert [v.score for v in verdicts] == [5.0] * 9
    assert server.max_in_flight == 3


def test_cache_answers_identical_samples_without_a_request(chat_server, tmp_path):
    server = chat_server(
        lambda body, s: (500, "down") if product_of(body) == "down" else (200, verdict_json(4))
    )
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


def test_two_endpoints_serving_one_model_name_do_not_share_verdicts(chat_server, tmp_path):
    # Same model name, same cache dir, different servers: the name alone used to key the cache,
    # so the second server's scores came from the first one's verdicts.
    server_a = chat_server(lambda body, _: (200, verdict_json(3, "server A")))
    server_b = chat_server(lambda body, _: (200, verdict_json(8, "server B")))
    batch = samples("kettle", "pan")

    from_a = make_judge(server_a, tmp_path, base_url=server_a.base_url).score(batch)
    from_b = make_judge(server_b, tmp_path, base_url=server_b.base_url).score(batch)

    assert [(v.score, v.reason) for v in from_a] == [(3.0, "server A")] * 2
    assert [(v.score, v.reason) for v in from_b] == [(8.0, "server B")] * 2
    assert len(server_a.bodies) == 2 and len(server_b.bodies) == 2
    # Each endpoint keeps its own verdicts, however its URL is spelled (trailing slash, host case).
    respelled = server_a.base_url.replace("http://", "HTTP://") + "/"
    again_a = make_judge(server_a, tmp_path, base_url=respelled).score(batch)
    again_b = make_judge(server_b, tmp_path, base_url=server_b.base_url).score(batch)
    assert again_a == from_a and again_b == from_b
    assert len(server_a.bodies) == 2 and len(server_b.bodies) == 2  # both answered from the cache


@pytest.mark.parametrize(
    "url, endpoint",
    [
        ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1"),
        ("HTTPS://Judge.Example.COM:443/V1", "https://judge.example.com/V1"),
        ("http://[::1]:80/v1", "http://[::1]/v1"),
        ("https://judge.example.com:8443/v1", "https://judge.example.com:8443/v1"),
    ],
)
def test_the_cache_knows_an_endpoint_by_one_spelling(url, endpoint):
    judge = OpenAIJudge(url, "judge-7b")
    assert judge.identity["base_url"] == endpoint and judge.url == endpoint + "/chat/completions"


@pytest.mark.parametrize(
    "url",
    [
        "http://user:hunter2@127.0.0.1:8000/v1",
        "https://:hunter2@judge.example.com/v1",
        "ftp://user:hunter2@127.0.0.1/v1",
        "http://127.0.0.1:8000/v1?key=hunter2",
        "http://h/v1#hunter2",
    ],
)
def test_a_base_url_carrying_credentials_is_refused_without_showing_them(url):
    with pytest.raises(ConfigError) as err:
        OpenAIJudge(url, "judge-7b")
    assert err.value.field == "judge.base_url" and "hunter2" not in str(err.value)
    assert "api_key_env" in str(err.value)


def test_pairwise_judges_both_orders_and_cancels_position_bias(chat_server, tmp_path):
    def answer(body, server):
        text = user_message(body)
        a = re.search(r"<description_a>\n(.*)\n</description_a>", text, re.DOTALL).group(1)
        b = re.search(r"<description_b>\n(.*)\n</description_b>", text, re.DOTALL).group(1)
        if product_of(body) == "biased":
            return 200, json.dumps({"winner": "A", "reason": "first is best"})
        winner = "tie" if len(a) == len(b) else ("A" if len(a) > len(b) else "B")
        return 200, f'Verdict: {{"winner": "{winner}", "reason": "longer"}}'

    server = chat_server(answer)
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


def test_api_key_is_sent_but_never_shown(chat_server, tmp_path, monkeypatch, caplog):
    key = "sk-test-7f3a9c1d-SECRET"
    monkeypatch.setenv("QLORA_JUDGE_KEY", key)

    def answer(body, server):
        echo = f"bad credentials {server.auth[-1]}"  # a careless server echoing the header back
        return {"unauthorised": (401, echo), "crashing": (500, echo)}.get(
            product_of(body), (200, verdict_json(9))
        )

    caplog.set_level(logging.DEBUG)
    server = chat_server(answer)
    judge = make_judge(server, tmp_path, api_key_env="QLORA_JUDGE_KEY", retries=1)
    verdicts = judge.score(samples("unauthorised", "crashing", "pan"))

    assert set(server.auth) == {f"Bearer {key}"}
    assert server.per_product["unauthorised"] == 1  # a 401 will not change on retry
    assert [v.missing for v in verdicts] == [True, True, False]
    assert all("Bearer ***" in v.reason for v in verdicts[:2])  # redacted, not dropped
    shown = [repr(judge), str(judge), repr(vars(judge)), *(repr(v) for v in verdicts)]
    shown += [r.getMessage() for r in caplog.records] + [repr(r.args) for r in caplog.records]
    assert caplog.records and not [text for text in shown if key in text]
    assert key not in repr(judge.identity) and key.encode() not in judge.cache.path.read_bytes()
    monkeypatch.delenv("QLORA_JUDGE_KEY")
    with pytest.raises(ConfigError) as err:
        make_judge(server, tmp_path, api_key_env="QLORA_JUDGE_KEY")
    assert err.value.field == "judge.api_key_env" and key not in str(err.value)


def test_config_errors_name_the_field_and_leave_no_cache_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("QLORA_SWEEP_CACHE", str(tmp_path))
    for url in (None, "127.0.0.1:8000/v1", "http://127.0.0.1:port/v1", "http:///v1"):
        with pytest.raises(ConfigError) as err:
            build_judge(JudgeConfig(backend="openai", base_url=url))
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
