"""The Router the gateway uses: heuristic scorer, cache, conversation flattening, artifacts."""

from __future__ import annotations

import pytest

from kdroute.config import load_config
from kdroute.errors import ConfigError, InputError
from kdroute.route import Router, conversation_text, load_router
from kdroute.route.artifact import Artifact, load_artifact, save_artifact
from kdroute.route.scorers import HeuristicScorer

EASY = "hi, thanks!"
HARD = ("A store sells 12 apples at $3 each and 7 pears at $2.50 each. If John buys 5 apples and "
        "3 pears and pays with a $50 bill, how much change does he get? Explain why.")


def test_default_router_is_heuristic_and_routes_hard_prompts_to_teacher():
    router = load_router(load_config(None, env={}).model_copy(
        update={"router": load_config(None, env={}).router.model_copy(update={"artifact": None})}))
    assert router.scorer_name == "heuristic" and router.threshold == 0.5
    assert router.route([{"role": "user", "content": HARD}])[0] == "teacher"
    role, score = router.route([{"role": "user", "content": EASY}])
    assert role == "student" and 0.0 <= score < 0.5
    assert router.route(EASY, threshold=0.0)[0] == "teacher"  # score >= threshold


def test_score_is_batched_cached_and_bounded():
    calls = []

    class Counting(HeuristicScorer):
        def score_texts(self, texts):
            calls.append(list(texts))
            return super().score_texts(texts)

    router = Router(Counting(), 0.5, "t", cache_size=2)
    first = router.score([EASY, HARD, EASY])
    assert calls == [[EASY, HARD, EASY]] and first[0] == first[2]
    assert router.score_one(HARD) == first[1] and len(calls) == 1  # served from the cache
    router.score(["third prompt"])  # evicts the least recently used (EASY)
    assert router.cache_info() == {"size": 2, "max_size": 2}
    router.score_one(EASY)
    assert calls[-1] == [EASY]


def test_conversation_flattening_puts_last_user_message_first():
    conv = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "second"}]}]
    assert conversation_text(conv) == "second\n\nassistant: ok\n\nuser: first\n\nsystem: be brief"
    assert conversation_text([{"role": "user", "content": "only"}]) == "only"
    with pytest.raises(InputError):
        conversation_text([1, 2])


def test_untrained_learned_scorer_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown scorer"):
        load_router(load_config(None, env={"KDROUTE_ROUTER_SCORER": "nope"}))


def test_heuristic_artifact_round_trips(tmp_path):
    scorer = HeuristicScorer(weights={"digit_frac": 9.0}, bias=-2.0)
    path = save_artifact(Artifact(scorer, 0.37, teacher="T", student="S"), tmp_path / "r.json")
    loaded = load_artifact(path)
    assert loaded.version and loaded.threshold == 0.37 and loaded.teacher == "T"
    assert loaded.scorer.score_texts([HARD]) == pytest.approx(scorer.score_texts([HARD]))
    env = {"KDROUTE_ROUTER_ARTIFACT": str(path)}
    router = load_router(load_config(None, env=env))
    assert router.version == loaded.version and router.threshold == 0.37
    path.with_suffix(".npz").write_bytes(b"tampered")
    with pytest.raises(InputError, match="checksum"):
        load_artifact(path)


def test_bad_router_scorer_fails_at_load_with_the_key_named(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[router]\nscorer = "nope"\n')
    with pytest.raises(ConfigError, match=r"router\.scorer: .*unknown scorer.*heuristic"):
        load_config(cfg, env={})
    with pytest.raises(ConfigError, match="evaluation baseline"):
        load_config(None, env={"KDROUTE_ROUTER_SCORER": "random"})
    assert load_config(None, env={"KDROUTE_ROUTER_SCORER": "length"}).router.scorer == "length"


def test_registry_is_a_dict_of_classes_named_as_they_say():
    from kdroute.route.base import Scorer
    from kdroute.route.registry import SCORER_CLS, scorer_class

    assert all(isinstance(c, type) and issubclass(c, Scorer) and c.name == n
               for n, c in SCORER_CLS.items())
    with pytest.raises(ConfigError, match="unknown scorer"):
        scorer_class("nope")


def test_route_stage_does_not_import_the_cli():
    import subprocess
    import sys

    code = ("import sys, kdroute.route.evaluate, kdroute.route.train, kdroute.route.registry; "
            "print(sorted(m for m in sys.modules if m.startswith('kdroute.cli')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_eval_report_is_a_table_the_caller_prints():
    from rich.table import Table

    from kdroute.route.evaluate import table

    m = {"apgr": 0.6, "apgr_lo": 0.55, "apgr_hi": 0.65, "apgr_10pt": 0.6, "cpt50": 0.3,
         "cpt80": 0.5, "cpt90": 0.7, "cpt95": 0.8, "auc": 0.6}
    report = {"n": 10, "r_teacher": 0.8, "r_student": 0.6, "folds": 5,
              "scorers": {"length": m, "oracle": dict(m, apgr=0.9)}}
    t = table(report)
    assert isinstance(t, Table) and t.row_count == 2
    assert [c.header for c in t.columns][:2] == ["scorer", "APGR"]
