"""`kdroute distill` refuses bad input in one line (exit 2) before any training starts."""

import json
import subprocess
import sys

import pytest

from kdroute.tinymodels import save_tiny_model


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    (root / "d.jsonl").write_text(json.dumps({"prompt": "What is 1 + 1?", "response": "2"}) + "\n")
    save_tiny_model(root / "teacher", n_layer=1, n_embd=32, n_head=2)
    other = save_tiny_model(root / "other-tok", n_layer=1, n_embd=32, n_head=2)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(other)
    tok.add_tokens(["<extra>"])
    tok.save_pretrained(other)
    return root


def distill(root, *args):
    code = ("import sys, json\nfrom kdroute.cli import main\nsys.argv = ['kdroute', 'distill', "
            "*json.loads(sys.argv.pop(1))]\ntry:\n    main()\nfinally:\n"
            "    print('TORCH' if 'torch' in sys.modules else 'LIGHT', file=sys.stderr)")
    base = ["--data", str(root / "d.jsonl"), "--teacher", str(root / "teacher"),
            "-o", str(root / "out"), "--steps", "1", "--no-progress"]
    return subprocess.run([sys.executable, "-c", code, json.dumps([*base, *args])],
                          capture_output=True, text=True, cwd=root)


@pytest.mark.parametrize(("args", "message"), [
    (["--loss", "kl_div"], "unknown loss 'kl_div'"),
    (["--jsd-beta", "1.5"], "jsd_beta must be in [0, 1]"),
    (["--skew-alpha", "-0.1"], "skew_alpha must be in [0, 1]"),
    (["--data", "missing.jsonl"], "missing.jsonl: training data not found"),
    (["--teacher", "no-such-dir"], "is not a local model directory"),
    (["--teacher-mode", "cached", "--hidden-weight", "1"], "need a live local teacher"),
    (["--train-examples", "-5"], "train_examples must be >= 0"),  # 0 = all rows, as in config
    (["--teacher-mode", "nope"], "unknown teacher_mode 'nope'; choose one of live, cached"),
    (["--kd-temperature", "0"], "--kd-temperature: kd_temperature must be > 0 (got 0.0)"),
])
def test_bad_input_is_one_line_before_torch_is_imported(pair, args, message):
    proc = distill(pair, *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and lines[-1] == "LIGHT", proc.stderr
    assert lines[0].startswith("error: ") and message in lines[0] and len(lines) == 2


def test_incompatible_tokenizers_are_refused_with_the_way_out(pair):
    proc = distill(pair, "--student", str(pair / "other-tok"))
    assert proc.returncode == 2, proc.stderr
    assert "tokenizers differ" in proc.stderr and "teacher_mode = sequence" in proc.stderr
    assert not (pair / "out").exists()


def test_options_override_config_keys_and_both_reach_the_job(pair):
    (pair / "k.toml").write_text('[store]\npath = "k.db"\n'
                                 '[distill]\nwarmup_steps = 7\nalpha_ce = 0.25\nsteps = 50\n')
    proc = subprocess.run([sys.executable, "-m", "kdroute", "--config", str(pair / "k.toml"),
                           "distill", "--data", str(pair / "d.jsonl"), "--teacher",
                           str(pair / "teacher"), "-o", str(pair / "k-out"), "--steps", "1",
                           "--alpha-kd", "0.75", "--no-progress"],
                          capture_output=True, text=True, cwd=pair)
    assert proc.returncode == 0, proc.stderr
    from kdroute.store import Store

    with Store(pair / "k.db") as store:
        job = json.loads(store.frame("SELECT config_json FROM runs WHERE kind = 'distill'")
                         .config_json[0])
    assert (job["warmup_steps"], job["alpha_ce"]) == (7, 0.25)  # from the config file
    assert (job["steps"], job["alpha_kd"]) == (1, 0.75)  # from the options


def test_the_readme_modes_resume_and_no_teacher_through_the_cli(pair):
    """README's `kdroute distill --teacher-mode cached --top-k`, `--teacher-mode sequence`,
    `--no-teacher` and `--resume` lines reach the job they name."""
    from typer.testing import CliRunner

    from kdroute.cli import app
    from kdroute.store import Store

    (pair / "r.toml").write_text('[store]\npath = "r.db"\n[distill]\ncheckpoint_every = 1\n')

    def distill(out, *args):
        res = CliRunner().invoke(app, ["--config", str(pair / "r.toml"), "distill", "--data",
                                       str(pair / "d.jsonl"), "--teacher", str(pair / "teacher"),
                                       "-o", str(pair / out), "--steps", "3", "--no-progress",
                                       *args])
        assert res.exit_code == 0, res.output
        return json.loads((pair / out / "kdroute_card.json").read_text())

    cached = distill("cached", "--teacher-mode", "cached", "--top-k", "8")
    assert cached["teacher_mode"] == "cached" and cached["losses"]["top_k"] == 8
    assert list((pair / "runs" / "teacher-cache").glob("topk-*/*.safetensors"))  # beside the config
    sequence = distill("sequence", "--teacher-mode", "sequence")
    answers = [json.loads(line) for line in open(sequence["sequence_data"])]
    assert sequence["teacher_mode"] == "sequence" and [a["source"] for a in answers] == ["teacher"]
    plain = distill("plain", "--no-teacher")
    assert plain["kind"] == "cross_entropy" and plain["teacher"] is None
    distill("plain", "--no-teacher", "--resume")  # from the newest checkpoint, step 2 of 3
    with Store(pair / "r.db") as store:
        runs = store.frame("SELECT id, config_json FROM runs WHERE kind = 'distill' "
                           "ORDER BY rowid").tail(2)
        steps = {run: store.frame("SELECT step, loss FROM training_metrics WHERE run_id = ? AND "
                                  "split = 'train' ORDER BY step", [run]) for run in runs.id}
    first, resumed = runs.id
    assert json.loads(runs.config_json.iloc[-1])["resumed_from_step"] == 2
    assert steps[first].step.tolist() == [1, 2, 3] and steps[resumed].step.tolist() == [3]
    # the same batch, model and optimizer state as the uninterrupted run's step 3
    assert steps[resumed].loss.iloc[0] == steps[first].loss.iloc[-1]
