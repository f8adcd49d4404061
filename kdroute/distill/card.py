"""The student as the next stages read it: `save_pretrained` weights, the tokenizer, and
`kdroute_card.json` with its lineage (teacher, data, losses, steps, final metrics)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from kdroute.tinymodels import count_parameters

CARD_NAME = "kdroute_card.json"


def build_card(job, model, result, lineage: dict) -> dict:
    distilled = lineage.get("teacher") is not None and (job.alpha_kd > 0 or job.hidden_weight > 0
                                                         or job.attention_weight > 0)
    return {
        "kind": "student" if distilled else "cross_entropy",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": count_parameters(model),
        "architecture": {k: getattr(model.config, k, None) for k in (
            "model_type", "num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size")},
        "teacher": lineage.get("teacher"),
        "teacher_mode": job.teacher_mode if distilled or lineage.get("sequence_data") else None,
        "data": lineage.get("data"),
        **{k: v for k, v in lineage.items() if k not in ("teacher", "data")},
        "losses": {
            "alpha_ce": job.alpha_ce if distilled else 1.0,
            "alpha_kd": job.alpha_kd if distilled else 0.0,
            "kd_loss": job.loss if distilled else None,
            "kd_temperature": job.kd_temperature if distilled else None,
            "jsd_beta": job.jsd_beta, "skew_alpha": job.skew_alpha,
            "hidden_weight": job.hidden_weight, "hidden_loss": job.hidden_loss,
            "attention_weight": job.attention_weight,
            "top_k": job.top_k if job.teacher_mode == "cached" else None,
        },
        "training": {"steps": result.steps, "batch_size": job.batch_size,
                     "grad_accum": job.grad_accum, "lr": job.lr, "warmup_steps": job.warmup_steps,
                     "max_length": job.max_length, "seed": job.seed,
                     "tokens_per_s": round(result.tokens_per_s, 1)},
        "final_metrics": result.final_metrics,
        **job.extra_card,
    }


def save_student(job, model, tokenizer, result, setup) -> dict:
    """Write the model, tokenizer and card to job.output_dir; return the card."""
    out = Path(job.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    card = build_card(job, model, result, setup.lineage)
    (out / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    return card


def read_card(path: str | Path) -> dict | None:
    file = Path(path) / CARD_NAME
    return json.loads(file.read_text()) if file.is_file() else None
