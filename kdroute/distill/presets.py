"""Named recipes. `demo` is the embedded default pair: a tiny teacher trained by cross-entropy on
all 32k rows of the skill suite's training split, and a student with >10x fewer parameters
distilled from it on a 2,000-row family-balanced subset (the in-domain data a team would have;
the teacher knows more than that data shows).

The teacher: 4 layers x 128 (839k parameters), 2,600 steps of 64 rows, 593 s on a free 2-core
CPU with OMP_NUM_THREADS=2; mean bench score 0.650. (The first demo teacher, 1,300 steps, scored
0.558, below what its own distilled student reached; doubling its steps within the ~10-minute
budget made it the better model on five of six families.)

The student recipe: forward KL at temperature 2 mixed half and half with the hard labels, a
cached top-32 teacher (as fast as cross-entropy alone), 3,000 steps of 64 rows: the earlier
full-data recipe plus the subset. 2,000 rows was the only subset size tried, checked on the
validation split (with the first teacher) before any test run. On the test split (`kdroute
bench`, benchmarks/bench_distill_demo.py, seeds 0, 1, 2) the distilled student scores 0.599 on
average (0.631, 0.551, 0.614), cross-entropy alone 0.527 (0.522, 0.522, 0.538): +7.1 points,
92 % of the teacher's 0.650. Soft targets help most where 2,000 rows are too few to learn the
rule by cross-entropy (reverse letters 0.52 vs 0.17 — 0.75 / 0.16 / 0.64 by seed —,
largest-of-four 0.87 vs 0.74, sort 0.97 vs 0.92); they cost where the teacher is weak (count
0.34 vs 0.46). With the first teacher the same recipe gave 0.641 vs 0.527.

On all 32k rows (train_examples unset, first teacher) KD gave no reliable gain: seed 0 scored
0.549 vs 0.542 for cross-entropy alone, seed 1 0.624 vs 0.671; a 74k-parameter student learns
from 32k rows by itself about what that teacher knew. Pure KD (alpha_ce=0) and skew KL did not
do better there at 1,500 steps (0.405, 0.448 vs 0.450).
"""

from __future__ import annotations

from pathlib import Path

from kdroute.distill.job import DistillJob

DEMO_SEED = 0
DEMO_TEACHER = {  # 839,296 parameters; ~10 minutes on a free 2-core CPU (OMP_NUM_THREADS=2)
    "student_layers": 4, "student_width": 128, "student_heads": 4,
    "steps": 6000, "batch_size": 64, "lr": 3e-3, "warmup_steps": 100, "max_length": 80,
    "seed": DEMO_SEED, "eval_every": 500, "checkpoint_every": 500,
}
DEMO_STUDENT = {  # 73,872 parameters (11.4x fewer); ~4-7 minutes with the cache
    "student_layers": 2, "student_width": 48, "student_heads": 2,
    "steps": 3000, "batch_size": 64, "lr": 3e-3, "warmup_steps": 20, "max_length": 80,
    "seed": DEMO_SEED, "eval_every": 100, "checkpoint_every": 10**9,
    "teacher_mode": "cached", "top_k": 32,
    "loss": "forward_kl", "kd_temperature": 2.0, "alpha_ce": 0.5, "alpha_kd": 0.5,
    "train_examples": 2000,  # the student's in-domain rows (family-balanced, by seed)
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
                     teacher_mode: str | None = None, cache_dir: Path | None = None,
                     seed: int | None = None) -> DistillJob:
    """The demo student: distilled from `teacher`, or (distill=False) the same student, steps and
    training rows trained by cross-entropy only — the baseline the benchmark compares against.
    `seed` (default DEMO_SEED) fixes the initialisation, the data order and the row subset."""
    settings = dict(DEMO_STUDENT)
    if seed is not None:
        settings["seed"] = seed
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
