"""What one `kdroute distill` run does: the [distill] config plus command-line choices, checked
before anything heavy is loaded so bad input fails in one line before training starts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, get_args

from kdroute.config import Divergence, TeacherMode
from kdroute.errors import InputError

DIVERGENCES: tuple[str, ...] = get_args(Divergence)
TEACHER_MODES: tuple[str, ...] = get_args(TeacherMode)


@dataclass
class DistillJob:
    data: Path
    output_dir: Path
    teacher: str | None = None  # local model directory ("hf:" stripped); None = cross-entropy only
    teacher_cache: Path | None = None  # a finished top-k cache folder (cached mode, no teacher)
    cache_dir: Path = Path("runs/teacher-cache")
    validation_data: Path | None = None
    # the student: a local directory, or a new model from a config (sizes below; unset = teacher's)
    student_init: Path | None = None
    student_layers: int | None = None
    student_width: int | None = None
    student_heads: int | None = None
    init_from_teacher: bool = False  # copy embeddings and evenly spaced blocks (same width only)
    teacher_mode: str = "live"
    loss: str = "forward_kl"
    kd_temperature: float = 2.0
    alpha_ce: float = 0.5
    alpha_kd: float = 0.5
    jsd_beta: float = 0.5
    skew_alpha: float = 0.1
    hidden_weight: float = 0.0
    hidden_loss: str = "mse"
    layer_map: list[tuple[int, int]] | None = None  # (student, teacher) blocks; None = evenly spaced
    attention_weight: float = 0.0
    top_k: int = 64
    steps: int = 2000
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    max_grad_norm: float = 1.0
    seed: int = 0
    checkpoint_every: int = 500
    eval_every: int = 250
    eval_examples: int = 256
    max_length: int = 128
    train_examples: int | None = None  # a family-balanced subset of the data, drawn by seed; None = all
    log_every: int = 1
    resume: bool = False
    stop_after: int | None = None  # end this invocation after this step (resume later); None = steps
    extra_card: dict[str, Any] = field(default_factory=dict)  # recorded in kdroute_card.json

    @property
    def uses_teacher_logits(self) -> bool:
        """True when the loss needs the teacher's logits (live forward or the top-k cache)."""
        return (self.teacher is not None or self.teacher_cache is not None) and (
            self.teacher_mode in ("live", "cached") and self.alpha_kd > 0)

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    def check(self) -> None:
        """Raise InputError for anything that would fail later; touches only the file system."""
        _require_file(self.data, "training data")
        if self.validation_data is not None:
            _require_file(self.validation_data, "validation data")
        if self.loss not in DIVERGENCES:
            raise InputError(f"unknown loss {self.loss!r}; choose one of {', '.join(DIVERGENCES)}")
        if self.teacher_mode not in TEACHER_MODES:
            raise InputError(f"unknown teacher mode {self.teacher_mode!r}; "
                             f"choose one of {', '.join(TEACHER_MODES)}")
        if self.hidden_loss not in ("mse", "cosine"):
            raise InputError(f"unknown hidden-state loss {self.hidden_loss!r}; choose mse or cosine")
        for name in ("jsd_beta", "skew_alpha"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(f"{name} must be in [0, 1] (got {getattr(self, name)})")
        for name in ("alpha_ce", "alpha_kd", "hidden_weight", "attention_weight", "weight_decay"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0 (got {getattr(self, name)})")
        for name in ("kd_temperature", "lr"):
            if getattr(self, name) <= 0:
                raise InputError(f"{name} must be > 0 (got {getattr(self, name)})")
        for name in ("steps", "batch_size", "grad_accum", "top_k", "max_length",
                     "checkpoint_every", "eval_every", "log_every"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.train_examples is not None and self.train_examples < 1:
            raise InputError(f"train_examples must be >= 1 (got {self.train_examples})")
        self._check_teacher()
        if self.student_init is not None and not (Path(self.student_init) / "config.json").is_file():
            raise InputError(f"{self.student_init}: not a model directory (no config.json)")
        if self.alpha_ce == 0 and not self.uses_teacher_logits:
            raise InputError("alpha_ce = 0 and no teacher logits: the loss would be empty")

    def _check_teacher(self) -> None:
        if self.teacher_cache is not None:
            if self.teacher_mode != "cached":
                raise InputError("--teacher-cache needs teacher_mode = cached")
            if not (Path(self.teacher_cache) / "meta.json").is_file():
                raise InputError(f"{self.teacher_cache}: not a finished teacher cache (no meta.json)")
        elif self.teacher is not None and not (Path(self.teacher) / "config.json").is_file():
            raise InputError(f"{self.teacher}: teacher is not a local model directory (no "
                             "config.json); a remote teacher needs teacher_mode = sequence")
        layer_losses = self.hidden_weight > 0 or self.attention_weight > 0
        if layer_losses and (self.teacher_mode != "live" or self.teacher is None):
            raise InputError("hidden-state and attention losses need a live local teacher "
                             "(teacher_mode = live)")
        if self.init_from_teacher and self.teacher is None:
            raise InputError("--init-from-teacher needs a local teacher")
        if self.teacher_mode == "sequence" and self.teacher is None:
            raise InputError("teacher_mode = sequence needs a teacher to generate the answers")


def _require_file(path: Path, what: str) -> None:
    if not Path(path).is_file():
        raise InputError(f"{path}: {what} not found (a JSONL file of prompt/response rows)")
