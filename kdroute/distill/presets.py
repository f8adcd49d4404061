"""Named recipes. `demo` is the embedded default pair: a tiny teacher trained by cross-entropy on
the skill suite's training split, and a student with >10x fewer parameters distilled from it.

The numbers were chosen on small trial runs (benchmarks/bench_distill_demo.py holds the
comparison): forward KL at temperature 2 mixed half and half with the hard labels, and a cached
top-32 teacher (as fast as cross-entropy alone). With the 1,300-step teacher (0.558 mean bench
score), the distilled student at 1,500 steps scored 0.450 (CE alone 0.431); at 3,000 steps 0.550
(CE alone 0.542): it keeps the teacher's score, but beats cross-entropy alone by only ~1 point.
Pure KD (alpha_ce=0) and skew KL did not do better at 1,500 steps (0.405, 0.448).
With seed 1 at 3,000 steps the distilled student scored 0.624 and CE alone 0.671 (reverse-letters
flips between ~0.2 and ~1.0 by seed), so the seed-0 +0.7 points are noise, not a KD gain.
"""

from __future__ import annotations

from pathlib import Path

from kdroute.distill.job import DistillJob

DEMO_SEED = 0
DEMO_TEACHER = {  # 839,296 parameters; ~8.5 minutes on the shared 2-core CPU (OMP_NUM_THREADS=1)
    "student_layers": 4, "student_width": 128, "student_heads": 4,
    "steps": 1300, "batch_size": 64, "lr": 3e-3, "warmup_steps": 100, "max_length": 80,
    "seed": DEMO_SEED, "eval_every": 250, "checkpoint_every": 10**9,
}
DEMO_STUDENT = {  # 73,872 parameters (11.4x fewer); ~3 minutes with the cache
    "student_layers": 2, "student_width": 48, "student_heads": 2,
    "steps": 3000, "batch_size": 64, "lr": 3e-3, "warmup_steps": 20, "max_length": 80,
    "seed": DEMO_SEED, "eval_every": 100, "checkpoint_every": 10**9,
    "teacher_mode": "cached", "top_k": 32,
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
                     teacher_mode: str | None = None, cache_dir: Path | None = None) -> DistillJob:
    """The demo student: distilled from `teacher`, or (distill=False) the same student, steps and
    data trained by cross-entropy only — the baseline the benchmark compares against."""
    settings = dict(DEMO_STUDENT)
    if not distill:
        settings.update(alpha_ce=1.0, alpha_kd=0.0)
    job = DistillJob(data=root / "evalsets/data/train.jsonl",
                     validation_data=root / "evalsets/data/validation.jsonl",
                     output_dir=output_dir, teacher=str(teacher) if distill else None,
                     extra_card={"recipe": "kdroute distill --preset demo (student"
                                 + ("" if distill else ", cross-entropy baseline") + ")"},
                     **settings)
    if teacher_mode is not None:
        job.teacher_mode = teacher_mode
    if cache_dir is not None:
        job.cache_dir = cache_dir
    return job
