"""Loading the teacher, building or loading the student, and the checks between them."""

from __future__ import annotations

import copy
import re
from pathlib import Path

from kdroute.errors import InputError

_BLOCK = re.compile(r"\.(h|layers|layer|blocks)\.(\d+)\.")


def load_tokenizer(path: str | Path | None):
    """The tokenizer of a local model directory, or kdroute's char tokenizer for a new model."""
    if path is None:
        from kdroute.tinymodels import build_char_tokenizer

        return build_char_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def load_model(path: str | Path, attention: bool = False):
    """A causal LM from a local directory (eager attention when attention maps are needed)."""
    from transformers import AutoModelForCausalLM

    kwargs = {"attn_implementation": "eager"} if attention else {}
    return AutoModelForCausalLM.from_pretrained(path, **kwargs)


def same_tokenizer(a, b) -> bool:
    """Token-by-token losses need identical vocabularies (ids mean the same strings)."""
    return a.get_vocab() == b.get_vocab()


def check_tokenizers(student_tok, teacher_tok) -> None:
    if not same_tokenizer(student_tok, teacher_tok):
        raise InputError(
            "the student and teacher tokenizers differ, so their logits cannot be compared token by "
            "token; use teacher_mode = sequence (the student learns the teacher's generated answers)")


def build_student(tokenizer, teacher_config=None, *, student_init: Path | None = None,
                  layers: int | None = None, width: int | None = None, heads: int | None = None,
                  seed: int = 0, attention: bool = False):
    """The student: loaded from `student_init`, else a new random model whose config is the
    teacher's (or kdroute's tiny default) with the given layers/width/heads."""
    import torch
    from transformers import AutoModelForCausalLM

    if student_init is not None:
        return load_model(student_init, attention)
    if teacher_config is not None:
        config = copy.deepcopy(teacher_config)
    else:
        from kdroute.tinymodels import tiny_config

        config = tiny_config(len(tokenizer))
    for key, value in (("num_hidden_layers", layers), ("hidden_size", width),
                       ("num_attention_heads", heads)):
        if value is not None:
            setattr(config, key, value)
    if config.hidden_size % config.num_attention_heads:
        raise InputError(f"student width {config.hidden_size} is not divisible by its "
                         f"{config.num_attention_heads} heads")
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager")


def init_from_teacher(student, teacher) -> list[int]:
    """Copy the teacher's non-block weights and evenly spaced blocks into a student of the same
    width (e.g. 2 of 4 blocks -> teacher blocks 1 and 3, 0-based 0 and 3). Returns the teacher
    block used for each student block."""
    n_s, n_t = student.config.num_hidden_layers, teacher.config.num_hidden_layers
    if student.config.hidden_size != teacher.config.hidden_size:
        raise InputError("--init-from-teacher needs the student's width to equal the teacher's "
                         f"({student.config.hidden_size} != {teacher.config.hidden_size})")
    chosen = [round(i * (n_t - 1) / max(n_s - 1, 1)) for i in range(n_s)]
    teacher_state = teacher.state_dict()
    new_state = {}
    for key in student.state_dict():
        match = _BLOCK.search(key)
        source = key
        if match:
            block = chosen[int(match.group(2))]
            source = key[: match.start()] + f".{match.group(1)}.{block}." + key[match.end():]
        new_state[key] = teacher_state[source].clone()
    student.load_state_dict(new_state)
    return chosen
