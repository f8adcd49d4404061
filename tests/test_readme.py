"""README.md's commands: each one runs in a test (COVERED names it) or is marked external, and
every subcommand, flag, make target, script and module the README names exists.

A command is a code span or a ```bash line starting with kdroute, make, python or accelerate.
It is external when `external: why` comes right before it: an HTML comment before an inline span
or before a whole fenced block, or a `# external: why` line in a bash block (for the next line).
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from kdroute.cli import app
from tests.conftest import REPO, SHARED_DATA

README = REPO / "README.md"
MARK = r"<!--\s*external:\s*(?P<why>[^>]*?)\s*-->"
PROGRAMS = ("kdroute", "make", "python", "accelerate")
FENCE = "\x00"  # stands for a fenced block in the prose: a marker before it is not a span's

T_CLI, T_ROUTE, T_LOOP = "tests/test_cli.py", "tests/test_route_train.py", "tests/test_route_loop.py"
T_GEN, T_MON, T_DIS = ("tests/test_route_generalise.py", "tests/test_monitor_cli.py",
                       "tests/test_distill_cli.py")
DEMO = ("tests/test_demo.py::test_the_printed_figures_are_the_ledgers",
        "tests/test_demo.py::test_a_rerun_reuses_the_bench_run_the_router_and_the_baselines")
IMPORT_TRAIN = f"{T_ROUTE}::test_import_then_train_then_score_through_the_cli"
DISTILL_MODES = f"{T_DIS}::test_the_readme_modes_resume_and_no_teacher_through_the_cli"
DASHBOARD = ("tests/test_dashboard_cli.py::test_missing_or_foreign_ledger_stops_with_one_line",
             "tests/test_dashboard_browser.py::test_dashboard_in_chromium")

# README command (whitespace collapsed) -> the tests that run it, on tiny inputs
COVERED: dict[str, tuple[str, ...]] = {
    "kdroute demo": DEMO,
    "kdroute demo --drift": DEMO,
    "kdroute route train": (IMPORT_TRAIN,),
    "kdroute dashboard --db runs/demo/kdroute.db": DASHBOARD,
    "kdroute dashboard": DASHBOARD,
    "kdroute --config FILE": (f"{T_CLI}::test_db_commands",),
    "kdroute db path": (f"{T_CLI}::test_db_commands",),
    "kdroute db stats": (f"{T_CLI}::test_db_commands",),
    "kdroute db migrate": (f"{T_CLI}::test_db_commands",),
    "kdroute distill": (f"{T_DIS}::test_options_override_config_keys_and_both_reach_the_job",),
    "kdroute distill --student-layers 2 --student-width 48 --steps 600 -o models/my-student": (
        "tests/test_distill.py::test_two_processes_through_accelerate_launch_match_one_process",),
    "kdroute distill --teacher-mode cached --top-k 32 ...": (DISTILL_MODES,),
    "kdroute distill --teacher-mode sequence ...": (DISTILL_MODES,),
    "kdroute distill --no-teacher ...": (DISTILL_MODES,),
    "kdroute distill --resume ...": (DISTILL_MODES,),
    "accelerate launch --multi_gpu --num_processes 2 -m kdroute distill ...": (
        "tests/test_distill.py::test_two_processes_through_accelerate_launch_match_one_process",),
    "kdroute distill --data FILE": (
        f"{T_DIS}::test_options_override_config_keys_and_both_reach_the_job",),
    "kdroute bench": ("tests/test_bench.py::test_bench_writes_results_samples_table_and_report",),
    "kdroute bench --limit 50 --gate": ("tests/test_bench.py::test_limit_sets_items_per_task",
                                        "tests/test_bench.py::test_second_run_reuses_the_cached_"
                                        "teacher_and_gates"),
    "kdroute bench --tasks kdroute_arith,kdroute_mc --student hf:runs/distill/final": (
        "tests/test_bench.py::test_second_run_reuses_the_cached_teacher_and_gates",),
    "kdroute bench --student-endpoint http://127.0.0.1:9001/v1 --student-model my-student": (
        "tests/test_bench_endpoint.py::test_endpoint_student_and_routed_system_against_a_cached_"
        "teacher",),
    "kdroute bench --system-endpoint http://127.0.0.1:8000/v1 --system-model kdroute/auto": (
        "tests/test_gateway_bench.py::test_kdroute_bench_evaluates_the_gateway",),
    "kdroute route": (IMPORT_TRAIN,),
    "kdroute route import ../shared/data/routellm/gsm8k_responses.csv --exclude "
    "../shared/data/routellm/gsm8k_contaminated_prompts.jsonl": (
        "tests/test_readme.py::test_the_readme_route_import_leaves_the_excluded_prompts_out",),
    "kdroute route train --scorer ensemble -o routers/gsm8k.json": (
        IMPORT_TRAIN, "tests/test_route_scorers.py::test_learned_scorer_fits_and_round_trips"),
    "kdroute route train --scorer tfidf --data recorded.csv --target quality_floor --value 0.95": (
        IMPORT_TRAIN, f"{T_ROUTE}::test_label_rule_option_overrides_config_and_is_recorded"),
    "kdroute route train --scorer tfidf --data recorded.csv --label-rule "
    "teacher_right_student_wrong": (
        f"{T_ROUTE}::test_label_rule_option_overrides_config_and_is_recorded",),
    "kdroute route train --scorer tfidf --data recorded.csv -p c=0.1 -p ngram_max=4": (
        f"{T_ROUTE}::test_param_sets_a_scorer_hyperparameter_and_the_artifact_keeps_it",),
    "kdroute route calibrate --router routers/gsm8k.json --data heldout.csv --target "
    "teacher_share --value 0.3": (f"{T_ROUTE}::test_calibrate_to_a_cost_budget_through_the_cli",),
    "kdroute route eval --data ../shared/data/routellm/mmlu --scorers "
    "heuristic,tfidf,embedding,ensemble --plot curves.png --json eval.json": (
        "tests/test_route_scorers.py::test_eval_compares_scorers_with_random_and_oracle",),
    "kdroute route score --router routers/gsm8k.json --input traffic.jsonl --output "
    "scored.jsonl": (IMPORT_TRAIN,),
    "kdroute route eval --data ../shared/data/routellm/mmlu --group-by file --scorers "
    "difficulty,tfidf": (f"{T_GEN}::test_grouped_eval_holds_whole_files_out",),
    "kdroute route eval --group-by COL": (f"{T_GEN}::test_grouped_eval_holds_whole_files_out",
                                          f"{T_GEN}::test_group_by_a_column_of_the_files"),
    "kdroute route eval --train-data ../shared/data/routellm/gsm8k_responses.csv --test-data "
    "../shared/data/routellm/mmlu --scorers difficulty,tfidf": (
        f"{T_GEN}::test_cross_dataset_eval_trains_on_no_test_row",),
    "kdroute route eval --train-data A --test-data B": (
        f"{T_GEN}::test_cross_dataset_eval_trains_on_no_test_row",),
    "kdroute route train --from-ledger -o routers/v2.json": (
        f"{T_LOOP}::test_route_train_from_ledger_records_what_it_used",),
    "kdroute route train --from-ledger": (
        f"{T_LOOP}::test_route_train_from_ledger_records_what_it_used",),
    "kdroute distill data --from-ledger -o next_round.jsonl": (
        f"{T_LOOP}::test_distill_data_round_trips_through_the_distill_loader",),
    "kdroute distill data --from-ledger": (
        f"{T_LOOP}::test_distill_data_round_trips_through_the_distill_loader",),
    "kdroute distill data --from-ledger -o FILE [--all]": (
        f"{T_LOOP}::test_distill_data_round_trips_through_the_distill_loader",),
    "kdroute serve": ("tests/test_gateway_edge.py::test_kdroute_serve_runs_the_gateway",),
    "kdroute monitor": (f"{T_MON}::test_status_shows_agreement_alerts_breaker_and_net_savings",),
    "kdroute monitor status": (
        f"{T_MON}::test_status_shows_agreement_alerts_breaker_and_net_savings",),
    "kdroute monitor agree pairs.csv -o scored.csv --student-column s --teacher-column t "
    "--student-correct s_ok --teacher-correct t_ok [--calibrate]": (
        f"{T_MON}::test_agree_scores_recorded_pairs_and_measures_them",
        f"{T_MON}::test_agree_reads_named_columns_and_calibrates_the_embedding_threshold"),
    "kdroute monitor replay shadow_export.csv --floor 0.85": (
        f"{T_MON}::test_replay_a_ledger_export_with_weights_and_slices",
        f"{T_MON}::test_replay_routellm_file_shows_where_the_alert_opens"),
    "kdroute monitor replay recorded.csv --student weak --teacher strong": (
        f"{T_MON}::test_replay_routellm_file_shows_where_the_alert_opens",),
    "python -m kdroute.evalsets": (
        "tests/test_evalsets.py::test_generator_is_deterministic_and_matches_committed_files",),
    "python -c \"from kdroute.store.synthetic import write_synthetic, Synthetic; "
    "write_synthetic('demo.db', Synthetic(requests=20_000))\"": (
        "tests/test_readme.py::test_the_readme_synthetic_ledger_line_writes_that_ledger",),
}


@dataclass(frozen=True)
class Shown:
    command: str  # as the README shows it, whitespace collapsed
    line: int
    external: str | None  # the reason, when marked external


def _prose(text: str) -> str:
    """`text` with every line of a fenced block replaced by FENCE (line numbers kept)."""
    out, inside = [], False
    for line in text.splitlines():
        fence = line.startswith("```")
        out.append(FENCE if inside or fence else line)
        inside ^= fence
    return "\n".join(out)


def shown_commands(text: str) -> list[Shown]:
    """Every command README `text` shows, in order, with its external marker if any."""
    found: list[Shown] = []
    lines = text.splitlines()
    fence, block_why, line_why, held, start = None, None, None, "", 0
    for n, line in enumerate(lines, 1):
        if line.startswith("```"):
            if fence is None:
                before = re.fullmatch(MARK, lines[n - 2].strip()) if n > 1 else None
                fence, block_why = line[3:].strip(), before and before["why"]
            else:
                fence = None
            continue
        if fence != "bash":
            continue
        if not held:
            start = n
        if line.rstrip().endswith("\\"):
            held += line.rstrip()[:-1] + " "
            continue
        whole, held = held + line, ""
        note = re.fullmatch(r"\s*#\s*external:\s*(.+?)\s*", whole)
        if note:
            line_why = note[1]
            continue
        command = " ".join(re.sub(r"(^|\s)#.*$", "", whole).split())
        if command:
            found.append(Shown(command, start, block_why or line_why))
            line_why = None
    prose = _prose(text)
    for m in re.finditer(rf"(?:{MARK}\s*)?`([^`]+)`", prose):
        words = m[2].split()
        if words and words[0] in PROGRAMS:
            found.append(Shown(" ".join(words), prose.count("\n", 0, m.start(2)) + 1, m["why"]))
    return [alt for s in found for alt in _alternatives(s)]


def _alternatives(shown: Shown) -> list[Shown]:
    """`kdroute db path | stats | migrate` -> the three commands it stands for."""
    parts = shown.command.split(" | ")
    if len(parts) == 1 or not shown.command.startswith("kdroute "):
        return [shown]
    stem = parts[0].rsplit(" ", 1)[0]
    return [Shown(parts[0], shown.line, shown.external)] + [
        Shown(f"{stem} {p}", shown.line, shown.external) for p in parts[1:]]


def _options(command) -> dict:
    """A command's options by each of their names (typer vendors click: duck-typed)."""
    return {opt: p for p in command.params for opt in (*p.opts, *p.secondary_opts)
            if p.param_type_name == "option"} | {"--help": None, "-h": None}


def _kdroute_problems(where: str, tokens: list[str]) -> list[str]:
    """Walk the click tree along `tokens` (after `kdroute`): unknown subcommands and options."""
    command, path, problems, skip = typer.main.get_command(app), ["kdroute"], [], False
    for token in (t.strip("[]") for t in tokens):
        if skip or token in ("", "...") or "<" in token:
            skip = False
            continue
        if token.startswith("-"):
            options = _options(command)
            flag = token.split("=", 1)[0]
            if flag not in options:
                problems.append(f"{where}: `{' '.join(path)}` has no option {flag}")
            param = options.get(flag)
            skip = "=" not in token and param is not None and not (param.is_flag or param.count)
        elif hasattr(command, "commands"):  # a group
            if token not in command.commands:
                problems.append(f"{where}: `{' '.join(path)}` has no subcommand {token!r}")
                return problems
            command = command.commands[token]
            path.append(token)
    return problems


def _all_cli_options() -> set[str]:
    def walk(command):
        yield from _options(command)
        for sub in getattr(command, "commands", {}).values():
            yield from walk(sub)
    return set(walk(typer.main.get_command(app)))


def _script_text() -> str:
    return "".join(p.read_text() for d in ("benchmarks", "scripts") for p in (REPO / d).glob("*.py"))


def problems(text: str) -> list[str]:
    """What in README `text` names something that does not exist, or breaks the conventions."""
    out: list[str] = []
    targets = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
    scripts = _script_text()
    for shown in shown_commands(text):
        where, tokens = f"README line {shown.line}", shlex.split(shown.command)
        if tokens[0] == "kdroute":
            out += _kdroute_problems(where, tokens[1:])
        elif tokens[0] == "accelerate":
            at = tokens.index("kdroute") if "kdroute" in tokens else None
            out += [] if at else [f"{where}: no `-m kdroute` in {shown.command!r}"]
            out += _kdroute_problems(where, tokens[at + 1:]) if at else []
        elif tokens[0] == "make":
            out += [f"{where}: no make target {t!r}" for t in tokens[1:] if t not in targets]
        elif tokens[1] == "-m":
            out += [] if importlib.util.find_spec(tokens[2]) else [f"{where}: no module {tokens[2]}"]
        elif tokens[1] == "-c":
            compile(tokens[2], where, "exec")
        elif not (REPO / tokens[1]).is_file():
            out.append(f"{where}: no file {tokens[1]}")
        else:
            body = (REPO / tokens[1]).read_text()
            out += [f"{where}: {tokens[1]} has no option {f}"
                    for f in re.findall(r"(?<!\S)\[?(--[\w-]+)", shown.command) if f not in body]
    known = _all_cli_options()
    groups = typer.main.get_command(app).commands
    prose = _prose(text)
    for m in re.finditer(r"`([^`]+)`", prose):
        words, line = m[1].split(), prose.count("\n", 0, m.start()) + 1
        # `route train` names a command; `route train --from-ledger` shows one to run
        if words and words[0] in groups and any(w.startswith("-") for w in words):
            out.append(f"README line {line}: write `kdroute {m[1]}` (a command names its program)")
        if words and words[0].startswith("--"):
            out += [f"README line {line}: no command has the option {f}"
                    for f in re.findall(r"--[\w-]+", m[1].replace("/", " "))
                    if f not in known and f not in scripts]
    return out


def uncovered(text: str) -> list[str]:
    """The commands of README `text` that no test in COVERED runs and no marker calls external,
    and those marked external in one place but not in another (or also listed in COVERED)."""
    shown = shown_commands(text)
    external = {s.command for s in shown if s.external}
    return [f"README line {s.line}: {s.command}" for s in shown
            if (s.external is None and s.command not in COVERED)
            or (s.command in external and (s.external is None or s.command in COVERED))]


def test_every_readme_command_runs_in_a_test_or_is_marked_external():
    assert len(shown_commands(README.read_text())) > 40  # the parser finds the README's commands
    assert uncovered(README.read_text()) == [], \
        "add each to COVERED with the tests that run it, or mark it external everywhere it is shown"


def test_covered_names_readme_commands_and_tests_that_exist():
    shown = {s.command for s in shown_commands(README.read_text())}
    assert sorted(set(COVERED) - shown) == [], "no longer in the README: drop from COVERED"
    missing = []
    for ref in {r for refs in COVERED.values() for r in refs}:
        path, name = ref.split("::")
        source = (REPO / path).read_text() if (REPO / path).is_file() else ""
        if f"def {name}(" not in source:
            missing.append(ref)
    assert sorted(missing) == []


def test_every_subcommand_flag_target_script_and_module_the_readme_names_exists():
    assert problems(README.read_text()) == []


def test_the_checks_catch_drift():
    text = README.read_text()
    drifted = (text.replace("--scorers heuristic", "--scorer-list heuristic")
               .replace("`--bench-limit`", "`--bench-limt`")
               + "\nRun `route eval --data x` or `kdroute route evaluate`, `make deploy`.\n")
    found = "\n".join(problems(drifted))
    assert "`kdroute route eval` has no option --scorer-list" in found
    assert "no command has the option --bench-limt" in found
    assert "write `kdroute route eval --data x`" in found
    assert "`kdroute route` has no subcommand 'evaluate'" in found
    assert "no make target 'deploy'" in found
    unmarked = text.replace("# external: minutes of training", "# minutes of training")
    assert [c.split(": ", 1)[1] for c in uncovered(unmarked)] == ["kdroute distill --preset demo"]
    assert uncovered(text + "\nAlso `kdroute route eval --folds 3`.\n") == \
        [f"README line {text.count(chr(10)) + 2}: kdroute route eval --folds 3"]


def _readme_command(prefix: str) -> str:
    return next(s.command for s in shown_commands(README.read_text()) if s.command.startswith(prefix))


@pytest.mark.skipif(not (SHARED_DATA / "routellm").is_dir(), reason="no ../shared/data/routellm")
def test_the_readme_route_import_leaves_the_excluded_prompts_out(tmp_path, monkeypatch):
    import json

    from kdroute.store import Store

    command = shlex.split(_readme_command("kdroute route import"))[1:]
    monkeypatch.chdir(REPO)  # the README's paths are relative to the checkout
    prompts = {}
    for name, args in (("with", command), ("without", command[:command.index("--exclude")])):
        res = CliRunner().invoke(app, args, env={"KDROUTE_STORE_PATH": str(tmp_path / name)})
        assert res.exit_code == 0, res.output
        with Store(tmp_path / name) as store:
            prompts[name] = set(store.frame("SELECT DISTINCT prompt FROM bench_samples").prompt)
    excluded = Path(command[command.index("--exclude") + 1])
    listed = {row.get("eval_prompt") or row.get("prompt")
              for row in map(json.loads, excluded.read_text().splitlines())}
    assert prompts["with"] < prompts["without"] and not prompts["with"] & listed


def test_the_readme_synthetic_ledger_line_writes_that_ledger(tmp_path, monkeypatch):
    from kdroute.store import Store

    code = shlex.split(_readme_command("python -c"))[2]
    requests = int(re.search(r"requests=([\d_]+)", code)[1])
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    with Store(tmp_path / "demo.db") as store:
        assert store.count("requests") == requests
