"""Named recipes. `demo` is the embedded default pair: a tiny teacher trained by cross-entropy on
the skill suite's training split, and a student with >10x fewer parameters distilled from it.

The numbers were chosen on small trial runs (see benchmarks/bench_distill_demo.py for the
comparison they must win): the student's step budget is the binding limit, where soft targets
carry more per step than one-hot labels.
"""

from __future__ import annotations

from pathlib import Path

from kdroute.distill.job import DistillJob

DEMO_SEED = 1234
DEMO_TEACHER = {  # ~1.8M parameters, ≲ 10 minutes on 2 CPU cores
    "student_layers": 4, "student_width": 192, "student_heads": 6,
    "steps": 1500, "batch_size": 32, "lr": 2e-3, "warmup_steps": 100, "max_length": 80,
    "seed": DEMO_SEED, "eval_every": 250, "checkpoint_every": 500,
}
DEMO_STUDENT = {  # ~120k parameters
    "student_layers": 2, "student_width": 64, "student_heads": 2,
    "steps": 1000, "batch_size": 32, "lr": 3e-3, "warmup_steps": 50, "max_length": 80,
    "seed": DEMO_SEED, "eval_every": 250, "checkpoint_every": 500,
    "loss": "forward_kl", "kd_temperature": 2.0, "alpha_ce": 0.5, "alpha_kd": 0.5,
}
PRESETS = ("demo",)


def demo_teacher_job(root: Path, output_dir: Path) -> DistillJob:
    """Cross-entropy training of the demo teacher (no teacher of its own)."""
    return DistillJob(data=root / "evalsets/data/train.jsonl",
                      validation_data=root / "evalsets/data/validation.jsonl",
                      output_dir=output_dir, teacher=None, alpha_kd=0.0, alpha_ce=1.0,
                      extra_card={"recipe": "kdroute distill --preset demo (teacher)"},
                      **DEMO_TEACHER)


def demo_student_job(root: Path, teacher: Path, output_dir: Path, *, distill: bool = True,
                     teacher_mode: str = "live", cache_dir: Path | None = None) -> DistillJob:
    """The demo student: distilled from `teacher`, or (distill=False) the same student, steps and
    data trained by cross-entropy only — the baseline the benchmark compares against."""
    settings = dict(DEMO_STUDENT)
    if not distill:
        settings.update(alpha_ce=1.0, alpha_kd=0.0)
    job = DistillJob(data=root / "evalsets/data/train.jsonl",
                     validation_data=root / "evalsets/data/validation.jsonl",
                     output_dir=output_dir, teacher=str(teacher) if distill else None,
                     teacher_mode=teacher_mode,
                     extra_card={"recipe": "kdroute distill --preset demo (student"
                                 + ("" if distill else ", cross-entropy baseline") + ")"},
                     **settings)
    if cache_dir is not None:
        job.cache_dir = cache_dir
    return job
