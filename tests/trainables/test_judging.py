"""`judge-check` (calibrate_judge) against a real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json

from evaluation.judge import Sample
from evaluation.judge_choice import build_judge
from trainables.config import load_trial_config
from trainables.judging import calibrate_judge, calibration_references, judge_outputs


def test_judge_check_asks_the_judge_afresh_every_time(chat_server, tmp_path):
    # The server behind the same URL and model name changes its mind between two checks: first a
    # judge that ties everything (consistent, never right), then one that always prefers the
    # description shown first (inconsistent). The second check must hear the second judge.
    behaviour = {"score": 5, "winner": "tie"}

    def answer(body, server):
        pairwise = '"winner"' in body["messages"][0]["content"]
        return 200, json.dumps({"winner": behaviour["winner"]} if pairwise else {"score": behaviour["score"]})

    server = chat_server(answer)
    cfg = load_trial_config(
        None,
        [
            "judge.backend=openai",
            "judge.model=judge-7b",
            f"judge.base_url={server.base_url}",
            "judge.retries=0",
            f"judge.cache_dir={tmp_path}",
            "data.eval_rows=8",
            "generation.num_prompts=4",
        ],
    )
    first = calibrate_judge(cfg)
    asked_first = len(server.bodies)
    behaviour.update(score=7, winner="A")
    second = calibrate_judge(cfg)

    assert first["judge_calibration_pairs"] > 0 and first["judge_calibration_missing"] == 0
    assert first["judge_consistency"] == 1.0 and first["judge_accuracy"] == 0.0
    assert second["judge_consistency"] == 0.0 and second["judge_accuracy_pairwise"] == 0.0
    assert asked_first > 0 and len(server.bodies) == 2 * asked_first  # every verdict asked again

    # The check refreshed the cache: a trial's judge now scores a reference with the new answer.
    ref = calibration_references(cfg)[0]
    verdict = build_judge(cfg.judge).score([Sample(ref.product, ref.category, " ".join(ref.output.split()))])
    assert verdict[0].score == 7.0 and len(server.bodies) == 2 * asked_first


def test_a_trials_outputs_are_scored_and_compared_with_the_references(chat_server, tmp_path):
    def answer(body, server):  # prefers the trial's output ("ours ...") in either position
        system, user = body["messages"][0]["content"], body["messages"][1]["content"]
        if '"winner"' in system:
            return 200, json.dumps({"winner": "A" if user.index("ours") < user.index("theirs") else "B"})
        return 200, json.dumps({"score": 6, "reason": "fine"})

    server = chat_server(answer)
    cfg = load_trial_config(
        None,
        [
            "judge.backend=openai",
            f"judge.base_url={server.base_url}",
            "judge.pairwise=reference",
            f"judge.cache_dir={tmp_path}",
        ],
    )
    records = [
        {"product": p, "category": "Kitchen", "output": f"ours {p}", "reference": f"theirs {p}"} for p in "ab"
    ]
    summary = judge_outputs(cfg, records)

    assert summary == {"judge_score": 6.0, "judge_missing": 0, "judge_win_rate_vs_reference": 1.0}
    assert [(r["judge_score"], r["judge_reason"]) for r in records] == [(6.0, "fine")] * 2
    assert len(server.bodies) == 2 + 4  # two scores, two pairs in both orders
