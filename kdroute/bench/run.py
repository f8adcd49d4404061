"""One bench run: evaluate (or reuse) the teacher, evaluate the student (and the routed system),
compare, gate, record everything in the ledger and write the report.

Nothing reaches the ledger or the output folder until every model has been evaluated; then the
whole run lands in one transaction (`Store.record_bench`). A failure at any point marks the run
failed with nothing kept and leaves no report folder behind.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdroute.bench import harness, models, speed, stats
from kdroute.bench.models import ModelSpec
from kdroute.errors import KdrouteError

if TYPE_CHECKING:
    from kdroute.config import Settings
    from kdroute.store import Store

SPEED_TASK = "speed"  # bench_results rows of the speed test use this task name
SKIP_CHAT_LOGLIK = "skipped: chat endpoints give no log-likelihoods (multiple-choice task)"


@dataclass
class ModelResult:
    """What one model scored: result rows, sample rows, speed, and where they came from."""

    spec: ModelSpec
    fingerprint: str
    results: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    speed: dict[str, Any] | None = None
    speed_cached: bool = False
    evaluated_tasks: list[str] = field(default_factory=list)
    cached_tasks: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # task -> reason
    primary: dict[str, str] = field(default_factory=dict)  # task -> "metric,filter"

    def score(self, task: str) -> dict | None:
        """The primary-metric result row of a task (value, stderr, n), if it was scored."""
        key = self.primary.get(task)
        return next((r for r in self.results if r["task"] == task and r["metric"] == key), None)

    def task_samples(self, task: str) -> list[dict]:
        return [s for s in self.samples if s["task"] == task]


@dataclass(frozen=True)
class Comparison:
    role: str  # student | system
    task: str
    metric: str
    teacher: float | None
    value: float | None
    retention: float | None
    chance_corrected: float | None
    diff: float | None
    diff_stderr: float | None
    p_value: float | None
    verdict: str  # PASS | FAIL | n/a
    note: str = ""


@dataclass
class BenchResult:
    run_id: str
    tasks: list[harness.TaskInfo]
    models: dict[str, ModelResult]  # role -> result
    comparisons: list[Comparison]
    gate: stats.Gate
    report_dir: Path | None = None
    lm_eval_version: str = ""

    @property
    def evaluated(self) -> list[str]:
        """Roles that lm-eval actually ran in this bench (a fully cached teacher is absent)."""
        return [role for role, m in self.models.items() if m.evaluated_tasks]

    def scores(self, role: str) -> dict[str, float]:
        """task -> primary metric value for one role."""
        model = self.models[role]
        return {t.name: row["value"] for t in self.tasks if (row := model.score(t.name))}


@dataclass
class Options:
    tasks: list[str]
    include_path: Path | None
    limit: int | None
    num_fewshot: int
    batch_size: int
    device: str
    min_retention: float
    gate_on: str
    use_cache: bool = True
    measure_speed: bool = True
    speed_prompts: int = 16
    speed_new_tokens: int = 24
    output_dir: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Options:
        b = settings.bench
        values = {
            "tasks": list(b.tasks), "limit": b.limit, "num_fewshot": b.num_fewshot,
            "include_path": settings.path(b.include_path) if b.include_path else None,
            "batch_size": b.batch_size, "device": b.device, "min_retention": b.min_retention,
            "gate_on": b.gate_on, "speed_prompts": b.speed_prompts,
            "speed_new_tokens": b.speed_new_tokens, "output_dir": settings.path(b.output_dir),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def as_spec(role: str, ref: Any, settings: Settings) -> ModelSpec:
    """A ModelSpec from a spec, a ModelConfig, or a model reference string."""
    from kdroute.config import ModelConfig

    if isinstance(ref, ModelSpec):
        return ref
    if isinstance(ref, str):
        base = getattr(settings, role, None) if role in ("teacher", "student") else None
        ref = ModelConfig(model=ref, api_base=None if ref.startswith("hf:") else
                          (base.api_base if base is not None else None))
    return models.from_config(role, ref, settings)


def run_bench(settings: Settings, store: Store | None = None, *, teacher: Any = None,
              student: Any = None, system: Any = None,
              progress: Callable[[str], None] | None = None, **overrides: Any) -> BenchResult:
    """Bench the student (and optionally the routed `system`) against the teacher.

    Models: None = from config; else "hf:<dir>", a model string, a ModelConfig or a ModelSpec.
    `overrides` replace Options fields (tasks, limit, num_fewshot, min_retention, use_cache, ...).
    Raises InputError/BackendError (exit 2) with the run marked failed and nothing kept."""
    from kdroute.store import Store as StoreClass

    opts = Options.from_settings(settings, **overrides)
    specs = {"teacher": as_spec("teacher", teacher or settings.teacher, settings),
             "student": as_spec("student", student or settings.student, settings)}
    if system is not None:
        specs["system"] = as_spec("system", system, settings)
    own_store = store is None
    store = StoreClass.from_settings(settings) if own_store else store
    config = {"tasks": opts.tasks, "limit": opts.limit, "num_fewshot": opts.num_fewshot,
              "models": {role: s.label for role, s in specs.items()}}
    run_id = store.start_run("bench", config, None)
    tmp_dir: Path | None = None
    try:
        result = _bench(store, run_id, specs, opts, progress or (lambda _msg: None))
        tmp_dir = _write_outputs(result, opts)
        _commit(store, run_id, result, tmp_dir)
        return result
    except BaseException as exc:
        message = str(exc) if isinstance(exc, KdrouteError) else f"{type(exc).__name__}: {exc}"
        store.fail_run(run_id, message)
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    finally:
        if own_store:
            store.close()


def _bench(store: Store, run_id: str, specs: dict[str, ModelSpec], opts: Options,
           progress: Callable[[str], None]) -> BenchResult:
    for spec in specs.values():
        models.check(spec)
    harness.quiet()
    manager = harness.task_manager(opts.tasks, opts.include_path)
    tasks = harness.resolve_tasks(opts.tasks, manager)
    version = harness.lm_eval_version()
    device = resolve_device(opts.device)
    results = {}
    for role, spec in specs.items():
        progress(f"{role}: {spec.label}")
        results[role] = _score_model(store, spec, tasks, manager, opts, version, device)
    prompts = _speed_prompts(tasks, opts.speed_prompts)
    if opts.measure_speed and prompts:
        for role in specs:
            progress(f"{role}: speed on {len(prompts)} prompts")
            _add_speed(store, results[role], prompts, opts, device)
    comparisons = [c for role in specs if role != "teacher"
                   for c in compare(results["teacher"], results[role], tasks, opts.min_retention)]
    multi = len(specs) > 2
    gate = stats.gate({(f"{c.role}:{c.task}" if multi else c.task): c.retention
                       for c in comparisons}, opts.min_retention, opts.gate_on)
    return BenchResult(run_id, tasks, results, comparisons, gate, lm_eval_version=version)


def cache_key(fingerprint: str, task: harness.TaskInfo, version: str, num_fewshot: int,
              limit: int | None) -> str:
    """The teacher cache key: model, task name, version and data, lm-eval version, few-shot,
    limit."""
    parts = [fingerprint, task.name, task.version, task.docs_hash, version, str(num_fewshot),
             str(limit)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def _score_model(store: Store, spec: ModelSpec, tasks: list[harness.TaskInfo], manager,
                 opts: Options, version: str, device: str) -> ModelResult:
    result = ModelResult(spec, models.fingerprint(spec))
    keys = {t.name: cache_key(result.fingerprint, t, version, opts.num_fewshot, opts.limit)
            for t in tasks}
    todo = []
    for task in tasks:
        if task.needs_loglikelihood and not spec.scores_loglikelihood:
            result.skipped[task.name] = SKIP_CHAT_LOGLIK
            continue
        cached = (store.cached_bench(keys[task.name])
                  if opts.use_cache and spec.role == "teacher" else None)
        if cached is None:
            todo.append(task)
            continue
        rows, samples = _one_role(*cached)
        result.results += [_strip(r, spec.role) for r in rows]
        result.samples += [_strip(s, spec.role) for s in samples]
        result.cached_tasks.append(task.name)
    if todo:
        out = harness.evaluate(spec, todo, manager, limit=opts.limit,
                               num_fewshot=opts.num_fewshot, batch_size=opts.batch_size,
                               device=device)
        stamp = {"model_fingerprint": result.fingerprint, "role": spec.role}
        for task in todo:
            metric = harness.primary_metric(out, task.name)
            row_stamp = {**stamp, "cache_key": keys[task.name]}
            result.results += [{**r, **row_stamp, "lm_eval_version": version,
                                "num_fewshot": opts.num_fewshot, "limit_n": opts.limit}
                               for r in harness.result_rows(out, task)]
            result.samples += [{**s, **row_stamp}
                               for s in harness.sample_rows(out, task, metric)]
            result.evaluated_tasks.append(task.name)
    for task in tasks:
        if task.name not in result.skipped:
            result.primary[task.name] = _primary_from_rows(result.results, task.name)
    return result


def _one_role(rows: list[dict], samples: list[dict]) -> tuple[list[dict], list[dict]]:
    """A cached run may hold the same model twice (student == teacher): keep one copy,
    the teacher's if there is one."""
    roles = {r["role"] for r in rows}
    keep = "teacher" if "teacher" in roles else min(roles, default=None)
    return ([r for r in rows if r["role"] == keep], [s for s in samples if s["role"] == keep])


def _strip(row: dict, role: str) -> dict:
    """A cached row ready to be recorded again under this run."""
    return {k: v for k, v in row.items() if k not in ("id", "run_id", "created_at")} | {"role": role}


def _primary_from_rows(rows: list[dict], task: str) -> str:
    """The first metric recorded for the task: lm-eval lists the task's declared metrics first."""
    metrics = [r["metric"] for r in rows if r["task"] == task]
    return metrics[0] if metrics else ""


def _speed_prompts(tasks: list[harness.TaskInfo], n: int) -> list[str]:
    """Round-robin over the generation tasks' first prompts: the same list for every model."""
    pools = [t.prompts for t in tasks if t.prompts]
    out: list[str] = []
    for i in range(max((len(p) for p in pools), default=0)):
        out += [p[i] for p in pools if i < len(p)]
    return out[:n]


def _add_speed(store: Store, result: ModelResult, prompts: list[str], opts: Options,
               device: str) -> None:
    ident = "\0".join([result.fingerprint, device, platform.node(), str(opts.speed_new_tokens),
                       *prompts])
    key = "speed-" + hashlib.sha256(ident.encode()).hexdigest()[:24]
    cached = (store.cached_bench(key)
              if opts.use_cache and result.spec.role == "teacher" else None)
    if cached is not None:
        figures = {r["metric"]: r["value"] for r in cached[0]}
        result.speed_cached = True
    else:
        figures = speed.measure(result.spec, prompts, opts.speed_new_tokens, device)
    result.speed = figures
    result.results += [
        {"task": SPEED_TASK, "task_version": "1", "metric": metric, "value": value,
         "stderr": None, "n": len(prompts), "model_fingerprint": result.fingerprint,
         "role": result.spec.role, "cache_key": key, "num_fewshot": 0, "limit_n": len(prompts)}
        for metric, value in figures.items() if value is not None]


def compare(teacher: ModelResult, other: ModelResult, tasks: list[harness.TaskInfo],
            min_retention: float) -> list[Comparison]:
    """Per task: scores, retention, chance-corrected retention, paired difference, verdict."""
    out = []
    for task in tasks:
        t_row, o_row = teacher.score(task.name), other.score(task.name)
        metric = teacher.primary.get(task.name) or other.primary.get(task.name, "")
        if t_row is None or o_row is None:
            reason = other.skipped.get(task.name) or teacher.skipped.get(task.name, "not scored")
            out.append(Comparison(other.spec.role, task.name, metric,
                                  t_row["value"] if t_row else None,
                                  o_row["value"] if o_row else None,
                                  None, None, None, None, None, "n/a", reason))
            continue
        t, s = t_row["value"], o_row["value"]
        diff, se = _difference(teacher, other, task.name, t_row, o_row)
        ret = stats.retention(s, t)
        ccr = (stats.chance_corrected_retention(s, t, task.chance)
               if task.chance is not None else None)
        out.append(Comparison(other.spec.role, task.name, metric, t, s, ret, ccr, diff, se,
                              stats.z_test_p(diff, se), stats.verdict(ret, min_retention),
                              "" if ret is not None else "teacher scores 0"))
    return out


def _difference(teacher: ModelResult, other: ModelResult, task: str, t_row: dict,
                o_row: dict) -> tuple[float, float]:
    """Paired on shared doc ids when both have per-sample scores, else from the two stderrs."""
    t_scores = {s["doc_id"]: s["score"] for s in teacher.task_samples(task)}
    o_scores = {s["doc_id"]: s["score"] for s in other.task_samples(task)}
    shared = sorted(t_scores.keys() & o_scores.keys())
    if shared and len(shared) == len(t_scores) == len(o_scores):
        return stats.paired_difference([o_scores[d] for d in shared],
                                       [t_scores[d] for d in shared])
    return stats.unpaired_difference(o_row["value"], o_row["stderr"] or 0.0,
                                     t_row["value"], t_row["stderr"] or 0.0)


def _write_outputs(result: BenchResult, opts: Options) -> Path | None:
    """The report into `<output_dir>/<run_id>.partial`, renamed by `_commit` at the very end."""
    if opts.output_dir is None:
        return None
    from kdroute.bench import report

    tmp = opts.output_dir / f"{result.run_id}.partial"
    tmp.mkdir(parents=True, exist_ok=True)
    report.write(result, tmp, opts.min_retention)
    return tmp


def _commit(store: Store, run_id: str, result: BenchResult, tmp_dir: Path | None) -> None:
    """Publish the report folder, then record the whole run in one transaction; if that fails
    the folder goes again, so a run is either done with its report or failed without one."""
    final = tmp_dir.with_name(run_id) if tmp_dir is not None else None
    if tmp_dir is not None:
        tmp_dir.rename(final)
    try:
        store.record_bench(run_id, [_model_row(m) for m in result.models.values()],
                           [r for m in result.models.values() for r in m.results],
                           [s for m in result.models.values() for s in m.samples],
                           output_dir=str(final) if final else None, summary=_run_summary(result))
    except BaseException:
        if final is not None:
            shutil.rmtree(final, ignore_errors=True)
        raise
    result.report_dir = final


def _model_row(model: ModelResult) -> dict:
    """The model's row of the ledger's models table."""
    params = (model.speed or {}).get("params")
    return {"fingerprint": model.fingerprint, "reference": model.spec.reference,
            "kind": model.spec.kind, "params": int(params) if params else None,
            "input_price_per_1m": model.spec.prices[0],
            "output_price_per_1m": model.spec.prices[1]}


def _run_summary(result: BenchResult) -> dict:
    return {"tasks": [t.name for t in result.tasks], "gate": result.gate.line(),
            "models": {role: {"reference": m.spec.label, "fingerprint": m.fingerprint,
                              "evaluated": m.evaluated_tasks, "cached": m.cached_tasks,
                              "skipped": m.skipped} for role, m in result.models.items()}}
