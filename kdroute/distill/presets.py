"""Named recipes. `demo` is the embedded default pair: a tiny teacher trained by cross-entropy on
all 32k rows of the skill suite's training split, and a student with >10x fewer parameters
distilled from it on a 2,000-row family-balanced subset (the in-domain data a team would have;
the teacher knows more than that data shows).

The teacher (v2, issue 12): 4 layers x 128 (839k parameters), 6,000 steps of 64 rows on skill
suite v2, 66 min on the shared 2-core CPU (OMP_NUM_THREADS=2, other jobs running); mean bench
score 0.826: reverse 0.97, sort 1.00, count 1.00, lookup 1.00 (every tier), largest-of-four 0.94,
arithmetic 0.05 (a one-digit carry into a number stays out of reach at this size: 0.06 even for
1-digit numbers; checkpoints at 1,500-4,500 steps were no better). The v1 teacher (2,600 steps on
suite v1) scored 0.650 and was no better than its student on the demo traffic.

The student recipe: forward KL at temperature 2 mixed half and half with the hard labels, a
cached top-32 teacher, 3,000 steps of 64 rows on the 2,000-row subset. On suite v2
(benchmarks/bench_distill_demo.py, seeds 0, 1, 2) it scores 0.621 on average (0.621, 0.632,
0.611), cross-entropy alone 0.585 (0.586, 0.578, 0.589): +3.6 points, 75 % of the teacher. The
gap is one family: 2,000 rows hold ~330 reverse items, mostly long (train draws hard levels more
often), and neither student learns to reverse at all (0.02), where the teacher is at 0.97. Soft
targets help on largest-of-four (0.87 vs 0.73) and sort (0.94 vs 0.87). This recipe was carried
over from suite v1 untuned (the session had time for one teacher and one student recipe).

Tried since (seed 0 only, not committed): reverse needs rows, not steps. 2,000 rows for 12,000
steps still reverse nothing (0.00) and memorise the rest. 8,000 rows for 3,000 steps learn no
reverse either (0.02), but 8,000 rows for 12,000 steps do (0.80; 0.96 at 2-6 letters, 0.59 at
12). That student scores 0.796 (96 % of the teacher) against 0.762 by cross-entropy: +3.4 points.
It has also seen every lookup tier: on the five families the demo replays it trails the teacher
by only 3.4 points (test split), where issue 12 asks for 10. At this scale the issue's targets
pull apart: the student must keep >= 85 % of the teacher's bench mean yet trail it by >= 10
points on those five families, a window of about 0.67-0.71 exact match on them. This recipe
gives 0.58, the 8,000-row one ~0.77. Between them, 4,000 rows for 12,000 steps: the KD student
reverses only 2-3 letters (0.13 overall; validation split, greedy), the cross-entropy one 0.25:
reverse emerges abruptly with rows and seed, so a recipe in the window needs several seeds per
candidate. Other levers left untried: a third layer at a narrower width (3 x 40 at 3,000 steps
and 2,000 rows also reversed nothing), unlabelled prompts answered by the teacher.
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
