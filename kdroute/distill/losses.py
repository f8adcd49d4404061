"""Distillation losses as pure functions of tensors.

Conventions shared by every function here:

- `logits` are next-token logits already aligned with `labels` (use `causal_shift` first):
  student and teacher logits are (B, T, V), labels are (B, T) with IGNORE_INDEX (-100) where
  no loss is taken.
- Every token-level loss returns the SUM over valid tokens divided by `num_tokens`; pass the
  number of valid tokens of the whole gradient-accumulation batch (all micro-batches, all
  processes) so that accumulating 4 micro-batches equals one big batch exactly. Left as None it
  is the batch's own count. A fully masked batch gives 0 (never NaN).
- Divergences compare the teacher distribution p and the student distribution q, both softened
  by the same temperature τ (the loss temperature, never a sampling temperature), and are scaled
  by τ² so their gradients keep the size of the hard-label loss when τ changes (Hinton et al.).
- Arithmetic is in float32 (or float64 if given) whatever the model dtype.

The recipe only composes these: `alpha_ce * ce + alpha_kd * kd (+ hidden + attention terms)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import get_args

import torch
import torch.nn.functional as F

from kdroute.config import Divergence
from kdroute.distill.data import IGNORE_INDEX  # where labels get it

DIVERGENCES: tuple[str, ...] = get_args(Divergence)
_TAIL_EPS = 1e-12  # floor of a tail bucket's mass, so log(0) never reaches the gradient


class IncompatibleVocabError(ValueError):
    """Teacher and student logits do not share a vocabulary."""


def _f32(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (bf16/fp16 logits are upcast; float64 stays float64)."""
    return x if x.dtype == torch.float64 else x.float()


def causal_shift(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Align position t's logits with token t+1: (B, T, V), (B, T) -> (B, T-1, V), (B, T-1)."""
    return logits[:, :-1, :], labels[:, 1:]


def valid_mask(labels: torch.Tensor) -> torch.Tensor:
    """(B, T) int labels -> (B, T) bool, True where a loss is taken."""
    return labels != IGNORE_INDEX


def count_valid(labels: torch.Tensor) -> int:
    return int(valid_mask(labels).sum())


def slice_vocab(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Drop padding rows of an embedding matrix: (..., V_padded) -> (..., vocab_size)."""
    if logits.shape[-1] < vocab_size:
        raise IncompatibleVocabError(
            f"logits have {logits.shape[-1]} entries, fewer than the tokenizer's {vocab_size}")
    return logits[..., :vocab_size]


def align_vocab(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Slice both (B, T, V_s), (B, T, V_t) to the tokenizer's true size when they differ only by
    padding; anything else cannot be compared token by token."""
    return slice_vocab(student_logits, vocab_size), slice_vocab(teacher_logits, vocab_size)


def _reduce(per_token: torch.Tensor, labels: torch.Tensor, num_tokens: int | None) -> torch.Tensor:
    """(B, T) per-token values -> masked sum / num_tokens (a scalar; 0 when nothing is valid)."""
    mask = valid_mask(labels)
    total = torch.where(mask, per_token, torch.zeros_like(per_token)).sum()
    n = int(mask.sum()) if num_tokens is None else num_tokens
    return total / max(n, 1)


# --- divergences between two distributions given as log-probs (..., K) -> (...) -------------

def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = Σ p (log p − log q); terms with p = 0 are 0 (no 0·∞ NaN)."""
    p = log_p.exp()
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return terms.sum(-1)


def _log_mix(log_a: torch.Tensor, log_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """log(w·a + (1−w)·b) computed stably from log a and log b."""
    if weight_a <= 0:
        return log_b
    if weight_a >= 1:
        return log_a
    return torch.logaddexp(log_a + math.log(weight_a), log_b + math.log1p(-weight_a))


def divergence(log_p: torch.Tensor, log_q: torch.Tensor, kind: str, *, beta: float = 0.5,
               alpha: float = 0.1) -> torch.Tensor:
    """Per-row divergence between teacher p and student q given as log-probs (..., K) -> (...).

    forward_kl       KL(p || q)                                  (mode covering)
    reverse_kl       KL(q || p)                                  (mode seeking)
    jsd              β·KL(p || m) + (1−β)·KL(q || m), m = β·p + (1−β)·q; β=0 and β=1 are
                     defined as forward and reverse KL (the limits of JSD_β / (β(1−β)))
    skew_kl          KL(p || α·p + (1−α)·q)      (DistiLLM; α=0 is forward KL)
    skew_reverse_kl  KL(q || α·q + (1−α)·p)      (α=0 is reverse KL)
    tvd              ½ Σ |p − q|
    """
    if kind == "forward_kl":
        return _kl(log_p, log_q)
    if kind == "reverse_kl":
        return _kl(log_q, log_p)
    if kind == "jsd":
        if beta <= 0:
            return _kl(log_p, log_q)
        if beta >= 1:
            return _kl(log_q, log_p)
        log_m = _log_mix(log_p, log_q, beta)
        return beta * _kl(log_p, log_m) + (1 - beta) * _kl(log_q, log_m)
    if kind == "skew_kl":
        return _kl(log_p, _log_mix(log_p, log_q, alpha))
    if kind == "skew_reverse_kl":
        return _kl(log_q, _log_mix(log_q, log_p, alpha))
    if kind == "tvd":
        return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)
    raise ValueError(f"unknown divergence {kind!r}; choose one of {', '.join(DIVERGENCES)}")


# --- token-level losses --------------------------------------------------------------------

def cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                  num_tokens: int | None = None) -> torch.Tensor:
    """Hard-label loss. logits (B, T, V), labels (B, T) -> scalar Σ_valid −log q(label) / n."""
    per_token = F.cross_entropy(_f32(logits).transpose(1, 2), labels.clamp(min=0),
                                reduction="none")  # (B, T)
    return _reduce(per_token, labels, num_tokens)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            kind: str = "forward_kl", *, temperature: float = 1.0, beta: float = 0.5,
            alpha: float = 0.1, num_tokens: int | None = None) -> torch.Tensor:
    """Dense KD loss. student/teacher logits (B, T, V), labels (B, T) -> scalar.

    Both distributions are softmax(logits / τ); the result is τ² · Σ_valid D(p_t, q_t) / n.
    """
    if student_logits.shape != teacher_logits.shape:
        raise IncompatibleVocabError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ; slice padding with align_vocab first")
    log_q = F.log_softmax(_f32(student_logits) / temperature, dim=-1)
    log_p = F.log_softmax(_f32(teacher_logits).detach() / temperature, dim=-1)
    per_token = divergence(log_p, log_q, kind, beta=beta, alpha=alpha)  # (B, T)
    return temperature ** 2 * _reduce(per_token, labels, num_tokens)


def teacher_topk(teacher_logits: torch.Tensor, k: int,
                 temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """What the teacher cache stores: (B, T, V) logits -> top-k log-probs at τ and their token
    ids, both (B, T, k), sorted by decreasing probability."""
    log_p = F.log_softmax(_f32(teacher_logits) / temperature, dim=-1)
    values, indices = log_p.topk(min(k, log_p.shape[-1]), dim=-1)
    return values, indices


def _with_tail(log_top: torch.Tensor) -> torch.Tensor:
    """(…, k) log-probs of k tokens -> (…, k+1) with a last bucket holding the missing mass."""
    top_mass = log_top.logsumexp(-1, keepdim=True).exp()
    tail = (1 - top_mass).clamp(min=_TAIL_EPS).log()
    return torch.cat([log_top, tail], dim=-1)


def tail_log_prob(log_top: torch.Tensor) -> torch.Tensor:
    """log of the mass outside the top k: (…, k) -> (…); computed in float32 before the top-k
    log-probs are rounded for storage, since 1 − Σ of rounded values is mostly rounding error."""
    return _with_tail(_f32(log_top))[..., -1]


def topk_kd_loss(student_logits: torch.Tensor, teacher_log_probs: torch.Tensor,
                 teacher_indices: torch.Tensor, labels: torch.Tensor, kind: str = "forward_kl",
                 *, teacher_tail: torch.Tensor | None = None, temperature: float = 1.0,
                 beta: float = 0.5, alpha: float = 0.1,
                 num_tokens: int | None = None) -> torch.Tensor:
    """Sparse KD loss against a cached teacher.

    student_logits (B, T, V); teacher_log_probs and teacher_indices (B, T, k) from `teacher_topk`
    at the same τ; teacher_tail (B, T), optional, the stored `tail_log_prob` (else 1 − Σ top-k);
    labels (B, T) -> scalar. Both distributions are collapsed onto the teacher's k tokens plus
    one tail bucket for the rest of the mass, and compared there, so the loss equals the dense
    one when k = V.
    """
    log_q_full = F.log_softmax(_f32(student_logits) / temperature, dim=-1)  # (B, T, V)
    log_q = _with_tail(log_q_full.gather(-1, teacher_indices.long()))  # (B, T, k+1)
    if teacher_tail is None:
        log_p = _with_tail(_f32(teacher_log_probs))  # (B, T, k+1)
    else:  # stored values were rounded: renormalise the k+1 buckets
        log_p = torch.cat([_f32(teacher_log_probs), _f32(teacher_tail).unsqueeze(-1)], dim=-1)
        log_p = log_p - log_p.logsumexp(-1, keepdim=True)
    per_token = divergence(log_p, log_q, kind, beta=beta, alpha=alpha)  # (B, T)
    return temperature ** 2 * _reduce(per_token, labels, num_tokens)


def blend(ce: torch.Tensor, kd: torch.Tensor | None, alpha_ce: float,
          alpha_kd: float) -> torch.Tensor:
    """The training objective: alpha_ce · CE(hard labels) + alpha_kd · KD."""
    return alpha_ce * ce if kd is None else alpha_ce * ce + alpha_kd * kd


# --- intermediate layers -------------------------------------------------------------------

def default_layer_map(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """Evenly spaced (student_layer, teacher_layer) pairs, 1-based block outputs: the student's
    i-th block is matched with the teacher's round(i · n_teacher / n_student)-th."""
    return [(i, max(1, round(i * n_teacher / n_student))) for i in range(1, n_student + 1)]


def hidden_state_loss(student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor],
                      projections: Sequence[torch.Tensor], labels: torch.Tensor,
                      layer_map: Sequence[tuple[int, int]], kind: str = "mse",
                      num_tokens: int | None = None) -> torch.Tensor:
    """Match mapped hidden states through learned bias-free projections.

    student_hidden[i] (B, T, d_s) and teacher_hidden[j] (B, T, d_t) are per-layer hidden states
    (index 0 = embeddings, as Hugging Face returns them); projections[n] (d_t, d_s) maps the n-th
    pair of `layer_map`; labels (B, T) select the positions (already shifted like the logits, so
    position t is the state that predicts token t+1). MSE is the mean squared error per
    dimension; cosine is 1 − cos. The result is averaged over the pairs, summed over valid
    positions and divided by num_tokens.
    """
    if kind not in ("mse", "cosine"):
        raise ValueError(f"unknown hidden-state loss {kind!r}; choose mse or cosine")
    if len(projections) != len(layer_map):
        raise ValueError(f"{len(layer_map)} layer pairs but {len(projections)} projections")
    per_token = 0
    for (s, t), weight in zip(layer_map, projections, strict=True):
        h_s = student_hidden[s][:, : labels.shape[1]].float() @ weight.float().T  # (B, T, d_t)
        h_t = teacher_hidden[t][:, : labels.shape[1]].float().detach()  # (B, T, d_t)
        if kind == "mse":
            per_token = per_token + (h_s - h_t).pow(2).mean(-1)
        else:
            per_token = per_token + 1 - F.cosine_similarity(h_s, h_t, dim=-1)
    return _reduce(per_token / len(layer_map), labels, num_tokens)


def attention_kl_loss(student_attn: Sequence[torch.Tensor], teacher_attn: Sequence[torch.Tensor],
                      labels: torch.Tensor, layer_map: Sequence[tuple[int, int]],
                      num_tokens: int | None = None) -> torch.Tensor:
    """KL(teacher attention || student attention) of mapped layers with equal head counts.

    student_attn[i-1] and teacher_attn[j-1] are (B, H, T, T) attention probabilities of the
    1-based blocks of `layer_map` (eager attention only: fused kernels do not return them); each
    query row is a distribution over keys. The KL is averaged over heads and pairs, summed over
    valid query positions (labels (B, T), shifted) and divided by num_tokens.
    """
    per_token = 0
    for s, t in layer_map:
        a_s, a_t = student_attn[s - 1], teacher_attn[t - 1]
        if a_s.shape[1] != a_t.shape[1]:
            raise ValueError(f"attention KL needs equal head counts: student layer {s} has "
                             f"{a_s.shape[1]}, teacher layer {t} has {a_t.shape[1]}")
        n = labels.shape[1]
        log_q = a_s[:, :, :n, :].float().clamp(min=1e-12).log()
        log_p = a_t[:, :, :n, :].float().detach().clamp(min=1e-12).log()
        per_token = per_token + _kl(log_p, log_q).mean(1)  # (B, T)
    return _reduce(per_token / len(layer_map), labels, num_tokens)
