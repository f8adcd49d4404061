"""Claim: `kdroute demo` on the demo pair shows routing worth having, in a few minutes.

On the held-out demo traffic (500 validation prompts outside mc), the routed system keeps
>= 97 % of always-teacher exact match with <= 50 % of requests on the teacher and saves >= 50 %
of the always-teacher cost; always-teacher beats always-student by >= 10 points. The demo takes
<= 600 s from a fresh clone after install (student distilled, bench, router, replay) and
<= 180 s when re-run (everything built is reused).

    python benchmarks/bench_demo.py            # the full claim: distills a student (minutes)
    python benchmarks/bench_demo.py --reduced  # checks the script: the committed student,
                                               # 100 requests, 20 bench items per task

It runs in runs/bench-demo/ with a config of its own (the committed teacher; the student path
inside that folder, so the fresh run distills it and never touches models/demo-student), first
on an empty folder, then again; both runs' wall times and the second run's figures are recorded.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, claim, write_result  # noqa: E402

WORK = ROOT / "runs" / "bench-demo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reduced", action="store_true",
                        help="Copy the committed student instead of distilling one; 100 "
                             "requests, 20 bench items per task (a check, not the claim).")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--bench-limit", type=int, default=None)
    args = parser.parse_args()
    requests = args.requests or (100 if args.reduced else 500)
    limit = args.bench_limit or (20 if args.reduced else None)

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    (WORK / "evalsets").symlink_to(ROOT / "evalsets")
    if args.reduced:
        shutil.copytree(ROOT / "models" / "demo-student", WORK / "student")
    config = WORK / "config.toml"
    text = (ROOT / "config.toml").read_text()
    text = text.replace('model = "hf:models/demo-teacher"',
                        f'model = "hf:{ROOT / "models" / "demo-teacher"}"')
    text = text.replace('model = "hf:models/demo-student"', 'model = "hf:student"')
    assert 'hf:student"' in text and str(ROOT) in text, "config.toml's demo models moved"
    config.write_text(text)
    demo = ["--requests", str(requests)] + (["--bench-limit", str(limit)] if limit else [])

    fresh_s = run(config, demo, "fresh")
    fresh = json.loads((WORK / "runs" / "demo" / "outcome.json").read_text())
    rerun_s = run(config, demo, "rerun")
    o = json.loads((WORK / "runs" / "demo" / "outcome.json").read_text())

    acc = o["accuracy"]
    retained = acc["routed"] / acc["always_teacher"] if acc["always_teacher"] else 0.0
    gap = 100 * (acc["always_teacher"] - acc["always_student"])
    s = o["savings"]
    full = not args.reduced and requests >= 500 and limit is None
    claims = [
        claim("routed exact match / always-teacher", round(retained, 4), ">= 0.97 with <= 50 % "
              "of requests on the teacher", retained >= 0.97 and o["teacher_share"] <= 0.5),
        claim("teacher share of routed requests", round(o["teacher_share"], 4), "<= 0.50",
              o["teacher_share"] <= 0.5),
        claim("gross savings vs always-teacher", round(s["gross_share"], 4), ">= 0.50",
              s["gross_share"] >= 0.5),
        claim("net savings (after shadow cost)", round(s["net_share"], 4), None, None),
        claim("always-teacher minus always-student, points", round(gap, 1), ">= 10", gap >= 10),
        claim("demo wall time, fresh (s)" + ("" if not args.reduced else
                                             ", reduced: student copied"),
              round(fresh_s, 1), "<= 600", fresh_s <= 600 if full else None),
        claim("demo wall time, re-run (s)", round(rerun_s, 1), "<= 180",
              rerun_s <= 180 if full else None),
    ]
    figures = {
        "claims": claims,
        "reduced": not full,
        "requests": o["requests"], "bench_limit": limit,
        "student_distilled": not args.reduced,
        "accuracy": acc, "teacher_share": o["teacher_share"],
        "teacher_share_by_level": o["teacher_share_by_level"],
        "answered_by": o["answered_by"], "savings": s, "agreement": o["agreement"],
        "alerts": len(o["alerts"]),
        "wall_s": {"fresh": round(fresh_s, 1), "rerun": round(rerun_s, 1)},
        "stage_s": {"fresh": fresh["timings_s"], "rerun": o["timings_s"]},
        "shadow_rate": o["options"]["shadow_rate"], "concurrency": o["options"]["concurrency"],
    }
    print(json.dumps(claims, indent=1))
    write_result("demo", figures)


def run(config: Path, demo_args: list[str], name: str) -> float:
    """`kdroute demo` as `make demo` runs it; its wall time (output kept in WORK/<name>.log)."""
    started = time.perf_counter()
    with (WORK / f"{name}.log").open("w") as log:
        proc = subprocess.run([sys.executable, "-m", "kdroute", "--config", str(config), "demo",
                               *demo_args], cwd=WORK, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"kdroute demo ({name}) exited {proc.returncode}: see {WORK / (name + '.log')}")
    print(f"{name}: {wall:.1f} s")
    return wall


if __name__ == "__main__":
    main()
