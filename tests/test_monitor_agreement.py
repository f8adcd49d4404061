"""Tier 1 (final answers), the tiered scorer's routing of pairs between tiers, threshold
calibration against brute force, and the real MiniLM tier on a few pairs."""

import asyncio
import random

import numpy as np
import pytest

from kdroute.monitor.agreement import (
    AgreementScorer,
    Pair,
    calibrate_threshold,
    parse_judgement,
)
from kdroute.monitor.answers import answers_agree, extract_answer


@pytest.mark.parametrize("text, kind, value", [
    ("She sells 9 eggs at $2 each.\n#### 18", "number", "18"),
    ("#### $1,200.00", "number", "1200"),
    ("The answer is 42.", "number", "42"),
    ("So the final answer is: (C) because the rest fail", "choice", "C"),
    ("Answer: B", "choice", "B"),
    ("\\boxed{3/4}", "number", "0.75"),
    ("25%", "number", "25"),
    ("(d)", "choice", "D"),
    ("Paris.", "text", "paris"),
    ("-54", "number", "-54"),
    # a worked solution: the number after the last "=", else the last fresh number of the last
    # sentence with one
    ("3 + 4 = 7 eggs are used.\nShe sells 16 - 7 = 9 eggs, so she makes 9 * $2 = $18 every day.",
     "number", "18"),
    ("First 20 / 4 = 5.\n\nEach of the 4 kids got 5 books.", "number", "5"),
])
def test_final_answers_are_extracted_and_normalised(text, kind, value):
    answer = extract_answer(text)
    assert answer is not None and (answer.kind, answer.value) == (kind, value)


def test_the_prompt_tells_the_result_from_the_givens_it_restates():
    prompt = "Claire makes a 3 egg omelet every morning. How many dozens of eggs in 4 weeks?"
    text = "That is 84 eggs over the four weeks in all.\n\nClaire will eat 7 dozens of eggs in 4 weeks."
    assert extract_answer(text, prompt).value == "7"
    assert extract_answer(text).value == "4"  # without the prompt: the last number


@pytest.mark.parametrize("text", [
    "", "   ",
    "Katy used 120 * 7 / (7 + 13) = <<120*7/(7+1",  # cut off mid-computation
    "So the total cost is 40 + 2 + 7 =",  # cut off after an operator
    "A long answer that explains a concept in words, with no number or choice in it at all.",
])
def test_no_answer_means_tier_one_abstains(text):
    assert extract_answer(text) is None


def test_numbers_compare_by_value_and_texts_only_decide_when_equal():
    a, b = extract_answer("#### 12.00"), extract_answer("The answer is $12")
    assert answers_agree(a, b) is True
    assert answers_agree(extract_answer("#### 12"), extract_answer("#### 13")) is False
    assert answers_agree(extract_answer("B"), extract_answer("(b)")) is True
    assert answers_agree(extract_answer("B"), extract_answer("C")) is False
    assert answers_agree(extract_answer("Yes."), extract_answer("yes")) is True
    assert answers_agree(extract_answer("Yes."), extract_answer("Yes, it is.")) is None
    assert answers_agree(extract_answer("42"), extract_answer("B")) is None  # kinds differ


def fake_cosines(values):
    it = iter(values)
    return lambda pairs: np.array([next(it) for _ in pairs])


def test_tiers_are_tried_cheapest_first_and_record_their_method():
    pairs = [Pair("q", "#### 5", "The total is 5."),  # decided by the answer tier
             Pair("q", "a long essay about trees and why leaves turn", "some other long essay"
                  " about autumn colours"),  # no answer: the embedding tier
             Pair("q", "another essay without numbers, quite long indeed", "and its twin essay"
                  " without numbers, also long")]
    scorer = AgreementScorer(("answer", "embedding"), 0.8, cosine_fn=fake_cosines([0.9, 0.5]))
    verdicts = scorer.score_offline(pairs)
    assert [(v.method, v.verdict) for v in verdicts] == \
        [("answer", 1), ("embedding", 1), ("embedding", 0)]
    assert verdicts[1].score == pytest.approx(0.9)
    only_answers = AgreementScorer(("answer",)).score_offline(pairs)
    assert [v.verdict for v in only_answers] == [1, None, None]


def test_the_judge_sees_only_pairs_near_the_threshold_and_falls_back_on_failure():
    seen = []

    async def judge(prompt, student, teacher):
        seen.append(student)
        if "broken" in student:
            raise ConnectionError("judge down")
        return (1.0 if "same" in student else None), 0.001

    essays = [Pair("q", f"long essay number {w} without any digits at all", "a reference essay"
                   " that has no digits either") for w in ("same", "far", "broken", "offrubric")]
    scorer = AgreementScorer(("answer", "embedding", "judge"), 0.8, judge_band=0.05, judge=judge,
                             cosine_fn=fake_cosines([0.78, 0.2, 0.82, 0.79]))
    verdicts = asyncio.run(scorer.score(essays))
    assert [v.method for v in verdicts] == ["judge", "embedding", "embedding", "embedding"]
    assert len(seen) == 3 and not any("far" in s for s in seen)  # 0.2 is decided by the cosine
    assert verdicts[0].verdict == 1 and verdicts[0].judge_cost_usd == 0.001
    assert verdicts[2].verdict == 1 and "judge down" in verdicts[2].error  # cosine 0.82 stands
    assert verdicts[3].verdict == 0 and verdicts[3].judge_cost_usd == 0.001  # paid, off-rubric
    assert "not SAME or DIFFERENT" in verdicts[3].error


@pytest.mark.parametrize("reply, score", [("SAME", 1.0), ("different.", 0.0), ("**Same**", 1.0),
                                          ("I think they are the same", None), ("", None)])
def test_judge_replies_are_parsed_strictly(reply, score):
    assert parse_judgement(reply) == score


def brute_force_threshold(scores, truth, min_precision, min_support):
    best = None
    for t in sorted(set(scores)):
        agree = [y for s, y in zip(scores, truth, strict=True) if s >= t]
        if len(agree) >= min_support and sum(agree) / len(agree) >= min_precision:
            best = t if best is None else min(best, t)
    return best


def test_calibrated_threshold_matches_brute_force():
    rng = random.Random(3)
    for _ in range(30):
        n = rng.randint(5, 60)
        scores = [round(rng.random(), 2) for _ in range(n)]  # ties on purpose
        truth = [rng.random() < s for s in scores]
        expected = brute_force_threshold(scores, truth, 0.8, 3)
        got = calibrate_threshold(scores, truth, 0.8, 3)
        if expected is None:
            assert got > max(scores)
        else:
            assert got == pytest.approx(expected)


def test_minilm_tier_tells_paraphrases_from_different_answers():
    scorer = AgreementScorer(("embedding",), 0.7)
    pairs = [Pair("", "The meeting was moved to Thursday afternoon because of the holiday.",
                  "Because of the holiday, the meeting now takes place on Thursday afternoon."),
             Pair("", "The meeting was moved to Thursday afternoon because of the holiday.",
                  "Photosynthesis converts light into chemical energy in plants.")]
    same, different = asyncio.run(scorer.score(pairs))
    assert same.method == different.method == "embedding"
    assert same.score > 0.7 > different.score
    assert (same.verdict, different.verdict) == (1, 0)
