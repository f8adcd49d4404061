"""`kdroute route ...`: learn, calibrate and evaluate the difficulty router.

Heavy libraries (numpy, sklearn, torch) are imported inside the commands, so `--help` stays light.
"""

from __future__ import annotations

from pathlib import Path

import typer

from kdroute.cli.common import console, state
from kdroute.errors import InputError

app = typer.Typer(
    help="Learn, calibrate and evaluate the difficulty router (p(teacher needed) + threshold).",
    no_args_is_help=True)

DATA_HELP = ("RouteLLM-format files or folders (CSV/JSONL: `prompt` + one correctness column per "
             "model). Default: teacher/student bench samples in the ledger.")
DataOpt = typer.Option(None, "--data", "-d", help=DATA_HELP)
ExcludeOpt = typer.Option(None, "--exclude", help="Files of prompts to leave out (JSONL "
                          "`eval_prompt`/`prompt` or CSV `prompt`), e.g. contaminated ones.")
TeacherOpt = typer.Option(None, "--teacher", help="Teacher score column (default: the better).")
StudentOpt = typer.Option(None, "--student", help="Student score column (default: the other).")
RunOpt = typer.Option(None, "--run", help="Only these ledger runs (repeatable).")
TaskOpt = typer.Option(None, "--task", help="Only these tasks (repeatable).")


def _data(ctx, data, exclude, teacher, student, run, task, group_by=None):
    from kdroute.route.data import read_recorded
    from kdroute.route.train import ledger_data

    if data:
        return read_recorded(data, teacher, student, exclude or (), group_by)
    with state(ctx).store() as store:
        rows = ledger_data(store, run or (), task or (), group_by)
    for ex in exclude or ():
        from kdroute.route.data import read_prompt_list

        rows = rows.without(read_prompt_list(ex))
    return rows


LABEL_RULE_HELP = ("Override router.label_rule: expected_gain (soft, the default) | "
                   "teacher_right_student_wrong | student_wrong | score_gap.")


_OPTIONS = {"calibration_target": "--target", "calibration_value": "--value",
            "label_rule": "--label-rule"}


def _apply_target(ctx, target: str | None, value: float | None, label_rule: str | None = None):
    """The settings with the given flags over [router], validated like the config file (the one
    pattern of every command: `Config.model_validate(cfg.model_dump() | given)`); a copy, so the
    shared settings are never changed."""
    from pydantic import ValidationError

    from kdroute.config import RouterConfig

    settings = state(ctx).settings
    given = {k: v for k, v in (("calibration_target", target), ("calibration_value", value),
                               ("label_rule", label_rule)) if v is not None}
    if not given:
        return settings
    try:
        router = RouterConfig.model_validate(settings.router.model_dump() | given)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0])
        raise InputError(f"{_OPTIONS.get(key, key)} {given.get(key)}: {err['msg']}") from None
    return settings.model_copy(update={"router": router})


def _record_router(ctx, artifact, path: Path) -> None:
    """The artifact's row in the ledger's `routers` table (written on train and calibrate)."""
    with state(ctx).store() as store:
        store.save_router({"version": artifact.version, "scorer": artifact.scorer.name,
                           "threshold": artifact.threshold, "calibration_json": artifact.calibration,
                           "teacher": artifact.teacher, "student": artifact.student,
                           "metrics_json": artifact.metrics, "path": str(Path(path).resolve())})


def _print_calibration(cal: dict) -> None:
    console.print(
        f"threshold {cal['threshold']:.4f} for {cal['target']} = {cal['value']:g} on "
        f"{cal['n']} held-out prompts: teacher share {cal['teacher_share']:.1%}, quality "
        f"{cal['quality_vs_teacher']:.1%} of the teacher's (PGR {cal['pgr']:.2f}), cost "
        f"${cal['cost_per_1k']:.4f} per 1k requests (all-teacher ${cal['teacher_cost_per_1k']:.4f})")


@app.command("import")
def import_(ctx: typer.Context, files: list[Path] = typer.Argument(..., help=DATA_HELP),
            exclude: list[Path] = ExcludeOpt, teacher: str = TeacherOpt,
            student: str = StudentOpt) -> None:
    """Copy recorded teacher/student results (RouteLLM format) into the ledger."""
    from kdroute.route.data import read_recorded
    from kdroute.route.train import import_to_ledger

    data = read_recorded(files, teacher, student, exclude or ())
    with state(ctx).store() as store:
        run_id = import_to_ledger(store, data, files)
    console.print(f"imported {len(data)} prompts ({len(set(data.groups))} tasks) as run {run_id}: "
                  f"teacher {data.teacher} {data.q_teacher.mean():.1%}, student {data.student} "
                  f"{data.q_student.mean():.1%}")


@app.command("train")
def train(ctx: typer.Context,
          output: Path = typer.Option(Path("routers/router.json"), "--output", "-o",
                                      help="Artifact to write (.json, arrays in .npz beside it)."),
          scorer: str = typer.Option("tfidf", "--scorer", "-s", help="heuristic | length | tfidf "
                                     "| tfidf_words | tfidf_length | embedding | knn | task_prior "
                                     "| ensemble | ensemble_words | difficulty | stacked | "
                                     "embedding_within | "
                                     "general | guarded (for traffic unlike the training data; "
                                     "see README: Route)"),
          data: list[Path] = DataOpt, exclude: list[Path] = ExcludeOpt,
          teacher: str = TeacherOpt, student: str = StudentOpt, run: list[str] = RunOpt,
          task: list[str] = TaskOpt,
          folds: int = typer.Option(5, help="Cross-validation folds for the reported metrics."),
          holdout: float = typer.Option(0.2, help="Share held out to calibrate the threshold."),
          seed: int = typer.Option(0, help="Seed of the splits."),
          target: str = typer.Option(None, help="Override router.calibration_target."),
          value: float = typer.Option(None, help="Override router.calibration_value."),
          label_rule: str = typer.Option(None, help=LABEL_RULE_HELP),
          param: list[str] = typer.Option(None, "--param", "-p", help="A scorer hyperparameter "
                                          "as KEY=VALUE (repeatable), e.g. -p c=0.1 -p "
                                          "ngram_max=4; an unknown key lists the scorer's."),
          from_ledger: bool = typer.Option(False, "--from-ledger", help="Train on the ledger's "
                                           "bench samples plus the monitor's shadow pairs "
                                           "(weighted by 1/inclusion probability; a pair the "
                                           "teacher disagreed with = teacher needed).")) -> None:
    """Fit, cross-validate, calibrate and save a versioned router artifact."""
    from kdroute.route.artifact import save_artifact
    from kdroute.route.registry import parse_params
    from kdroute.route.train import learning_data, train_router

    params = parse_params(scorer, param)  # before any data is read: a typo fails at once
    settings = _apply_target(ctx, target, value, label_rule)
    sources = None
    if from_ledger:
        if data:
            raise InputError("--from-ledger reads the ledger; leave out --data")
        with state(ctx).store() as store:
            rows, sources = learning_data(store, run or (), task or (), student)
        console.print(f"from the ledger: {sources['bench']} bench prompts, {sources['shadow']} "
                      f"shadow pairs ({sources['shadow_teacher_needed']} teacher needed) for "
                      f"student {sources['student']}")
    else:
        rows = _data(ctx, data, exclude, teacher, student, run, task)
    with console.status("training") as status:
        artifact = train_router(rows, scorer, settings, folds, holdout, seed,
                                progress=lambda m: status.update(m), sources=sources,
                                params=params)
    path = save_artifact(artifact, output)
    _record_router(ctx, artifact, path)
    cv = artifact.metrics.get("cv") or {}
    if cv:
        console.print(f"{scorer}: {folds}-fold CV APGR {cv['apgr']:.3f}, CPT(50%) "
                      f"{cv['cpt50']:.1%}, CPT(80%) {cv['cpt80']:.1%}, AUC {cv['auc']:.3f}")
    _print_calibration(artifact.calibration)
    console.print(f"saved {artifact.version} to {path}  (set router.artifact to use it)")


@app.command("calibrate")
def calibrate(ctx: typer.Context,
              router: Path = typer.Option(..., "--router", "-r", help="Artifact to recalibrate."),
              data: list[Path] = DataOpt, exclude: list[Path] = ExcludeOpt,
              teacher: str = TeacherOpt, student: str = StudentOpt, run: list[str] = RunOpt,
              task: list[str] = TaskOpt,
              target: str = typer.Option(None, help="teacher_share | quality_floor | "
                                         "cost_budget (default: router.calibration_target)."),
              value: float = typer.Option(None, help="Target value (default: config)."),
              output_tokens: int = typer.Option(256, help="Assumed answer length when the data "
                                                "has no responses (cost estimate)."),
              dry_run: bool = typer.Option(False, help="Report without rewriting the artifact.")
              ) -> None:
    """Pick the threshold on held-out data for a teacher-share, quality or cost target."""
    from kdroute.route.artifact import load_artifact, save_artifact
    from kdroute.route.train import calibrate as pick
    from kdroute.route.train import calibration_costs

    settings = _apply_target(ctx, target, value)
    artifact = load_artifact(router)
    rows = _data(ctx, data, exclude, teacher, student, run, task)
    scores = artifact.scorer.score_texts(rows.prompts)
    cfg = settings.router
    costs = calibration_costs(rows, settings, output_tokens)
    cal = pick(scores, rows.q_student, rows.q_teacher, cfg.calibration_target,
               cfg.calibration_value, *costs)
    _print_calibration(cal)
    if not dry_run:
        artifact.threshold, artifact.calibration = cal["threshold"], cal
        _record_router(ctx, artifact, save_artifact(artifact, router))
        console.print(f"updated {router}")


@app.command("score")
def score(ctx: typer.Context,
          router: Path = typer.Option(None, "--router", "-r",
                                      help="Artifact (default: the configured router)."),
          input: Path = typer.Option(..., "--input", "-i", help="CSV or JSONL with `prompt` "
                                     "(JSONL may give `messages`, a chat conversation)."),
          output: Path = typer.Option(..., "--output", "-o", help="CSV or JSONL to write.")
          ) -> None:
    """Write the router's score for every prompt of a file, one row per input row, in order."""
    from kdroute.route.scoring import score_file

    n, name = score_file(state(ctx).settings, router, input, output)
    console.print(f"scored {n} rows with {name} -> {output}")


@app.command("eval")
def eval_(ctx: typer.Context, data: list[Path] = DataOpt, exclude: list[Path] = ExcludeOpt,
          teacher: str = TeacherOpt, student: str = StudentOpt, run: list[str] = RunOpt,
          task: list[str] = TaskOpt,
          scorers: str = typer.Option("heuristic,tfidf,embedding,ensemble", help="Comma-separated "
                                      "scorers, cross-validated on the data."),
          router: list[Path] = typer.Option(None, "--router", "-r",
                                            help="Trained artifacts to evaluate as they are."),
          folds: int = typer.Option(5), seed: int = typer.Option(0),
          group_by: str = typer.Option(None, "--group-by", help="Grouped CV: hold out whole "
                                       "groups, never split one. `file` (each file a group, e.g. "
                                       "the MMLU subject), a column of the files, or for the "
                                       "ledger task | family | difficulty."),
          train_data: list[Path] = typer.Option(None, "--train-data", help="Cross-dataset: fit "
                                                "on these files ..."),
          test_data: list[Path] = typer.Option(None, "--test-data", help="... and evaluate on "
                                               "these (no test row is used in training)."),
          bootstrap: int = typer.Option(1000, help="Bootstrap rounds for 95% intervals (0=off)."),
          plot: Path = typer.Option(None, help="PNG of quality vs teacher share."),
          json_out: Path = typer.Option(None, "--json", help="Write the figures as JSON."),
          output_tokens: int = typer.Option(256, help="Assumed answer length for costs."),
          label_rule: str = typer.Option(None, help=LABEL_RULE_HELP)) -> None:
    """Compare scorers side by side: APGR, CPT, AUC with random and oracle (and cost axis)."""
    from kdroute.route.evaluate import evaluate_scorers, table

    settings = _apply_target(ctx, None, None, label_rule)
    train = None
    if train_data or test_data:
        if not (train_data and test_data) or data:
            raise InputError("cross-dataset evaluation takes --train-data and --test-data "
                             "(and no --data)")
        train = _data(ctx, train_data, exclude, teacher, student, run, task, group_by)
        data = test_data
    rows = _data(ctx, data, exclude, teacher, student, run, task, group_by)
    names = [s.strip() for s in scorers.split(",") if s.strip()]
    report = evaluate_scorers(rows, names, router or [], settings, folds, seed,
                              bootstrap, output_tokens, plot, json_out,
                              grouped=group_by is not None and train is None, train=train)
    console.print(table(report))
