"""The distillation loop: one explicit recipe (`DistillRecipe`: setup, train, cleanup) that
composes the pure losses.

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


class DistillRecipe:
    """One run, in torchtune's recipe shape: `setup` loads the teacher signal, data and student
    and builds the optimizer (state on `self`), `train` runs the steps, `cleanup` saves the
    student and closes the run in the ledger. The losses stay pure functions in `losses`; the
    recipe only composes them (`objective`)."""

    def __init__(self, job: DistillJob, store=None, progress: bool = True):
        self.job, self.store, self.progress = job, store, progress
        self.run_id: str | None = None

    # --- setup ---------------------------------------------------------------------------------

    def setup(self) -> None:
        """Everything before the first step, in the order that fails fastest on bad input."""
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        job = self.job
        job.check()
        use_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        # On a machine without an accelerator, `accelerate launch --multi_gpu` starts CPU processes
        # that only join one gloo process group when the Accelerator is told to use the CPU.
        no_device = not torch.cuda.is_available() and not torch.backends.mps.is_available()
        self.accelerator = Accelerator(mixed_precision="bf16" if use_bf16 else "no", cpu=no_device)
        set_seed(job.seed)
        self.prepared = prepare_signal(job, self.accelerator, progress=self.progress)
        self.signal: TeacherSignal = self.prepared.signal
        self._setup_data()
        self._setup_model(self.prepared.student)
        self.start, state = (load_checkpoint(self.accelerator, job.output_dir) if job.resume
                             else (0, {}))
        self.tokens_done, self.elapsed = state.get("tokens", 0), state.get("elapsed_s", 0.0)
        if self.store is not None and self.accelerator.is_main_process:
            self.run_id = self.store.start_run(
                "distill", {**job.to_dict(), "resumed_from_step": self.start}, str(job.output_dir))

    def _setup_data(self) -> None:
        job, tokenizer = self.job, self.prepared.tokenizer
        self.vocab, self.pad_id = len(tokenizer), tokenizer.pad_token_id
        rows = read_pairs(self.prepared.data_path)
        # source[i] is the data file's row behind encoded[i]: the teacher cache covers all rows
        self.source = stratified_subset(rows, job.train_examples, job.seed)
        self.encoded = encode_pairs(tokenizer, [rows[i] for i in self.source], job.max_length)
        if job.train_examples is not None:
            self.prepared.lineage["data"] |= {"train_examples": len(self.source),
                                              "subset_seed": job.seed}
        self.valid = (encode_pairs(tokenizer, read_pairs(job.validation_data), job.max_length)
                      if job.validation_data else [])

    def _setup_model(self, student: nn.Module) -> None:
        job, accelerator = self.job, self.accelerator
        self.projections = None
        if job.hidden_weight > 0:
            t_cfg = self.signal.teacher.config
            n_pairs = len(job.layer_map or L.default_layer_map(student.config.num_hidden_layers,
                                                               t_cfg.num_hidden_layers))
            self.projections = Projections(student.config.hidden_size, t_cfg.hidden_size, n_pairs)
        model = Student(student, self.projections)
        optimizer = torch.optim.AdamW(model.parameters(), lr=job.lr, weight_decay=job.weight_decay)
        self.scheduler = cosine_schedule(optimizer, job.warmup_steps, job.steps)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        accelerator.register_for_checkpointing(self.scheduler)
        self.signal.to(accelerator.device)

    # --- the objective -------------------------------------------------------------------------

    def objective(self, ce, kd=None, hidden=None, attention=None):
        """alpha_ce · CE + alpha_kd · KD + hidden_weight · hidden + attention_weight · attention;
        cross-entropy alone without teacher logits. An absent term adds an exact 0, which leaves
        the value and the gradients bit for bit as they are."""
        j = self.job
        return (L.blend(ce, kd, j.alpha_ce if kd is not None else 1.0, j.alpha_kd)
                + j.hidden_weight * _or_zero(hidden) + j.attention_weight * _or_zero(attention))

    def losses(self, batch: dict, example_ids: list[int], num_tokens: int) -> dict:
        """Losses of one micro-batch, each normalised by the step's `num_tokens`."""
        job, signal = self.job, self.signal
        hidden, attention = job.hidden_weight > 0, job.attention_weight > 0
        out = self.model(batch["input_ids"], batch["attention_mask"], hidden=hidden,
                         attention=attention)
        logits, labels = L.causal_shift(L.slice_vocab(out.logits, self.vocab),
                                        batch["labels"])  # (B, T-1, V)
        parts = {"ce_loss": L.cross_entropy(logits, labels, num_tokens)}
        teacher_out = signal.forward(batch, hidden=hidden, attention=attention)
        kw = {"temperature": job.kd_temperature, "beta": job.jsd_beta, "alpha": job.skew_alpha,
              "num_tokens": num_tokens}
        if signal.kind == "live" and job.alpha_kd > 0:
            t_logits = L.causal_shift(L.slice_vocab(teacher_out.logits, self.vocab),
                                      batch["labels"])[0]
            parts["kd_loss"] = L.kd_loss(logits, t_logits, labels, job.loss, **kw)
        elif signal.kind == "cached":
            values, indices, tails = (x.to(logits.device)
                                      for x in signal.cache.batch(example_ids, labels))
            parts["kd_loss"] = L.topk_kd_loss(logits, values, indices, labels, job.loss,
                                              teacher_tail=tails, **kw)
        if hidden:
            layer_map = job.layer_map or L.default_layer_map(
                len(out.hidden_states) - 1, len(teacher_out.hidden_states) - 1)
            parts["hidden_loss"] = L.hidden_state_loss(
                out.hidden_states, teacher_out.hidden_states, self.projections.weights(), labels,
                layer_map, job.hidden_loss, num_tokens)
        if attention:
            layer_map = job.layer_map or L.default_layer_map(
                len(out.attentions), len(teacher_out.attentions))
            parts["attention_loss"] = L.attention_kl_loss(out.attentions, teacher_out.attentions,
                                                          labels, layer_map, num_tokens)
        parts["loss"] = self.objective(parts["ce_loss"], parts.get("kd_loss"),
                                       parts.get("hidden_loss"), parts.get("attention_loss"))
        return parts

    # --- train ---------------------------------------------------------------------------------

    def train_step(self, step: int) -> dict[str, float]:
        """One optimizer step over grad_accum micro-batches on every process."""
        job, accelerator = self.job, self.accelerator
        world, rank = accelerator.num_processes, accelerator.process_index
        per_step = job.batch_size * job.grad_accum * world
        ids = step_indices(len(self.encoded), job.seed, step, per_step)
        shares = micro_batches(ids, job.batch_size, job.grad_accum, world, rank)
        batches = [{k: v.to(accelerator.device)
                    for k, v in collate([self.encoded[i] for i in s], self.pad_id).items()}
                   for s in shares]
        counts = torch.tensor([sum(L.count_valid(b["labels"][:, 1:]) for b in batches),
                               sum(int(b["attention_mask"].sum()) for b in batches)],
                              device=accelerator.device)
        counts = accelerator.reduce(counts, reduction="sum")  # learned, input tokens: all processes
        totals: dict[str, float] = {}
        for m, (batch, share) in enumerate(zip(batches, shares, strict=True)):
            sync = m == len(batches) - 1
            with contextlib.nullcontext() if sync else accelerator.no_sync(self.model):
                parts = self.losses(batch, [self.source[i] for i in share], int(counts[0]))
                # DDP averages gradients over processes; the loss is already a global mean.
                accelerator.backward(parts["loss"] * world)
            for k, v in parts.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach())
        accelerator.clip_grad_norm_(self.model.parameters(), job.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        summed = accelerator.reduce(torch.tensor(list(totals.values()), device=accelerator.device),
                                    reduction="sum")  # each process holds its share of the mean
        metrics = dict(zip(totals, summed.tolist(), strict=True))
        metrics["input_tokens"] = int(counts[1])
        return metrics

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation CE (and KD with a live teacher) over the first eval_examples examples."""
        job, signal = self.job, self.signal
        model = self.accelerator.unwrap_model(self.model).model
        model.eval()
        chunk = self.valid[: job.eval_examples]
        n = sum(1 for e in chunk for x in e.labels[1:] if x != L.IGNORE_INDEX)
        totals = {"ce_loss": 0.0}
        for start in range(0, len(chunk), job.batch_size):
            batch = {k: v.to(self.accelerator.device) for k, v in
                     collate(chunk[start: start + job.batch_size], self.pad_id).items()}
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            logits, labels = L.causal_shift(L.slice_vocab(out.logits, self.vocab), batch["labels"])
            totals["ce_loss"] += float(L.cross_entropy(logits, labels, n))
            if signal.kind == "live" and job.alpha_kd > 0:
                t_logits = L.causal_shift(L.slice_vocab(signal.forward(batch).logits, self.vocab),
                                          batch["labels"])[0]
                totals["kd_loss"] = totals.get("kd_loss", 0.0) + float(L.kd_loss(
                    logits, t_logits, labels, job.loss, temperature=job.kd_temperature,
                    beta=job.jsd_beta, alpha=job.skew_alpha, num_tokens=n))
        model.train()
        totals["loss"] = self.objective(totals["ce_loss"], totals.get("kd_loss"))
        return totals

    def train(self) -> TrainResult:
        """The steps from `start` (0, or the checkpoint's) to `steps` or `stop_after`."""
        from tqdm.auto import tqdm

        job, accelerator = self.job, self.accelerator
        history, self.pending = [], []
        bar = tqdm(total=job.steps, initial=self.start, unit="step",
                   desc="distill" if self.signal.kind != "none" else "train",
                   disable=not (self.progress and accelerator.is_main_process))
        self.model.train()
        end = job.steps if job.stop_after is None else min(job.steps, job.stop_after)
        for step in range(self.start, end):
            began = time.perf_counter()
            metrics = self.train_step(step)
            self.elapsed += time.perf_counter() - began
            self.tokens_done += metrics.pop("input_tokens")
            metrics.update(step=step + 1, lr=self.scheduler.get_last_lr()[0],
                           tokens_per_s=self.tokens_done / max(self.elapsed, 1e-9))
            history.append(metrics)
            bar.update(1)
            bar.set_postfix({k: f"{metrics[k]:.3g}" for k in ("loss", "kd_loss", "ce_loss")
                             if k in metrics} | {"tok/s": f"{metrics['tokens_per_s']:.0f}"})
            self._record(step + 1, end, metrics)
        bar.close()
        final = {}
        if accelerator.is_main_process and self.valid:
            final = {f"validation_{k}": v for k, v in self.evaluate().items()}
        if history:
            final.update({f"train_{k}": v for k, v in history[-1].items() if k.endswith("loss")})
        return TrainResult(job.output_dir, end, final, history,
                           tokens_per_s=self.tokens_done / max(self.elapsed, 1e-9))

    def _record(self, done: int, end: int, metrics: dict) -> None:
        """After step `done` (1-based): log, validate, flush metrics to the ledger, checkpoint."""
        job, accelerator = self.job, self.accelerator
        if done % job.log_every == 0:
            self.pending.append({"step": done, "split": "train", **{
                k: metrics.get(k) for k in ("loss", "kd_loss", "ce_loss", "lr", "tokens_per_s")}})
        if self.valid and (done % job.eval_every == 0 or done == job.steps):
            if accelerator.is_main_process:
                self.pending.append({"step": done, "split": "validation", **self.evaluate()})
            accelerator.wait_for_everyone()
        if self.run_id is not None and (len(self.pending) >= 50 or done == end):
            self.store.log_training_metrics(self.run_id, self.pending)
            self.pending = []
        if (done % job.checkpoint_every == 0 or done == end) and done < job.steps:
            save_checkpoint(accelerator, job.output_dir, done,
                            {"tokens": self.tokens_done, "elapsed_s": self.elapsed})

    # --- cleanup -------------------------------------------------------------------------------

    def cleanup(self, result: TrainResult) -> TrainResult:
        """Save the student, its tokenizer and card, and mark the run done."""
        from kdroute.distill.card import save_student

        accelerator = self.accelerator
        student = accelerator.unwrap_model(self.model).model
        if accelerator.is_main_process:
            save_student(self.job, student, self.prepared.tokenizer, result, self.prepared)
            if self.run_id is not None:
                self.store.finish_run(self.run_id)
        accelerator.wait_for_everyone()
        result.params, result.run_id = count_parameters(student), self.run_id
        return result

    def fail(self, exc: BaseException) -> None:
        if self.run_id is not None:
            self.store.fail_run(self.run_id, f"{type(exc).__name__}: {exc}")


def _or_zero(term):
    return 0.0 if term is None else term


def train(job: DistillJob, store=None, progress: bool = True) -> TrainResult:
    """Run the whole recipe; `store` (a kdroute Store) receives the run and per-step metrics."""
    recipe = DistillRecipe(job, store, progress)
    recipe.setup()
    try:
        result = recipe.train()
    except BaseException as exc:
        recipe.fail(exc)
        raise
    return recipe.cleanup(result)
