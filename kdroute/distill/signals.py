"""Where the teacher's signal comes from in a run: nothing (cross-entropy), a live forward pass,
the top-k cache, or teacher-generated answers (sequence level). Also builds the student, since
its config and tokenizer follow the teacher's."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdroute.distill import cache as C
from kdroute.distill.data import encode_pairs, file_hash, read_pairs
from kdroute.distill.job import DistillJob
from kdroute.distill.modeling import (
    build_student,
    check_tokenizers,
    init_from_teacher,
    load_model,
    load_tokenizer,
)
from kdroute.errors import InputError
from kdroute.fingerprint import model_fingerprint
from kdroute.jsonl import write_jsonl


@dataclass
class TeacherSignal:
    kind: str  # none | live | cached
    teacher: Any = None
    cache: C.TeacherCache | None = None

    def forward(self, batch: dict, hidden: bool = False, attention: bool = False):
        """The live teacher's outputs for a batch (no gradients); None in other modes."""
        if self.kind != "live":
            return None
        with torch.no_grad():
            return self.teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                output_hidden_states=hidden, output_attentions=attention)

    def to(self, device) -> None:
        if self.teacher is not None:
            self.teacher.to(device)


@dataclass
class Setup:
    tokenizer: Any
    student: Any
    signal: TeacherSignal
    data_path: Path
    lineage: dict = field(default_factory=dict)  # teacher/data/cache facts for the model card


def _load_teacher(job: DistillJob):
    teacher = load_model(job.teacher, attention=job.attention_weight > 0)
    teacher.eval().requires_grad_(False)
    return teacher


def prepare_signal(job: DistillJob, accelerator, progress: bool = True) -> Setup:
    """Load what the run needs, in the order that fails fastest on bad input."""
    teacher_tok = load_tokenizer(job.teacher) if job.teacher else None
    if job.student_init is not None:
        tokenizer = load_tokenizer(job.student_init)
    elif teacher_tok is not None:
        tokenizer = teacher_tok
    elif job.teacher_cache is not None:
        tokenizer = load_tokenizer(Path(job.teacher_cache) / "tokenizer")  # saved with the cache
    else:
        tokenizer = load_tokenizer(None)
    lineage: dict[str, Any] = {"data": {"path": str(job.data), "sha256": file_hash(job.data)}}
    needs_teacher = job.alpha_kd > 0 or job.hidden_weight > 0 or job.attention_weight > 0
    if job.teacher is not None:
        lineage["teacher"] = {"path": str(job.teacher), "fingerprint": model_fingerprint(job.teacher)}
    teacher, signal, data_path = None, TeacherSignal("none"), Path(job.data)
    if job.teacher_mode in ("live", "cached") and needs_teacher and teacher_tok is not None:
        check_tokenizers(tokenizer, teacher_tok)
    if job.teacher_mode == "live" and job.teacher is not None and needs_teacher:
        teacher = _load_teacher(job)
        signal = TeacherSignal("live", teacher=teacher)
    elif job.teacher_mode == "cached" and (job.teacher or job.teacher_cache) and job.alpha_kd > 0:
        directory, info = _ensure_cache(job, tokenizer, accelerator, progress)
        signal = TeacherSignal("cached", cache=C.TeacherCache(directory))
        lineage["teacher_cache"] = {"path": str(directory), **{
            k: info.get(k) for k in ("k", "temperature", "bytes_per_token", "teacher_fingerprint")}}
        lineage.setdefault("teacher", {"fingerprint": info.get("teacher_fingerprint")})
    elif job.teacher_mode == "sequence" and job.teacher is not None:
        data_path = _ensure_sequence_data(job, teacher_tok, accelerator, progress)
        lineage["sequence_data"] = str(data_path)
    if job.init_from_teacher and teacher is None:
        teacher = _load_teacher(job)
    student = _student(job, tokenizer, teacher)
    if job.init_from_teacher:
        lineage["init_from_teacher_blocks"] = init_from_teacher(student, teacher)
    return Setup(tokenizer, student, signal, data_path, lineage)


def _student(job: DistillJob, tokenizer, teacher):
    teacher_config = None
    if teacher is not None:
        teacher_config = teacher.config
    elif job.teacher is not None:
        from transformers import AutoConfig

        teacher_config = AutoConfig.from_pretrained(job.teacher)
    return build_student(tokenizer, teacher_config, student_init=job.student_init,
                         layers=job.student_layers, width=job.student_width,
                         heads=job.student_heads, seed=job.seed,
                         attention=job.attention_weight > 0)


def _ensure_cache(job: DistillJob, tokenizer, accelerator, progress: bool) -> tuple[Path, dict]:
    """The finished top-k cache folder for this (teacher, tokenizer, data, k, τ), built on the
    main process if missing (or resumed if a build was interrupted)."""
    if job.teacher_cache is not None:
        info = json.loads((Path(job.teacher_cache) / "meta.json").read_text())
        if info.get("data_sha256") != file_hash(job.data) or \
                info.get("tokenizer_fingerprint") != C.tokenizer_fingerprint(tokenizer) or \
                info.get("max_length") != job.max_length:
            raise InputError(f"{job.teacher_cache}: the cache was built for other data, tokenizer "
                             "or max_length; rebuild it with the teacher")
        if float(info["temperature"]) != job.kd_temperature:
            raise InputError(f"{job.teacher_cache}: cached at kd_temperature "
                             f"{info['temperature']}, not {job.kd_temperature}")
        return Path(job.teacher_cache), info
    meta = {"teacher_fingerprint": model_fingerprint(job.teacher),
            "tokenizer_fingerprint": C.tokenizer_fingerprint(tokenizer),
            "data_sha256": file_hash(job.data),
            "max_length": job.max_length}
    key = C.cache_key(meta["teacher_fingerprint"], meta["tokenizer_fingerprint"],
                      meta["data_sha256"], job.top_k, job.kd_temperature, job.max_length)
    directory = Path(job.cache_dir) / f"topk-{key}"
    if not (directory / "meta.json").is_file() and accelerator.is_main_process:
        tokenizer.save_pretrained(directory / "tokenizer")  # the cache is usable on its own
        teacher = _load_teacher(job).to(accelerator.device)
        encoded = encode_pairs(tokenizer, read_pairs(job.data), job.max_length)
        C.build_topk_cache(teacher, encoded, directory, k=job.top_k,
                           temperature=job.kd_temperature, vocab_size=len(tokenizer),
                           pad_id=tokenizer.pad_token_id, meta=meta, progress=progress)
        del teacher
    accelerator.wait_for_everyone()
    return directory, json.loads((directory / "meta.json").read_text())


def _ensure_sequence_data(job: DistillJob, teacher_tok, accelerator, progress: bool) -> Path:
    """Teacher-generated answers to the training prompts, as a prompt/response JSONL (cached)."""
    data_sha = file_hash(job.data)
    key = C.cache_key(model_fingerprint(job.teacher), C.tokenizer_fingerprint(teacher_tok),
                      data_sha, 0, 0.0, job.max_length)
    path = Path(job.cache_dir) / f"sequence-{key}.jsonl"
    if not path.is_file() and accelerator.is_main_process:
        rows = read_pairs(job.data)
        teacher = _load_teacher(job).to(accelerator.device)
        answers = C.generate_responses(teacher, teacher_tok, [r["prompt"] for r in rows],
                                       progress=progress)
        write_jsonl(path, ({**row, "response": answer, "source": "teacher"}
                           for row, answer in zip(rows, answers, strict=True)))
    accelerator.wait_for_everyone()
    return path
