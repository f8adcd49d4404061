"""kdroute's one door into lm-evaluation-harness: resolve tasks, evaluate a model, and turn
lm-eval's output into ledger rows. Nothing else in kdroute imports lm_eval."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdroute.bench.models import ModelSpec, lm_eval_args
from kdroute.errors import BackendError, InputError

LOGLIKELIHOOD_TYPES = ("loglikelihood", "loglikelihood_rolling", "multiple_choice")
# The skill suite's prompts carry the tiny models' Q/A wrapper; a chat endpoint applies its own
# template, so the wrapper is taken off user turns before they are sent (other tasks pass as is).
SPEED_PROMPTS_PER_TASK = 32
_QA_TURN = re.compile(r"\AQ: (.*)\nA:\Z", re.DOTALL)


@dataclass(frozen=True)
class TaskInfo:
    name: str
    version: str
    output_type: str
    chance: float | None  # expected score of a uniform guess (multiple choice), else None
    n_docs: int
    prompts: tuple[str, ...] = ()  # the first few zero-shot prompts (for the speed test)
    docs_hash: str = ""  # of the evaluation docs: edited data never reuses stale cached results

    @property
    def needs_loglikelihood(self) -> bool:
        return self.output_type in LOGLIKELIHOOD_TYPES


def lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


def quiet() -> None:
    """lm-eval logs a warning per custom task and per request batch; keep errors only."""
    for name in ("lm_eval", "lm-eval", "httpx"):
        logging.getLogger(name).setLevel(logging.ERROR)


def task_manager(names: list[str], include_path: Path | None):
    """A TaskManager that knows every name: the include path alone when it suffices (indexing
    lm-eval's built-in tasks costs seconds), else the built-ins too. Unknown names: InputError."""
    from lm_eval.tasks import TaskManager

    managers = []
    if include_path is not None:
        if not include_path.is_dir():
            raise InputError(f"bench include path not found: {include_path}")
        managers.append(lambda: TaskManager(include_path=str(include_path), include_defaults=False))
    managers.append(lambda: TaskManager(include_path=str(include_path) if include_path else None))
    missing = names
    for make in managers:
        manager = make()
        found = set(manager.match_tasks(list(names)))
        missing = [n for n in names if n not in found]
        if not missing:
            return manager
    where = f"{include_path} nor " if include_path else ""
    raise InputError(f"unknown task {', '.join(missing)}: not in {where}lm-eval's built-in tasks "
                     "(list them with `lm_eval ls tasks`)")


def resolve_tasks(names: list[str], manager) -> list[TaskInfo]:
    """The leaf tasks behind task and group names, in order, each with version and type."""
    try:
        loaded = manager.load(list(names))
    except Exception as exc:  # a task whose data cannot be loaded (e.g. offline hub dataset)
        raise InputError(f"cannot load tasks {', '.join(names)}: {_one_line(exc)}") from None
    return [_info(name, task) for name, task in loaded["tasks"].items()]


def _info(name: str, task) -> TaskInfo:
    version = task.VERSION if task.VERSION is not None else "0"
    docs = list(task.eval_docs)
    chance = None
    if task.OUTPUT_TYPE == "multiple_choice" and docs:
        chance = sum(1 / len(task.doc_to_choice(d)) for d in docs) / len(docs)
    prompts = () if task.OUTPUT_TYPE in LOGLIKELIHOOD_TYPES else tuple(
        str(task.doc_to_text(d)) for d in docs[:SPEED_PROMPTS_PER_TASK])
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(json.dumps(doc, sort_keys=True, default=str).encode())
    return TaskInfo(name, str(version), task.OUTPUT_TYPE, chance, len(docs), prompts,
                    digest.hexdigest()[:16])


def evaluate(spec: ModelSpec, tasks: list[TaskInfo], manager, *, limit: int | None,
             num_fewshot: int, batch_size: int, device: str) -> dict[str, Any]:
    """Run lm-eval's simple_evaluate on one model; return its raw output (with samples)."""
    import lm_eval

    name, args = lm_eval_args(spec)
    model: Any = name
    if spec.is_chat_endpoint:
        model, args = _unwrapping_chat_model(args), None
    try:
        out = lm_eval.simple_evaluate(
            model=model, model_args=args, tasks=[t.name for t in tasks], num_fewshot=num_fewshot,
            batch_size=batch_size if spec.kind == "hf" else 1, device=device, limit=limit,
            log_samples=True, task_manager=manager, apply_chat_template=spec.is_chat_endpoint,
            bootstrap_iters=1000, verbosity="ERROR")
    except Exception as exc:  # lm-eval and the back ends raise many types; report one line
        raise BackendError(f"{spec.role} model {spec.label} failed in lm-eval: "
                           f"{_one_line(exc)}") from None
    if out is None:  # only on non-zero ranks of a distributed run
        raise BackendError("lm-eval returned no results (distributed rank other than 0?)")
    return out


def _unwrapping_chat_model(args: dict):
    from lm_eval.models.openai_completions import LocalChatCompletion

    class QAChatCompletion(LocalChatCompletion):
        """local-chat-completions, minus the Q/A wrapper on user turns."""

        def _create_payload(self, messages, *rest, **kwargs):
            return super()._create_payload([unwrap_message(m) for m in messages], *rest, **kwargs)

    return QAChatCompletion(**args)


def unwrap_message(message: dict) -> dict:
    """A chat message without the skill suite's Q/A wrapper (user turns) or padding."""
    content = message.get("content")
    if message.get("role") == "user" and isinstance(content, str):
        match = _QA_TURN.match(content.strip("\n"))
        if match:
            return {**message, "content": match.group(1)}
    if message.get("role") == "assistant" and isinstance(content, str):
        return {**message, "content": content.strip()}
    return message


def primary_metric(out: dict, task: str) -> str:
    """The lm-eval key ("metric,filter") of the task's first declared metric."""
    results = out["results"][task]
    for metric in out["higher_is_better"].get(task, {}):
        for key in results:
            if key.startswith(metric + ",") and "_stderr" not in key:
                return key
    keys = [k for k in results if "," in k and "_stderr" not in k]
    if not keys:
        raise BackendError(f"lm-eval reported no metric for task {task}")
    return keys[0]


def result_rows(out: dict, task: TaskInfo) -> list[dict]:
    """One row per metric of one task: metric ("name,filter"), value, stderr, n."""
    results = out["results"][task.name]
    n = int(out.get("n-samples", {}).get(task.name, {}).get("effective", 0))
    rows = []
    for key, value in results.items():
        if "," not in key or "_stderr" in key or not isinstance(value, int | float):
            continue
        metric, _, filt = key.partition(",")
        stderr = results.get(f"{metric}_stderr,{filt}")
        stderr = float(stderr) if isinstance(stderr, int | float) and math.isfinite(stderr) else None
        rows.append({"task": task.name, "task_version": task.version, "metric": key,
                     "value": float(value), "stderr": stderr, "n": n})
    return rows


def sample_rows(out: dict, task: TaskInfo, metric_key: str) -> list[dict]:
    """One row per scored item: doc id, prompt, target, response, score, family, difficulty.

    `prompt` is the doc's own `prompt` field when it has one (the skill suite: the user's words,
    what a router sees live), else lm-eval's full context text."""
    metric = metric_key.split(",")[0]
    rows = []
    for sample in out.get("samples", {}).get(task.name, []):
        doc = sample.get("doc", {})
        args = sample.get("arguments") or [("", None)]
        if task.output_type == "multiple_choice":
            choices = [str(a[1]).strip() for a in args]
            lls = [r[0] for r in sample.get("filtered_resps", [])]
            response = choices[max(range(len(lls)), key=lls.__getitem__)] if lls else ""
            target = sample.get("target")
            target = choices[target] if isinstance(target, int) and target < len(choices) else target
        else:
            resps = sample.get("resps") or [[""]]
            response = resps[0][0] if isinstance(resps[0], list) else resps[0]
            target = sample.get("target")
        prompt = doc.get("prompt") if isinstance(doc.get("prompt"), str) else str(args[0][0])
        rows.append({
            "task": task.name, "doc_id": int(sample["doc_id"]), "prompt": prompt,
            "target": None if target is None else str(target), "response": str(response),
            "score": float(sample.get(metric, 0.0)),
            "family": _opt_str(doc.get("family")), "difficulty": _opt_str(doc.get("difficulty")),
        })
    return rows


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
