"""The distillation loop: one explicit recipe that composes the pure losses.

    objective = alpha_ce · CE(hard labels) + alpha_kd · KD(teacher ‖ student)
                + hidden_weight · hidden-state loss + attention_weight · attention KL

Without teacher logits the objective is plain cross-entropy (how the demo teacher and the
"no distillation" baseline are trained). Hugging Face Accelerate owns devices and distribution,
so `accelerate launch` runs the same code on several processes (DDP/FSDP). Every loss is divided
by the number of learned tokens of the whole optimizer step (all micro-batches, all processes),
so gradient accumulation and data parallelism change nothing but speed.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from kdroute.distill import losses as L
from kdroute.distill.data import (
    Encoded,
    collate,
    encode_pairs,
    micro_batches,
    read_pairs,
    step_indices,
    stratified_subset,
)
from kdroute.distill.job import DistillJob
from kdroute.distill.signals import TeacherSignal, prepare_signal
from kdroute.tinymodels import count_parameters


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    final_metrics: dict
    history: list[dict] = field(default_factory=list)  # per-step train metrics of this process
    tokens_per_s: float = 0.0
    params: int = 0
    run_id: str | None = None


class Projections(nn.Module):
    """Learned bias-free maps from student to teacher hidden width, one per mapped layer pair."""

    def __init__(self, d_student: int, d_teacher: int, n_pairs: int):
        super().__init__()
        self.maps = nn.ModuleList(nn.Linear(d_student, d_teacher, bias=False) for _ in range(n_pairs))

    def weights(self) -> list[torch.Tensor]:
        return [m.weight for m in self.maps]


class Student(nn.Module):
    """The student and its training-only projections, wrapped together so DDP syncs both."""

    def __init__(self, model: nn.Module, projections: Projections | None):
        super().__init__()
        self.model = model
        self.projections = projections

    def forward(self, input_ids, attention_mask, hidden: bool = False, attention: bool = False):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          output_hidden_states=hidden, output_attentions=attention)


def step_losses(job: DistillJob, student: nn.Module, projections: Projections | None,
                signal: TeacherSignal, batch: dict, example_ids: list[int], vocab: int,
                num_tokens: int) -> dict[str, torch.Tensor]:
    """Losses of one micro-batch, each normalised by the step's `num_tokens`."""
    hidden, attention = job.hidden_weight > 0, job.attention_weight > 0
    out = student(batch["input_ids"], batch["attention_mask"], hidden=hidden, attention=attention)
    logits, labels = L.causal_shift(L.slice_vocab(out.logits, vocab), batch["labels"])  # (B, T-1, V)
    parts = {"ce_loss": L.cross_entropy(logits, labels, num_tokens)}
    kd = None
    teacher_out = signal.forward(batch, hidden=hidden, attention=attention)
    kw = {"temperature": job.kd_temperature, "beta": job.jsd_beta, "alpha": job.skew_alpha,
          "num_tokens": num_tokens}
    if signal.kind == "live" and job.alpha_kd > 0:
        t_logits = L.causal_shift(L.slice_vocab(teacher_out.logits, vocab), batch["labels"])[0]
        kd = L.kd_loss(logits, t_logits, labels, job.loss, **kw)
    elif signal.kind == "cached":
        values, indices, tails = (x.to(logits.device)
                                  for x in signal.cache.batch(example_ids, labels))
        kd = L.topk_kd_loss(logits, values, indices, labels, job.loss, teacher_tail=tails, **kw)
    total = L.blend(parts["ce_loss"], kd, job.alpha_ce if kd is not None else 1.0, job.alpha_kd)
    if kd is not None:
        parts["kd_loss"] = kd
    if hidden:
        layer_map = job.layer_map or L.default_layer_map(
            len(out.hidden_states) - 1, len(teacher_out.hidden_states) - 1)
        parts["hidden_loss"] = L.hidden_state_loss(
            out.hidden_states, teacher_out.hidden_states, projections.weights(), labels, layer_map,
            job.hidden_loss, num_tokens)
        total = total + job.hidden_weight * parts["hidden_loss"]
    if attention:
        layer_map = job.layer_map or L.default_layer_map(
            len(out.attentions), len(teacher_out.attentions))
        parts["attention_loss"] = L.attention_kl_loss(out.attentions, teacher_out.attentions,
                                                      labels, layer_map, num_tokens)
        total = total + job.attention_weight * parts["attention_loss"]
    parts["loss"] = total
    return parts


def train_step(job: DistillJob, accelerator, model: Student, optimizer, scheduler,
               signal: TeacherSignal, encoded: list[Encoded], pad_id: int, vocab: int,
               step: int, source: list[int] | None = None) -> dict[str, float]:
    """One optimizer step over grad_accum micro-batches on every process. `source[i]` is the
    row of the data file behind `encoded[i]` (the teacher cache's example id); None = i."""
    world, rank = accelerator.num_processes, accelerator.process_index
    per_step = job.batch_size * job.grad_accum * world
    ids = step_indices(len(encoded), job.seed, step, per_step)
    shares = micro_batches(ids, job.batch_size, job.grad_accum, world, rank)
    batches = [{k: v.to(accelerator.device) for k, v in collate([encoded[i] for i in s], pad_id).items()}
               for s in shares]
    counts = torch.tensor([sum(L.count_valid(b["labels"][:, 1:]) for b in batches),
                           sum(int(b["attention_mask"].sum()) for b in batches)],
                          device=accelerator.device)
    counts = accelerator.reduce(counts, reduction="sum")  # learned and input tokens, all processes
    num_tokens = int(counts[0])
    unwrapped = accelerator.unwrap_model(model)
    totals: dict[str, float] = {}
    for m, (batch, share) in enumerate(zip(batches, shares, strict=True)):
        sync = m == len(batches) - 1
        with contextlib.nullcontext() if sync else accelerator.no_sync(model):
            rows = share if source is None else [source[i] for i in share]
            parts = step_losses(job, model, unwrapped.projections, signal, batch, rows, vocab,
                                num_tokens)
            # DDP averages gradients over processes; the loss is already a global mean.
            accelerator.backward(parts["loss"] * world)
        for k, v in parts.items():
            totals[k] = totals.get(k, 0.0) + float(v.detach())
    accelerator.clip_grad_norm_(model.parameters(), job.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    summed = accelerator.reduce(torch.tensor(list(totals.values()), device=accelerator.device),
                                reduction="sum")  # each process holds its share of the mean
    metrics = dict(zip(totals, summed.tolist(), strict=True))
    metrics["input_tokens"] = int(counts[1])
    return metrics


@torch.no_grad()
def evaluate(job: DistillJob, model: nn.Module, signal: TeacherSignal, encoded: list[Encoded],
             pad_id: int, vocab: int, device) -> dict[str, float]:
    """Validation CE (and KD with a live teacher) over the first eval_examples examples."""
    model.eval()
    chunk = encoded[: job.eval_examples]
    n = sum(1 for e in chunk for x in e.labels[1:] if x != L.IGNORE_INDEX)
    totals = {"ce_loss": 0.0}
    for start in range(0, len(chunk), job.batch_size):
        batch = {k: v.to(device) for k, v in collate(chunk[start: start + job.batch_size], pad_id).items()}
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        logits, labels = L.causal_shift(L.slice_vocab(out.logits, vocab), batch["labels"])
        totals["ce_loss"] += float(L.cross_entropy(logits, labels, n))
        if signal.kind == "live" and job.alpha_kd > 0:
            t_logits = L.causal_shift(L.slice_vocab(signal.forward(batch).logits, vocab),
                                      batch["labels"])[0]
            totals["kd_loss"] = totals.get("kd_loss", 0.0) + float(L.kd_loss(
                logits, t_logits, labels, job.loss, temperature=job.kd_temperature,
                beta=job.jsd_beta, alpha=job.skew_alpha, num_tokens=n))
    model.train()
    kd = totals.get("kd_loss")
    totals["loss"] = L.blend(totals["ce_loss"], kd, job.alpha_ce if kd is not None else 1.0,
                             job.alpha_kd)
    return totals


def _checkpoints(output_dir: Path) -> list[Path]:
    return sorted((output_dir / "checkpoints").glob("step-*"))


def save_checkpoint(accelerator, output_dir: Path, step: int, extra: dict) -> None:
    """Model, optimizer, scheduler and RNG states (Accelerate), plus the step; keeps the last 2."""
    path = output_dir / "checkpoints" / f"step-{step:07d}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        (path / "trainer_state.json").write_text(json.dumps({"step": step, **extra}))
        for old in _checkpoints(output_dir)[:-2]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator, output_dir: Path) -> tuple[int, dict]:
    """Restore the newest checkpoint; (0, {}) when there is none."""
    found = [p for p in _checkpoints(output_dir) if (p / "trainer_state.json").is_file()]
    if not found:
        return 0, {}
    accelerator.load_state(str(found[-1]))
    state = json.loads((found[-1] / "trainer_state.json").read_text())
    return int(state["step"]), state


def cosine_schedule(optimizer, warmup: int, total: int):
    """Linear warm-up to the peak lr, then cosine decay to 10 % of it."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(job: DistillJob, store=None, progress: bool = True) -> TrainResult:
    """Run the whole recipe; `store` (a kdroute Store) receives the run and per-step metrics."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    job.check()
    use_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    # On a machine without an accelerator, `accelerate launch --multi_gpu` starts CPU processes
    # that only join one gloo process group when the Accelerator is told to use the CPU.
    no_device = not torch.cuda.is_available() and not torch.backends.mps.is_available()
    accelerator = Accelerator(mixed_precision="bf16" if use_bf16 else "no", cpu=no_device)
    set_seed(job.seed)
    setup = prepare_signal(job, accelerator, progress=progress)
    tokenizer, signal, student = setup.tokenizer, setup.signal, setup.student
    vocab, pad_id = len(tokenizer), tokenizer.pad_token_id
    rows = read_pairs(setup.data_path)
    source = stratified_subset(rows, job.train_examples, job.seed)  # the teacher cache covers all
    encoded = encode_pairs(tokenizer, [rows[i] for i in source], job.max_length)
    if job.train_examples is not None:
        setup.lineage["data"] |= {"train_examples": len(source), "subset_seed": job.seed}
    valid = (encode_pairs(tokenizer, read_pairs(job.validation_data), job.max_length)
             if job.validation_data else [])
    projections = None
    if job.hidden_weight > 0:
        t_cfg = signal.teacher.config
        n_pairs = len(job.layer_map or L.default_layer_map(student.config.num_hidden_layers,
                                                           t_cfg.num_hidden_layers))
        projections = Projections(student.config.hidden_size, t_cfg.hidden_size, n_pairs)
    model = Student(student, projections)
    optimizer = torch.optim.AdamW(model.parameters(), lr=job.lr, weight_decay=job.weight_decay)
    scheduler = cosine_schedule(optimizer, job.warmup_steps, job.steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    signal.to(accelerator.device)
    start, state = load_checkpoint(accelerator, job.output_dir) if job.resume else (0, {})
    run_id = None
    if store is not None and accelerator.is_main_process:
        run_id = store.start_run("distill", {**job.to_dict(), "resumed_from_step": start},
                                 str(job.output_dir))
    try:
        result = _loop(job, accelerator, model, optimizer, scheduler, signal, encoded, valid,
                       pad_id, vocab, start, state, store, run_id, progress, source)
    except BaseException as exc:
        if run_id is not None:
            store.fail_run(run_id, f"{type(exc).__name__}: {exc}")
        raise
    from kdroute.distill.card import save_student

    if accelerator.is_main_process:
        save_student(job, accelerator.unwrap_model(model).model, tokenizer, result, setup)
        if run_id is not None:
            store.finish_run(run_id)
    accelerator.wait_for_everyone()
    result.params, result.run_id = count_parameters(accelerator.unwrap_model(model).model), run_id
    return result


def _loop(job, accelerator, model, optimizer, scheduler, signal, encoded, valid, pad_id, vocab,
          start, state, store, run_id, progress, source=None) -> TrainResult:
    from tqdm.auto import tqdm

    history, pending = [], []
    tokens_done, elapsed = state.get("tokens", 0), state.get("elapsed_s", 0.0)
    bar = tqdm(total=job.steps, initial=start, desc="distill" if signal.kind != "none" else "train",
               disable=not (progress and accelerator.is_main_process), unit="step")
    model.train()
    end = job.steps if job.stop_after is None else min(job.steps, job.stop_after)
    for step in range(start, end):
        began = time.perf_counter()
        metrics = train_step(job, accelerator, model, optimizer, scheduler, signal, encoded,
                             pad_id, vocab, step, source)
        elapsed += time.perf_counter() - began
        tokens_done += metrics.pop("input_tokens")
        metrics.update(step=step + 1, lr=scheduler.get_last_lr()[0],
                       tokens_per_s=tokens_done / max(elapsed, 1e-9))
        history.append(metrics)
        bar.update(1)
        bar.set_postfix({k: f"{metrics[k]:.3g}" for k in ("loss", "kd_loss", "ce_loss") if k in metrics}
                        | {"tok/s": f"{metrics['tokens_per_s']:.0f}"})
        if (step + 1) % job.log_every == 0:
            pending.append({"step": step + 1, "split": "train", **{
                k: metrics.get(k) for k in ("loss", "kd_loss", "ce_loss", "lr", "tokens_per_s")}})
        if valid and ((step + 1) % job.eval_every == 0 or step + 1 == job.steps):
            if accelerator.is_main_process:
                ev = evaluate(job, accelerator.unwrap_model(model).model, signal, valid, pad_id,
                              vocab, accelerator.device)
                pending.append({"step": step + 1, "split": "validation", **ev})
            accelerator.wait_for_everyone()
        if store is not None and run_id is not None and (len(pending) >= 50 or step + 1 == end):
            store.log_training_metrics(run_id, pending)
            pending = []
        if ((step + 1) % job.checkpoint_every == 0 or step + 1 == end) and step + 1 < job.steps:
            save_checkpoint(accelerator, job.output_dir, step + 1,
                            {"tokens": tokens_done, "elapsed_s": elapsed})
    bar.close()
    final = {}
    if accelerator.is_main_process and valid:
        final = {f"validation_{k}": v for k, v in evaluate(
            job, accelerator.unwrap_model(model).model, signal, valid, pad_id, vocab,
            accelerator.device).items()}
    if history:
        final.update({f"train_{k}": v for k, v in history[-1].items() if k.endswith("loss")})
    return TrainResult(job.output_dir, end, final, history,
                       tokens_per_s=tokens_done / max(elapsed, 1e-9))
