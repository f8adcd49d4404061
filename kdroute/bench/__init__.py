"""The bench stage: score a student (and the routed system) against its teacher with
lm-evaluation-harness, cache the teacher, gate the release, and report.

This is the only package that imports lm_eval, and only inside functions, so importing it is
cheap. Python API:

    from kdroute.bench import run_bench
    result = run_bench(settings, teacher="hf:models/t", student="hf:models/s", limit=50)
    result.scores("student")   # {"kdroute_arith": 0.62, ...}
    result.gate.passed
"""

from kdroute.bench.run import BenchResult, Comparison, ModelResult, Options, run_bench

__all__ = ["BenchResult", "Comparison", "ModelResult", "Options", "run_bench"]
