"""Claim: `kdroute demo` on the demo pair shows routing worth having, in a few minutes.

On the held-out demo traffic (500 validation prompts outside mc), the routed system keeps
>= 97 % of always-teacher exact match with <= 50 % of requests on the teacher and saves >= 50 %
of the always-teacher cost; always-teacher beats always-student by >= 10 points. The demo takes
<= 600 s from a fresh clone after install (the committed student; bench, router, replay) and
<= 180 s when re-run (everything built is reused). Then `--drift` on the same 500 prompts: the
alert opens after the swap to the degraded student, the breaker takes its traffic, and the alert
resolves after the good student is back.

    python benchmarks/bench_demo.py            # the claim, as a fresh clone runs it
    python benchmarks/bench_demo.py --distill  # the fresh run distills the student too (minutes)
    python benchmarks/bench_demo.py --reduced  # checks the script: 100 requests, 20 bench items

It runs in runs/bench-demo/ with a config of its own (the committed teacher; the student path
inside that folder, a copy of models/demo-student unless --distill), first on an empty folder,
then again, then with --drift; the wall times and the second run's figures are recorded.
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
    parser.add_argument("--distill", action="store_true",
                        help="Leave the student out, so the fresh run distills it (minutes).")
    parser.add_argument("--requests", type=int, default=None)
    parser.add_argument("--bench-limit", type=int, default=None)
    args = parser.parse_args()
    requests = args.requests or (100 if args.reduced else 500)
    limit = args.bench_limit or (20 if args.reduced else None)

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    (WORK / "evalsets").symlink_to(ROOT / "evalsets")
    if not args.distill:  # what a fresh clone has: the committed student
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
    drift_s = run(config, [*demo, "--drift"], "drift")
    d = json.loads((WORK / "runs" / "demo" / "outcome.json").read_text())

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
        claim("demo wall time, fresh (s)" + (", student distilled" if args.distill else ""),
              round(fresh_s, 1), "<= 600", fresh_s <= 600 if full else None),
        claim("demo wall time, re-run (s)", round(rerun_s, 1), "<= 180",
              rerun_s <= 180 if full else None),
        level_claim(o["teacher_share_by_level"]),
        *drift_claims(d),
    ]
    figures = {
        "claims": claims,
        "reduced": not full,
        "requests": o["requests"], "bench_limit": limit,
        "student_distilled": args.distill,
        "accuracy": acc, "teacher_share": o["teacher_share"],
        "teacher_share_by_level": o["teacher_share_by_level"],
        "answered_by": o["answered_by"], "savings": s, "agreement": o["agreement"],
        "alerts": len(o["alerts"]),
        "wall_s": {"fresh": round(fresh_s, 1), "rerun": round(rerun_s, 1)},
        "stage_s": {"fresh": fresh["timings_s"], "rerun": o["timings_s"]},
        "shadow_rate": o["options"]["shadow_rate"], "concurrency": o["options"]["concurrency"],
        "slice_floors": o["slice_floors"], "agreement_floor": o["agreement_floor"],
        "drift": {"wall_s": round(drift_s, 1), "phases": d["phases"], "alerts": [
            {k: a[k] for k in ("kind", "slice", "opened_at_request", "resolved_at_request",
                               "message")} for a in d["alerts"]],
                  "accuracy": d["accuracy"], "teacher_share": d["teacher_share"]},
    }
    print(json.dumps(claims, indent=1))
    write_result("demo", figures)


def level_claim(by_level: dict) -> dict:
    """Teacher share rises with difficulty: within every family it never falls from one level to
    the next by more than one request of the harder level's cell (noise), and in some family it
    rises by >= 50 points from the easiest level to the hardest."""
    spans, worst = {}, 0.0
    for family, cells in by_level.items():
        levels = sorted(cells, key=int)
        share = [cells[lv]["teacher_share"] for lv in levels]
        spans[family] = (share[0], share[-1])
        for lv, a, b in zip(levels[1:], share, share[1:], strict=False):
            worst = max(worst, a - b - 1.0 / cells[lv]["requests"])
    value = (", ".join(f"{f} {e:.0%} -> {h:.0%}" for f, (e, h) in spans.items())
             + f"; largest fall beyond one request: {max(worst, 0.0):.0%}")
    return claim("teacher share, easiest -> hardest level of each family", value,
                 "never falls, rises >= 50 points somewhere",
                 worst <= 1e-9 and any(h - e >= 0.5 - 1e-9 for e, h in spans.values()))


def drift_claims(d: dict) -> list[dict]:
    """The --drift story: a quality alert opened after the swap (none before it), the breaker
    took the degraded student's traffic, and every alert of the swap resolved once the good
    student was back."""
    first, degraded, back = d["phases"]
    quality = [a for a in d["alerts"] if a["kind"] == "quality"]
    opened = [a["opened_at_request"] for a in quality]
    after_swap = [a for a in quality if a["opened_at_request"] >= degraded["first"]]
    resolved = [a for a in after_swap if a["resolved_at_request"] is not None
                and a["resolved_at_request"] >= back["first"]]
    return [
        claim("--drift: requests after the swap until the first quality alert",
              min(opened) - degraded["first"] if after_swap else None, "opens, none before",
              bool(after_swap) and min(opened) >= degraded["first"]),
        claim("--drift: degraded phase requests the breaker sent to the teacher",
              f"{degraded['teacher_by_breaker']} of {degraded['requests']}", "> 0",
              degraded["teacher_by_breaker"] > 0 and first["teacher_by_breaker"] == 0),
        claim("--drift: alerts resolved after the good student returned",
              f"{len(resolved)} of {len(after_swap)}", "all",
              bool(after_swap) and len(resolved) == len(after_swap)),
    ]


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
