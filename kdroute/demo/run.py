"""`kdroute demo`: the whole loop on the embedded local pair, each stage through its own command.

1. the student: `kdroute distill --preset demo` if it is missing (or with --fresh),
2. bench it against the teacher with the release gate (`kdroute bench`),
3. train and calibrate a router on the paired bench samples (`kdroute route train`),
4. serve the gateway with shadowing on (`kdroute serve`) and replay held-out prompts through it
   with the `openai` client, several at a time; the same prompts forced to `kdroute/teacher` and
   `kdroute/student` are the baselines,
5. the outcome, from the ledger.

Everything the demo writes goes to its own folder, `runs/demo/` beside the config: the ledger
`kdroute.db` (bench run, router, requests, shadow pairs, alerts: what `kdroute dashboard --db`
shows), the router, the baselines' ledger and answers, the degraded student of `--drift`, the
stages' logs and `outcome.json`. Re-running reuses the student, the bench run of the same two
models and the router trained on it; `--fresh` rebuilds all of it.

The commands run as subprocesses of `python -m kdroute`, so what the demo shows is what a user
typing them gets; a failing stage stops the demo with that stage's one-line error. The console
is passed in: this module never imports the CLI.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kdroute.config import Settings
from kdroute.demo.gateway import (
    POLL_INTERVAL_S,
    DemoGateway,
    drift_pace,
    last_error_line,
    monitor_env,
)
from kdroute.demo.outcome import Phase, outcome
from kdroute.demo.traffic import BaselineCache, Prompt, held_out_prompts, replay
from kdroute.errors import InputError, KdrouteError
from kdroute.fingerprint import model_fingerprint

DEMO_DIR = "runs/demo"
# The demo's router: character n-grams with a length slope each (`tfidf_length`), since in this
# suite difficulty is the length of the string a template carries (reverse is easy for the
# student up to ~6 letters, counting stays easy at any length), calibrated to send 15 % of the
# bench's prompts to the teacher (the demo traffic lacks the student-friendly multiple-choice
# family, so its share comes out higher). The config's default, 0.3, is a generic starting point.
ROUTER_SCORER = "tfidf_length"
ROUTER_TARGET = ("teacher_share", 0.15)
DRIFT_AT, RECOVER_AT = 0.3, 0.6  # shares of the replay where the student is swapped and back
UNWATCHED_BELOW = 0.5  # a family whose healthy pair's answers are equal less often gets floor 0


@dataclass
class DemoOptions:
    requests: int = 500          # held-out prompts replayed (the validation split has 500)
    bench_limit: int | None = None  # items per bench task (None: the whole test split)
    concurrency: int = 8         # requests in flight at once
    shadow_rate: float = 0.25    # share of student-served requests the teacher answers again
    drift: bool = False          # swap in a degraded student halfway, then restore it
    fresh: bool = False          # distill, bench and train the router again
    seed: int = 0                # order of the replayed prompts
    db: Path | None = None       # the demo's ledger (default runs/demo/kdroute.db)


class StageFailed(KdrouteError):
    exit_code = 1


@dataclass
class Demo:
    settings: Settings
    config_path: Path | None
    opts: DemoOptions
    console: Console
    step: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.settings.base_dir)
        self.work = self.settings.path(DEMO_DIR)
        self.ledger = (self.opts.db or self.work / "kdroute.db").resolve()
        self.cli = [sys.executable, "-m", "kdroute"] + (
            ["--config", str(self.config_path)] if self.config_path else [])
        self.env = {"KDROUTE_STORE_PATH": str(self.ledger)}
        self.total = 5

    # --- stages -----------------------------------------------------------------------------

    def headline(self, title: str, detail: str | None = None) -> None:
        self.step += 1
        self.console.rule(f"[bold]{self.step}/{self.total} {title}")
        if detail:
            self.console.print(detail, style="dim", markup=False, highlight=False)

    def command(self, name: str, args: list[str]) -> None:
        """Run `kdroute ARGS` with a progress bar fed by its output; a failure stops the demo
        with the command's own one-line error."""
        log = self.work / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        self.console.print(f"$ kdroute {' '.join(args)}", style="dim", markup=False)
        with log.open("w") as out, self.progress() as bar:
            task = bar.add_task(name, total=None)
            proc = subprocess.Popen(self.cli + args, cwd=self.root, env=self._env(),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            assert proc.stdout is not None
            for line in proc.stdout:  # text mode splits tqdm's \r updates into lines too
                out.write(line)
                done = re.search(r"(\d+)/(\d+)", line)
                shown = line.strip()[:70]
                if done and int(done.group(2)):
                    bar.update(task, total=int(done.group(2)), completed=int(done.group(1)),
                               description=shown or name)
                elif shown:
                    bar.update(task, description=shown)
            code = proc.wait()
        if code != 0:
            raise StageFailed(f"stage {self.step}/{self.total} (`kdroute {args[0]}`) failed: "
                              f"{last_error_line(log)} (full output: {log})")

    def progress(self) -> Progress:
        return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=self.console, transient=False)

    def _env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        import os

        return dict(os.environ, **self.env, **(extra or {}))

    # --- the pipeline -----------------------------------------------------------------------

    def run(self) -> dict:
        started = time.monotonic()
        if self.opts.fresh:
            self._forget()
        self.work.mkdir(parents=True, exist_ok=True)
        state = self._state()
        teacher, student = self._pair()
        self._timed("student", lambda: self.student_stage(teacher, student))
        fps = {"teacher": model_fingerprint(teacher), "student": model_fingerprint(student)}
        run_id = self._timed("bench", lambda: self.bench_stage(state, fps))
        router = self._timed("router", lambda: self.router_stage(state, run_id))
        self._save_state(state)
        prompts = held_out_prompts(self.root, self.opts.requests, self.opts.seed)
        result = self._timed("serve", lambda: self.serve_stage(prompts, router, student, fps))
        self.timings["total"] = time.monotonic() - started
        result.update(ledger=str(self.ledger), router=str(router), bench_run=run_id,
                      options={k: str(v) if isinstance(v, Path) else v
                               for k, v in asdict(self.opts).items()},
                      timings_s=self.timings,
                      dashboard=self.dashboard_command(result["agreement_floor"],
                                                       result["slice_floors"]),
                      outcome_file=str(self.work / "outcome.json"))
        (self.work / "outcome.json").write_text(json.dumps(result, indent=1, default=str))
        return result

    def _timed(self, name: str, fn):
        t = time.monotonic()
        value = fn()
        self.timings[name] = time.monotonic() - t
        return value

    def _pair(self) -> tuple[Path, Path]:
        s = self.settings
        if not (s.teacher.is_local and s.student.is_local):
            raise InputError("kdroute demo runs a local pair: teacher.model and student.model "
                             "must be hf:<dir> (the embedded default is models/demo-*)")
        teacher = s.model_path(s.teacher.model).resolve()
        if not (teacher / "config.json").is_file():
            raise InputError(f"{teacher}: the demo teacher is missing; it is committed in "
                             "models/ (git checkout models/) or trained by `kdroute distill "
                             "--preset demo`")
        return teacher, s.model_path(s.student.model).resolve()

    def student_stage(self, teacher: Path, student: Path) -> None:
        built = (student / "config.json").is_file()
        if built and not self.opts.fresh:
            self.headline("the student", f"reusing {student} (--fresh distills it again)")
            return
        self.headline("distill the student", f"from {teacher} into {student}")
        self.command("distill", ["distill", "--preset", "demo"])

    def bench_stage(self, state: dict, fps: dict[str, str]) -> str:
        from kdroute.store import Store

        wanted = {**fps, "limit": self.opts.bench_limit}
        with Store(self.ledger) as store:
            previous = state.get("bench") or {}
            run = store.run(previous.get("run_id", "")) if previous else None
            if run is not None and run["status"] == "done" and \
                    {k: previous.get(k) for k in wanted} == wanted:
                self.headline("bench student vs teacher",
                              f"reusing bench run {run['id']} of these two models")
                run_id = run["id"]
            else:
                self.headline("bench student vs teacher", "lm-evaluation-harness on the skill "
                              "suite's test split; the teacher's scores are cached in the ledger")
                args = ["bench"] + (["--limit", str(self.opts.bench_limit)]
                                    if self.opts.bench_limit else [])
                self.command("bench", args)
                run_id = store.latest_run("bench")
                if run_id is None:
                    raise StageFailed("kdroute bench finished but left no bench run")
                state["bench"] = dict(wanted, run_id=run_id)
                state.pop("router", None)
            summary = json.loads(store.run(run_id)["config_json"] or "{}")
        gate = summary.get("gate") or "(no gate line)"
        self.console.print(f"release gate: {gate}", markup=False, highlight=False)
        if "FAIL" in gate:
            self.console.print("the demo goes on: a student that fails the gate alone can "
                               "still answer the queries the router sends it", style="dim")
        return run_id

    def router_stage(self, state: dict, run_id: str) -> Path:
        path = self.work / "router.json"
        previous = state.get("router") or {}
        target, value = ROUTER_TARGET
        wanted = {"bench_run": run_id, "scorer": ROUTER_SCORER, "target": [target, value]}
        if path.is_file() and previous == wanted:
            self.headline("train and calibrate the router",
                          f"reusing {path}, trained on bench run {run_id}")
        else:
            self.headline("train and calibrate the router",
                          f"labels from the paired bench samples of run {run_id}")
            self.command("route", ["route", "train", "--run", run_id, "--output", str(path),
                                   "--scorer", ROUTER_SCORER, "--target", target,
                                   "--value", f"{value:g}"])
            state["router"] = wanted
        meta = json.loads(path.read_text())
        cal = meta.get("calibration") or {}
        self.console.print(f"router {meta.get('version', '')}: scorer {meta.get('scorer')}, "
                           f"threshold {meta.get('threshold', float('nan')):.3f}, calibrated for "
                           f"{cal.get('target', '?')} = {cal.get('value', '?')}",
                           markup=False, highlight=False)
        return path

    def serve_stage(self, prompts: list[Prompt], router: Path, student: Path,
                    fps: dict[str, str]) -> dict:
        from kdroute.store import Store, now

        n = len(prompts)
        mode = "shadowing every student answer (drift mode)" if self.opts.drift else \
            f"shadowing {self.opts.shadow_rate:.0%} of the student's answers"
        self.headline("serve the gateway and replay held-out traffic",
                      f"{n} prompts of the validation split, {self.opts.concurrency} at a time, "
                      f"{mode}; ledger {self.ledger}")
        baselines = self._baselines(prompts, router, fps)
        phases = [Phase(0, "student", f"hf:{student}")]
        if self.opts.drift:
            from kdroute.demo.drift import degraded_copy

            # a new bad release each replay (its own name): the monitor judges a student on its
            # own answers, so a copy an earlier replay already caught would alert at once
            for old in self.work.glob("degraded-student*"):
                shutil.rmtree(old, ignore_errors=True)
            worse = degraded_copy(student, self.work / f"degraded-student-{now()[:19]}"
                                  .replace(":", ""))
            phases = [Phase(0, "student", f"hf:{student}"),
                      Phase(int(n * DRIFT_AT), "degraded student", f"hf:{worse}"),
                      Phase(int(n * RECOVER_AT), "student again", f"hf:{student}")]
        with Store(self.ledger) as store:
            for alert in store.open_alerts():  # left by an earlier, interrupted replay
                store.resolve_open_alert(alert["kind"], alert["slice"])
        since = now()
        replies = []
        floor, slice_floors = self._floors(prompts, baselines)
        env = {"KDROUTE_ROUTER_ARTIFACT": str(router), "KDROUTE_GATEWAY_STORE_TEXT": "true",
               "KDROUTE_MONITOR_AGREEMENT_FLOOR": str(floor),
               "KDROUTE_MONITOR_SLICE_FLOORS": json.dumps(slice_floors),
               **monitor_env(self.opts.shadow_rate, drift=self.opts.drift, requests=n)}
        evaluated = 0  # drift mode: replies the monitor evaluates (student answers, probes)
        with self.progress() as bar:
            task = bar.add_task("kdroute/auto", total=n)
            for i, phase in enumerate(phases):
                end = phases[i + 1].first if i + 1 < len(phases) else n
                bar.update(task, description=f"kdroute/auto: starting the gateway ({phase.label})")
                with DemoGateway(self.cli, self.root, dict(self.env, **env,
                                 KDROUTE_STUDENT_MODEL=phase.student),
                                 self.work / "logs" / "serve.log") as gw:
                    step = drift_pace(n) if self.opts.drift else end - phase.first
                    for first in range(phase.first, end, step):
                        bar.update(task, description=f"kdroute/auto ({phase.label})")
                        chunk = replay(gw.base_url, gw.api_key,
                                       prompts[first:min(first + step, end)], "kdroute/auto",
                                       concurrency=self.opts.concurrency,
                                       on_reply=lambda _r: bar.advance(task))
                        replies += chunk
                        evaluated += sum(r.route_reason == "breaker"
                                         or r.served_model == phase.student for r in chunk)
                        bar.update(task, description="kdroute/auto: waiting for shadow answers")
                        self._drain(since, expect=evaluated if self.opts.drift else None)
        until = now()
        with Store(self.ledger) as store:
            result = outcome(store, prompts, replies, baselines, since, until, phases=phases,
                             confidence=self.settings.monitor.confidence)
        return dict(result, since=since, until=until, agreement_floor=floor,
                    slice_floors=slice_floors)

    def _floors(self, prompts: list[Prompt], baselines: dict) -> tuple[float, dict[str, float]]:
        """The agreement floors of the demo's gateway: the stream's and each family's, the
        configured floor lowered where this pair is less alike than that even when healthy. A
        student's answers equal the teacher's on `same` of the baselines' prompts (all of them,
        hard ones included); the student-routed ones are easier and the monitor's tiers count
        equal answers as agreeing, so a healthy student stays above `same` - 0.05, and a degraded
        one falls below it. Per family, because one family where both models are usually wrong
        (differently) would otherwise hold the stream's floor down, or alert on a healthy pair;
        a family whose healthy answers are equal less than half the time is not watched (0)."""
        configured = self.settings.monitor.agreement_floor
        pairs = list(zip(baselines["teacher"], baselines["student"], strict=True))

        def lowered(rows) -> tuple[float, float]:
            same = sum(t.text.strip() == s.text.strip() for t, s in rows) / len(rows)
            if same < UNWATCHED_BELOW:  # too unlike when healthy for agreement to say anything
                return same, 0.0
            return same, min(configured, round(same - 0.05, 2))

        same, floor = lowered(pairs)
        families: dict[str, list] = {}
        for prompt, pair in zip(prompts, pairs, strict=True):
            families.setdefault(prompt.family, []).append(pair)
        slice_floors = {f"family:{name}": lowered(rows)[1] for name, rows in sorted(families.items())}
        note = "configured" if floor == configured else \
            f"lowered from the configured {configured:g}"
        self.console.print(f"the healthy pair's answers are equal on {same:.1%} of the prompts; "
                           f"agreement floor {floor:g} ({note}); per family: "
                           + ", ".join(f"{k.removeprefix('family:')} {v:g}"
                                       for k, v in slice_floors.items()),
                           markup=False, highlight=False)
        return floor, slice_floors

    def _baselines(self, prompts: list[Prompt], router: Path, fps: dict[str, str]) -> dict:
        """The same prompts forced to each model, on a gateway of their own (ledger
        baselines.db, no shadowing), so the demo's ledger holds only the routed traffic.
        Cached by the two models' fingerprints."""
        cache = BaselineCache(self.work / "baselines.json", fps["teacher"], fps["student"])
        todo = {role: cache.missing(role, prompts) for role in ("teacher", "student")}
        if any(todo.values()):
            env = dict(self.env, KDROUTE_STORE_PATH=str(self.work / "baselines.db"),
                       KDROUTE_ROUTER_ARTIFACT=str(router), KDROUTE_GATEWAY_STORE_TEXT="true",
                       KDROUTE_MONITOR_SHADOW_RATE="0")
            with self.progress() as bar:
                start = bar.add_task("baselines: starting their gateway", total=None)
                gw = DemoGateway(self.cli, self.root, env, self.work / "logs" / "baselines.log")
                with gw:
                    bar.remove_task(start)
                    for role, missing in todo.items():
                        task = bar.add_task(f"kdroute/{role} (baseline)", total=len(missing))
                        cache.add(role, missing, replay(
                            gw.base_url, gw.api_key, missing, f"kdroute/{role}",
                            concurrency=self.opts.concurrency,
                            on_reply=lambda _r, t=task: bar.advance(t)))
            cache.save()
        else:
            self.console.print("baselines: reusing the always-teacher and always-student "
                               "answers of these two models", style="dim")
        return {role: cache.replies(role, prompts) for role in ("teacher", "student")}

    def _drain(self, since: str, expect: int | None = None, quiet_s: float = 2.0,
               limit_s: float = 60.0) -> None:
        """Wait until the shadow evaluations of this replay stop arriving in the ledger. With
        `expect` (drift mode: every student answer shadowed, every breaker-routed request probed)
        wait until that many have arrived, then two monitor polls, so the alerts are decided
        before the next requests are sent: traffic that arrives no faster than the shadow
        pipeline, which the story needs to be told in order."""
        from kdroute.store import Store

        patient = expect is not None  # then a stall is waited out longer, and polled faster
        deadline, last, stable_since = time.monotonic() + limit_s, -1, time.monotonic()
        with Store(self.ledger) as store:
            while time.monotonic() < deadline:
                n = sum(row["n"] for row in store.shadow_counts(since))
                if patient and n >= expect:
                    time.sleep(2 * POLL_INTERVAL_S)
                    return
                if n != last:
                    last, stable_since = n, time.monotonic()
                elif time.monotonic() - stable_since >= quiet_s * (5 if patient else 1):
                    return
                time.sleep(0.1 if patient else 0.25)

    # --- state ------------------------------------------------------------------------------

    def _state(self) -> dict:
        path = self.work / "state.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def _save_state(self, state: dict) -> None:
        (self.work / "state.json").write_text(json.dumps(state, indent=1))

    def _forget(self) -> None:
        """--fresh: the demo's folder and ledger go (the student is distilled again)."""
        shutil.rmtree(self.work, ignore_errors=True)
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.ledger) + suffix).unlink(missing_ok=True)
        shutil.rmtree(str(self.ledger) + ".spool", ignore_errors=True)

    def dashboard_command(self, floor: float, slice_floors: dict[str, float]) -> str:
        """The command that opens the dashboard on the demo's ledger, with the floors the demo's
        gateway judged agreement against (else the dashboard would show the configured one)."""
        config = f" --config {self.config_path}" if self.config_path else ""
        return (f"KDROUTE_MONITOR_AGREEMENT_FLOOR={floor:g} "
                f"KDROUTE_MONITOR_SLICE_FLOORS={shlex.quote(json.dumps(slice_floors))} "
                f"kdroute{config} dashboard --db {self.ledger}")


def run_demo(settings: Settings, config_path: Path | None, opts: DemoOptions,
             console: Console) -> dict:
    """Run the demo, printing its stages on `console`; the outcome (also in outcome.json)."""
    return Demo(settings, config_path, opts, console).run()
