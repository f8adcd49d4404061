"""Distillation losses, tested by their mathematical properties and against a float64 reference."""

import math

import pytest
import torch

from kdroute.distill import losses as L

KINDS = L.DIVERGENCES


def _random(b=2, t=5, v=11, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(b, t, v, generator=g) * scale
    teacher = torch.randn(b, t, v, generator=g) * scale
    labels = torch.randint(0, v, (b, t), generator=g)
    labels[0, :2] = L.IGNORE_INDEX  # some masked positions
    return student, teacher, labels


def _softmax64(row, tau):
    m = max(x / tau for x in row)
    e = [math.exp(x / tau - m) for x in row]
    s = sum(e)
    return [x / s for x in e]


def _kl64(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def _reference(kind, p, q, beta, alpha):
    """Plain-Python float64 definitions, one token at a time."""
    if kind == "forward_kl":
        return _kl64(p, q)
    if kind == "reverse_kl":
        return _kl64(q, p)
    if kind == "jsd":
        m = [beta * a + (1 - beta) * b for a, b in zip(p, q, strict=True)]
        return beta * _kl64(p, m) + (1 - beta) * _kl64(q, m)
    if kind == "skew_kl":
        return _kl64(p, [alpha * a + (1 - alpha) * b for a, b in zip(p, q, strict=True)])
    if kind == "skew_reverse_kl":
        return _kl64(q, [alpha * b + (1 - alpha) * a for a, b in zip(p, q, strict=True)])
    return 0.5 * sum(abs(a - b) for a, b in zip(p, q, strict=True))


@pytest.mark.parametrize("kind", KINDS)
def test_matches_float64_reference_on_random_logits(kind):
    student, teacher, labels = _random()
    tau, beta, alpha = 2.0, 0.3, 0.2
    got = L.kd_loss(student, teacher, labels, kind, temperature=tau, beta=beta, alpha=alpha)
    total, n = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            if labels[b, t] == L.IGNORE_INDEX:
                continue
            p = _softmax64(teacher[b, t].double().tolist(), tau)
            q = _softmax64(student[b, t].double().tolist(), tau)
            total += _reference(kind, p, q, beta, alpha)
            n += 1
    assert got.item() == pytest.approx(tau**2 * total / n, rel=1e-4, abs=1e-6)


def test_cross_entropy_matches_reference():
    student, _, labels = _random()
    total, n = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            if labels[b, t] != L.IGNORE_INDEX:
                total -= math.log(_softmax64(student[b, t].double().tolist(), 1.0)[labels[b, t]])
                n += 1
    assert L.cross_entropy(student, labels).item() == pytest.approx(total / n, rel=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_zero_for_identical_and_non_negative_otherwise(kind):
    student, teacher, labels = _random(seed=1)
    same = L.kd_loss(teacher, teacher.clone(), labels, kind, temperature=1.5)
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    for seed in range(5):
        s, t, lab = _random(seed=seed + 10)
        assert L.kd_loss(s, t, lab, kind, temperature=1.0).item() > 0


@pytest.mark.parametrize("kind", KINDS)
def test_fully_masked_labels_give_zero_and_finite_gradients(kind):
    student, teacher, labels = _random()
    student.requires_grad_(True)
    labels[:] = L.IGNORE_INDEX
    loss = L.kd_loss(student, teacher, labels, kind) + L.cross_entropy(student, labels)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(student.grad).all()


def test_jsd_beta_limits_are_forward_and_reverse_kl():
    s, t, lab = _random(seed=2, scale=1.0)
    fwd = L.kd_loss(s, t, lab, "forward_kl")
    rev = L.kd_loss(s, t, lab, "reverse_kl")
    assert L.kd_loss(s, t, lab, "jsd", beta=0.0).item() == pytest.approx(fwd.item())
    assert L.kd_loss(s, t, lab, "jsd", beta=1.0).item() == pytest.approx(rev.item())
    # The endpoints are the limits of JSD_β / (β(1−β)), i.e. the mixture is built the right way.
    eps = 1e-6
    near0 = L.kd_loss(s.double(), t.double(), lab, "jsd", beta=eps) / (eps * (1 - eps))
    near1 = L.kd_loss(s.double(), t.double(), lab, "jsd", beta=1 - eps) / (eps * (1 - eps))
    assert near0.item() == pytest.approx(fwd.item(), rel=2e-3)
    assert near1.item() == pytest.approx(rev.item(), rel=2e-3)


def test_skew_alpha_limits():
    s, t, lab = _random(seed=3)
    fwd, rev = L.kd_loss(s, t, lab, "forward_kl"), L.kd_loss(s, t, lab, "reverse_kl")
    assert L.kd_loss(s, t, lab, "skew_kl", alpha=0.0).item() == pytest.approx(fwd.item())
    assert L.kd_loss(s, t, lab, "skew_reverse_kl", alpha=0.0).item() == pytest.approx(rev.item())
    assert L.kd_loss(s, t, lab, "skew_kl", alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)
    # skewing towards the teacher shrinks the divergence monotonically
    values = [L.kd_loss(s, t, lab, "skew_kl", alpha=a).item() for a in (0.0, 0.3, 0.6, 0.9)]
    assert values == sorted(values, reverse=True)


@pytest.mark.parametrize("kind", KINDS)
def test_topk_loss_converges_to_dense_as_k_grows(kind):
    s, t, lab = _random(v=32, seed=4, scale=2.0)
    dense = L.kd_loss(s, t, lab, kind, temperature=2.0).item()
    errors = []
    for k in (1, 4, 16, 32):
        values, indices = L.teacher_topk(t, k, temperature=2.0)
        sparse = L.topk_kd_loss(s, values, indices, lab, kind, temperature=2.0).item()
        errors.append(abs(sparse - dense))
    assert errors[-1] == pytest.approx(0.0, abs=1e-4)
    assert errors[0] > errors[-1] and errors[1] >= errors[2] - 1e-6


def test_topk_gradient_is_finite_at_full_vocab():
    s, t, lab = _random(v=16)
    s.requires_grad_(True)
    values, indices = L.teacher_topk(t, 16)
    L.topk_kd_loss(s, values, indices, lab).backward()
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("kind", ["forward_kl", "jsd", "tvd"])
def test_accumulating_four_micro_batches_equals_one_big_batch(kind):
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 13)
    x = torch.randn(8, 6, 8)
    teacher = torch.randn(8, 6, 13)
    labels = torch.randint(0, 13, (8, 6))
    labels[torch.rand(8, 6) < 0.4] = L.IGNORE_INDEX  # uneven valid counts per micro-batch

    def objective(sl, n):
        logits = head(x[sl])
        ce = L.cross_entropy(logits, labels[sl], num_tokens=n)
        kd = L.kd_loss(logits, teacher[sl], labels[sl], kind, temperature=2.0, num_tokens=n)
        return L.blend(ce, kd, 0.3, 0.7)

    objective(slice(None), None).backward()
    big = head.weight.grad.clone()
    head.zero_grad()
    n = L.count_valid(labels)
    for i in range(4):
        objective(slice(2 * i, 2 * i + 2), n).backward()
    assert torch.allclose(head.weight.grad, big, atol=1e-6)


def test_vocab_padding_is_sliced_and_real_mismatch_refused():
    s, t, lab = _random(v=10)
    padded = torch.cat([t, torch.full((2, 5, 6), -1e4)], dim=-1)
    a, b = L.align_vocab(s, padded, 10)
    assert L.kd_loss(a, b, lab).item() == pytest.approx(L.kd_loss(s, t, lab).item())
    with pytest.raises(L.IncompatibleVocabError):
        L.kd_loss(s, padded, lab)
    with pytest.raises(L.IncompatibleVocabError):
        L.align_vocab(s, padded, 12)


def test_hidden_state_loss_properties():
    torch.manual_seed(0)
    labels = torch.randint(0, 5, (2, 4))
    labels[1] = L.IGNORE_INDEX
    teacher = [torch.randn(2, 5, 6) for _ in range(5)]  # embeddings + 4 blocks
    layer_map = L.default_layer_map(2, 4)
    assert layer_map == [(1, 2), (2, 4)]
    eye = torch.eye(6)
    student = [teacher[0], teacher[2], teacher[4]]  # student blocks equal to mapped teacher blocks
    for kind in ("mse", "cosine"):
        zero = L.hidden_state_loss(student, teacher, [eye, eye], labels, layer_map, kind)
        assert zero.item() == pytest.approx(0.0, abs=1e-6)
    proj = torch.randn(6, 3, requires_grad=True)
    small = [torch.randn(2, 5, 3) for _ in range(3)]
    loss = L.hidden_state_loss(small, teacher, [proj, proj], labels, layer_map, "mse")
    loss.backward()
    assert loss.item() > 0 and proj.grad.abs().sum() > 0
    # brute force: mean over dims of the squared error, averaged over pairs and valid tokens
    ref = sum(((small[s][0, :4] @ proj.T - teacher[t][0, :4]) ** 2).mean(-1).sum()
              for s, t in layer_map) / 2 / 4
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_attention_kl_properties():
    torch.manual_seed(0)
    labels = torch.randint(0, 5, (2, 3))
    a = torch.softmax(torch.randn(2, 2, 4, 4), -1)
    b = torch.softmax(torch.randn(2, 2, 4, 4), -1)
    assert L.attention_kl_loss([a], [a.clone()], labels, [(1, 1)]).item() == pytest.approx(0, abs=1e-6)
    assert L.attention_kl_loss([a], [b], labels, [(1, 1)]).item() > 0
    with pytest.raises(ValueError, match="head counts"):
        L.attention_kl_loss([a], [torch.softmax(torch.randn(2, 4, 4, 4), -1)], labels, [(1, 1)])


def test_topk_with_stored_tail_survives_fp16_rounding():
    s, t, lab = _random(v=32, seed=5, scale=1.0)
    dense = L.kd_loss(s, t, lab, temperature=2.0).item()
    values, indices = L.teacher_topk(t, 32, temperature=2.0)
    rounded = values.half()
    stored = L.topk_kd_loss(s, rounded, indices, lab, teacher_tail=L.tail_log_prob(values),
                            temperature=2.0).item()
    assert stored == pytest.approx(dense, rel=1e-2)
    values8, indices8 = L.teacher_topk(t, 8, temperature=2.0)
    exact = L.topk_kd_loss(s, values8, indices8, lab, temperature=2.0).item()
    with_tail = L.topk_kd_loss(s, values8.half(), indices8, lab, temperature=2.0,
                               teacher_tail=L.tail_log_prob(values8)).item()
    assert with_tail == pytest.approx(exact, rel=1e-2)
