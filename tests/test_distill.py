"""The distillation loop on tiny random models: KD learns, resume is exact, the cached teacher
trains without the teacher, data parallelism and accumulation leave the maths unchanged."""

import json
import os
import subprocess
import sys

import pytest

from kdroute.distill.job import DistillJob
from kdroute.distill.train import train
from kdroute.tinymodels import save_tiny_model

TINY = {"n_layer": 1, "n_embd": 32, "n_head": 2}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A toy prompt/response set, a random tiny teacher and a folder for runs."""
    root = tmp_path_factory.mktemp("toy")
    rows = [{"prompt": f"What is {a} + {b}?", "response": str(a + b)}
            for a in range(8) for b in range(8)]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:16]))
    save_tiny_model(root / "teacher", seed=1, **TINY)
    return root


def job(toy, out, **kw) -> DistillJob:
    base = dict(data=toy / "train.jsonl", output_dir=toy / out, teacher=str(toy / "teacher"),
                student_layers=1, student_width=16, student_heads=2, steps=12, batch_size=8,
                lr=1e-2, warmup_steps=2, checkpoint_every=1000, eval_every=1000,
                cache_dir=toy / "cache", max_length=32, kd_temperature=2.0,
                alpha_ce=0.0, alpha_kd=1.0, seed=3)
    return DistillJob(**(base | kw))


def test_kd_loss_falls_and_run_lands_in_ledger_and_card(toy, tmp_store):
    result = train(job(toy, "live", steps=20, validation_data=toy / "val.jsonl", eval_every=10),
                   store=tmp_store, progress=False)
    kd = [h["kd_loss"] for h in result.history]
    assert sum(kd[-4:]) / 4 < 0.7 * sum(kd[:4]) / 4
    card = json.loads((toy / "live" / "kdroute_card.json").read_text())
    assert card["kind"] == "student" and card["teacher"]["fingerprint"]
    assert card["losses"]["kd_loss"] == "forward_kl" and card["training"]["steps"] == 20
    assert card["final_metrics"]["validation_kd_loss"] > 0
    assert tmp_store.run(result.run_id)["status"] == "done"
    metrics = tmp_store.table_frame("training_metrics")
    assert (metrics["split"] == "train").sum() == 20 and (metrics["split"] == "validation").sum() == 2
    assert card["teacher"]["fingerprint"] == bench_fingerprint(toy / "teacher")


def bench_fingerprint(model_dir) -> str:
    """The fingerprint `kdroute bench` records in the ledger for a local model."""
    from kdroute.bench import models
    from kdroute.config import ModelConfig, Settings

    return models.fingerprint(models.from_config("teacher", ModelConfig(model=f"hf:{model_dir}"),
                                                 Settings()))


def test_resume_after_a_stop_equals_an_uninterrupted_run(toy):
    whole = train(job(toy, "whole", steps=8, alpha_ce=0.5, alpha_kd=0.5), progress=False)
    first = train(job(toy, "parts", steps=8, alpha_ce=0.5, alpha_kd=0.5, stop_after=5),
                  progress=False)
    rest = train(job(toy, "parts", steps=8, alpha_ce=0.5, alpha_kd=0.5, resume=True),
                 progress=False)
    assert [h["step"] for h in rest.history] == [6, 7, 8]
    assert [h["loss"] for h in first.history + rest.history] == [h["loss"] for h in whole.history]
    assert [h["lr"] for h in rest.history] == [h["lr"] for h in whole.history[5:]]


def test_gradient_accumulation_equals_one_big_batch(toy):
    big = train(job(toy, "big", steps=4, batch_size=8, grad_accum=1, alpha_ce=0.5, alpha_kd=0.5),
                progress=False)
    acc = train(job(toy, "acc", steps=4, batch_size=2, grad_accum=4, alpha_ce=0.5, alpha_kd=0.5),
                progress=False)
    assert [h["loss"] for h in acc.history] == pytest.approx([h["loss"] for h in big.history],
                                                             rel=1e-5)


def test_cached_teacher_trains_without_loading_the_teacher(toy):
    first = train(job(toy, "cached", teacher_mode="cached", top_k=8), progress=False)
    card = json.loads((toy / "cached" / "kdroute_card.json").read_text())
    cache = card["teacher_cache"]
    assert cache["k"] == 8 and 0 < cache["bytes_per_token"] < 8 * 4 + 64
    shards = sorted((toy / "cache").glob("topk-*/*.safetensors"))
    stamps = [s.stat().st_mtime_ns for s in shards]
    # Same teacher, data, k and temperature: the cache is reused, not rebuilt.
    train(job(toy, "cached2", teacher_mode="cached", top_k=8, steps=2), progress=False)
    assert [s.stat().st_mtime_ns for s in shards] == stamps
    # No teacher at all, only the cache folder: the KD loss still falls.
    alone = train(job(toy, "cache-only", teacher=None, teacher_mode="cached", top_k=8,
                      teacher_cache=shards[0].parent, steps=20), progress=False)
    kd = [h["kd_loss"] for h in alone.history]
    assert kd[0] == pytest.approx(first.history[0]["kd_loss"], rel=1e-5)
    alone_card = json.loads((toy / "cache-only" / "kdroute_card.json").read_text())
    assert alone_card["teacher"]["fingerprint"] == bench_fingerprint(toy / "teacher")
    assert sum(kd[-4:]) < 0.7 * sum(kd[:4])


def test_cached_top_k_over_the_whole_vocab_equals_the_live_teacher(toy):
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(toy / "teacher"))
    live = train(job(toy, "l", steps=3), progress=False)
    cached = train(job(toy, "c", steps=3, teacher_mode="cached", top_k=vocab), progress=False)
    # fp16 storage of the log-probs is the only difference
    assert [h["kd_loss"] for h in cached.history] == pytest.approx(
        [h["kd_loss"] for h in live.history], rel=2e-2)


def test_sequence_level_and_intermediate_losses(toy):
    seq = train(job(toy, "seq", teacher_mode="sequence", alpha_ce=1.0, steps=3), progress=False)
    card = json.loads((toy / "seq" / "kdroute_card.json").read_text())
    generated = [json.loads(line) for line in open(card["sequence_data"])]
    assert len(generated) == 64 and all(r["source"] == "teacher" for r in generated)
    assert "kd_loss" not in seq.history[0]
    layered = train(job(toy, "layers", steps=3, hidden_weight=1.0, attention_weight=1.0,
                        student_width=32, init_from_teacher=True), progress=False)
    assert layered.history[0]["hidden_loss"] > 0 and "attention_loss" in layered.history[0]
    # a student initialised from the teacher's only block starts with zero KD loss
    assert layered.history[0]["kd_loss"] == pytest.approx(0.0, abs=1e-5)


def test_cross_entropy_without_teacher_trains_a_new_model(toy):
    result = train(job(toy, "ce", teacher=None, alpha_ce=1.0, alpha_kd=0.0, steps=15),
                   progress=False)
    ce = [h["ce_loss"] for h in result.history]
    assert "kd_loss" not in result.history[0] and ce[-1] < ce[0]
    assert json.loads((toy / "ce" / "kdroute_card.json").read_text())["kind"] == "cross_entropy"


def test_two_processes_through_accelerate_launch_match_one_process(toy, tmp_path):
    """A 2-process CPU (gloo) DDP run of `kdroute distill` sees the same global batch as a
    1-process run with twice the micro-batch, so its losses match (a lone process would see
    other examples)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KDROUTE_STORE_PATH": str(tmp_path / "l.db")}
    args = ["--teacher", str(toy / "teacher"), "--data", str(toy / "train.jsonl"),
            "--student-layers", "1", "--student-width", "16", "--student-heads", "2",
            "--steps", "3", "--lr", "0.01", "--alpha-ce", "0.5", "--alpha-kd", "0.5",
            "--max-length", "32", "--no-progress"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "-m", "kdroute", "distill", "--batch-size", "4", "-o", str(tmp_path / "ddp"), *args]
    done = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "ddp" / "kdroute_card.json").read_text())["training"]["steps"] == 3
    from kdroute.store import Store

    with Store(tmp_path / "l.db") as store:
        ddp = store.frame("SELECT loss FROM training_metrics ORDER BY step")["loss"].tolist()
    single = train(job(toy, "single", steps=3, lr=0.01, alpha_ce=0.5, alpha_kd=0.5,
                       batch_size=8, seed=0, warmup_steps=100), progress=False)
    assert ddp == pytest.approx([h["loss"] for h in single.history], rel=1e-4)
