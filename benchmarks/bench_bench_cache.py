"""Claim: benching a second student against the same teacher reuses the teacher's cached results.

Measures the wall time of a full `kdroute bench` (teacher + student, whole skill suite, speed
test included) on a fresh ledger, then of the same bench again, where the teacher comes from the
ledger. Writes benchmarks/results/bench_cache.json with full_s, cached_s and speedup =
full_s / cached_s. A warm-up run (one item per task, separate ledger) is not timed, so import and
first-load costs count in neither figure.

Models: models/demo-teacher and models/demo-student when both exist (the distilled demo pair),
else random-init tiny models of the demo sizes (teacher 4x128, student 1x32).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_result  # noqa: E402


def models(folder: Path) -> tuple[str, str, str]:
    teacher, student = ROOT / "models" / "demo-teacher", ROOT / "models" / "demo-student"
    if (teacher / "config.json").is_file() and (student / "config.json").is_file():
        return f"hf:{teacher}", f"hf:{student}", "demo pair"
    from kdroute.tinymodels import save_tiny_model

    save_tiny_model(folder / "teacher", seed=0, n_layer=4, n_head=4, n_embd=128)
    save_tiny_model(folder / "student", seed=1, n_layer=1, n_head=2, n_embd=32)
    return f"hf:{folder / 'teacher'}", f"hf:{folder / 'student'}", "random-init tiny models"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="items per task (default: all)")
    args = parser.parse_args()

    from kdroute.bench import run_bench
    from kdroute.config import load_config
    from kdroute.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        teacher, student, which = models(folder)
        settings = load_config(ROOT / "config.toml", env={})
        common = {"teacher": teacher, "student": student, "device": "cpu",
                  "output_dir": folder / "runs"}
        with Store(folder / "warmup.db") as store:
            run_bench(settings, store, limit=1, use_cache=False, **common)
        timings, evaluated = [], []
        with Store(folder / "ledger.db") as store:
            for _ in range(2):
                start = time.perf_counter()
                result = run_bench(settings, store, limit=args.limit, **common)
                timings.append(time.perf_counter() - start)
                evaluated.append(result.evaluated)
            items = sum(min(t.n_docs, args.limit or t.n_docs) for t in result.tasks)
    full_s, cached_s = timings
    figures = {
        "full_s": round(full_s, 2), "cached_s": round(cached_s, 2),
        "speedup": round(full_s / cached_s, 2),
        "evaluated_full": evaluated[0], "evaluated_cached": evaluated[1],
        "items_per_model": items, "tasks": [t.name for t in result.tasks],
        "models": which, "limit": args.limit,
    }
    print(figures)
    write_result("bench_cache", figures)


if __name__ == "__main__":
    main()
