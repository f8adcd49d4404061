"""`kdroute distill`: train a student from the teacher, or a model by cross-entropy alone."""

from __future__ import annotations

import os
from pathlib import Path
from typing import get_args

import typer
from pydantic import ValidationError

from kdroute.cli.common import console, state
from kdroute.config import DistillConfig, Divergence, TeacherMode
from kdroute.errors import InputError

_HELP = """Distill a student from the teacher (or train by cross-entropy without one).

Defaults come from the \\[distill] section of the config; each option overrides one key. The teacher is the \\[teacher] model when it is a local hf: directory.

Teacher modes: live (a teacher forward pass each step), cached (its top-k log-probs computed once into runs/teacher-cache and reused), sequence (the student learns the teacher's generated answers: the path for another tokenizer).

Several processes: accelerate launch --multi_gpu --num_processes N -m kdroute distill ... (CPU-only machines run gloo DDP).

kdroute distill --preset demo trains the embedded demo pair: models/demo-teacher if missing, then models/demo-student."""


def register(app: typer.Typer) -> None:
    group = typer.Typer(help=_HELP)
    app.add_typer(group, name="distill")

    @group.command("data")
    def data_(
        ctx: typer.Context,
        from_ledger: bool = typer.Option(False, "--from-ledger", help="Read the monitor's "
                                         "shadow pairs from the ledger (the only source)."),
        output: Path = typer.Option(..., "--output", "-o", help="JSONL file to write."),
        every: bool = typer.Option(False, "--all", help="Every shadowed prompt, not only those "
                                   "where the teacher disagreed with the student."),
        student_model: str | None = typer.Option(None, "--student", help="Only pairs of this "
                                                 "student (default: all)."),
    ) -> None:
        """Export the teacher's answers to live prompts the student got wrong, as prompt/response
        JSONL for the next `kdroute distill --data FILE`."""
        if not from_ledger:
            raise InputError("distill data needs --from-ledger (the shadow pairs are its source)")
        from kdroute.route.loop import write_distill_data

        with state(ctx).store() as store:
            n = write_distill_data(store, output, every, student_model)
        console.print(f"wrote {n} prompt/response rows to {output} (train on them with "
                      f"`kdroute distill --data {output}`)")

    @group.callback(invoke_without_command=True, help=_HELP)
    def distill(
        ctx: typer.Context,
        teacher: str | None = typer.Option(None, help="Teacher: hf:<dir> or a directory "
                                           "(default: teacher.model)."),
        no_teacher: bool = typer.Option(False, "--no-teacher",
                                        help="Train by cross-entropy only, without a teacher."),
        teacher_cache: Path | None = typer.Option(
            None, help="A finished top-k cache folder: cached mode without loading the teacher."),
        student: Path | None = typer.Option(None, help="Start from this student directory "
                                            "(default: a new model, see --student-*)."),
        student_layers: int | None = typer.Option(None, help="Layers of a new student."),
        student_width: int | None = typer.Option(None, help="Hidden size of a new student."),
        student_heads: int | None = typer.Option(None, help="Attention heads of a new student."),
        init_from_teacher: bool = typer.Option(
            False, help="Initialise a new student from evenly spaced teacher blocks (same width)."),
        data: Path | None = typer.Option(None, help="Prompt/response JSONL (default: distill.data)."),
        validation_data: Path | None = typer.Option(None, help="Validation JSONL, evaluated "
                                                    "every --eval-every steps."),
        output: Path | None = typer.Option(None, "--output", "-o",
                                           help="Where the student goes (default: distill.output_dir)."),
        teacher_mode: str | None = typer.Option(None, help=" | ".join(get_args(TeacherMode)) + "."),
        loss: str | None = typer.Option(None, help=" | ".join(get_args(Divergence)) + "."),
        kd_temperature: float | None = typer.Option(None, help="Softmax temperature of the KD loss."),
        alpha_ce: float | None = typer.Option(None, help="Weight of the hard-label loss."),
        alpha_kd: float | None = typer.Option(None, help="Weight of the KD loss."),
        jsd_beta: float | None = typer.Option(None, help="Generalized JSD β in [0, 1]."),
        skew_alpha: float | None = typer.Option(None, help="Skew KL α in [0, 1]."),
        hidden_weight: float | None = typer.Option(None, help="Weight of the hidden-state loss."),
        attention_weight: float | None = typer.Option(None, help="Weight of the attention KL."),
        top_k: int | None = typer.Option(None, help="Teacher log-probs kept per token (cached)."),
        steps: int | None = typer.Option(None, help="Optimizer steps."),
        batch_size: int | None = typer.Option(None, help="Sequences per micro-batch per process."),
        grad_accum: int | None = typer.Option(None, help="Micro-batches per optimizer step."),
        lr: float | None = typer.Option(None, help="Peak learning rate."),
        seed: int | None = typer.Option(None, help="Seed of initialisation and data order."),
        train_examples: int | None = typer.Option(
            None, help="Train on a subset of this many rows, balanced over the rows' family "
            "field and drawn by --seed (default: distill.train_examples; 0 = all rows)."),
        max_length: int = typer.Option(128, help="Tokens per sequence (longer ones are cut)."),
        resume: bool = typer.Option(False, help="Continue exactly from the newest checkpoint."),
        preset: str | None = typer.Option(None, help="A named recipe: demo."),
        progress: bool = typer.Option(True, help="Show a progress bar."),
    ) -> None:
        if ctx.invoked_subcommand is not None:  # `kdroute distill data ...`
            return
        st = state(ctx)
        settings = st.settings
        if preset is not None:
            _run_preset(preset, settings, st, progress)
            return
        from kdroute.distill.job import DistillJob

        cfg = settings.distill
        fields = _job_fields(cfg, ctx.params)  # the options named like [distill] keys
        teacher_dir = None if no_teacher or teacher_cache else _teacher_dir(teacher, settings)
        job = DistillJob(
            data=data or settings.path(cfg.data), output_dir=output or settings.path(cfg.output_dir),
            teacher=teacher_dir, teacher_cache=teacher_cache, validation_data=validation_data,
            student_init=student, student_layers=student_layers, student_width=student_width,
            student_heads=student_heads, init_from_teacher=init_from_teacher,
            max_length=max_length, resume=resume, cache_dir=settings.path("runs/teacher-cache"),
            **fields)
        if no_teacher:
            job.alpha_kd = 0.0
        _train(job, st, progress)


# Paths given on the command line resolve against the working directory, the config's against
# the config file's folder: they are merged apart from the other keys.
_PATH_KEYS = ("data", "output_dir")


def _job_fields(cfg: DistillConfig, params: dict) -> dict:
    """The [distill] keys with the options given on the command line, validated like the config
    file (cli/serve.py's pattern), as DistillJob fields."""
    given = {k: v for k, v in params.items()
             if k in DistillConfig.model_fields and k not in _PATH_KEYS and v is not None}
    try:
        merged = DistillConfig.model_validate(cfg.model_dump() | given)
    except ValidationError as exc:
        raise InputError(_describe(exc)) from None
    fields = {k: v for k, v in merged.model_dump().items() if k not in _PATH_KEYS}
    fields["train_examples"] = fields["train_examples"] or None  # 0 = all rows
    return fields


def _describe(exc: ValidationError) -> str:
    """One line for a bad option, in the words DistillJob.check uses for the same mistake."""
    err = exc.errors()[0]
    key, got = str(err["loc"][0]), err.get("input")
    field = DistillConfig.model_fields[key]
    if err["type"] == "literal_error":
        return (f"--{key.replace('_', '-')}: unknown {key} {got!r}; choose one of "
                f"{', '.join(get_args(field.annotation))}")
    bounds = {name: getattr(m, name) for m in field.metadata
              for name in ("ge", "gt", "le", "lt") if getattr(m, name, None) is not None}
    if "ge" in bounds and "le" in bounds:
        rule = f"must be in [{bounds['ge']}, {bounds['le']}]"
    elif bounds:
        ops = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
        rule = "must be " + " and ".join(f"{ops[n]} {v}" for n, v in bounds.items())
    else:
        rule = err["msg"].lower()
    return f"--{key.replace('_', '-')}: {key} {rule} (got {got!r})"


def _teacher_dir(ref: str | None, settings) -> str:
    ref = ref or settings.teacher.model
    if ref.startswith("hf:"):
        return str(settings.model_path(ref))
    if Path(ref).is_dir():
        return ref
    raise InputError(f"teacher {ref!r} is not a local model directory: logit distillation needs "
                     "the weights; generate answers with it and train on them with --no-teacher")


def _train(job, st, progress: bool):
    job.check()  # bad input fails here, in one line, before torch is even imported
    from kdroute.distill.train import train

    # Only the main process of an `accelerate launch` run writes to the ledger.
    main = os.environ.get("RANK", "0") == "0"
    store = st.store() if main else None
    result = train(job, store=store, progress=progress)
    if main:
        console.print(f"saved {result.output_dir} ({result.params:,} parameters, {result.steps} "
                      f"steps, {result.tokens_per_s:,.0f} tokens/s); run {result.run_id}")
    return result


def _run_preset(name: str, settings, st, progress: bool) -> None:
    from kdroute.distill import presets

    if name not in presets.PRESETS:
        raise InputError(f"unknown preset {name!r}; choose one of {', '.join(presets.PRESETS)}")
    teacher = settings.model_path(settings.teacher.model)
    student = settings.model_path(settings.student.model)
    root = Path(settings.base_dir)
    if not (teacher / "config.json").is_file():
        console.print(f"training the demo teacher into {teacher}")
        _train(presets.demo_teacher_job(root, teacher), st, progress)
    console.print(f"distilling the demo student into {student}")
    _train(presets.demo_student_job(root, teacher, student,
                                    cache_dir=settings.path("runs/teacher-cache")), st, progress)
