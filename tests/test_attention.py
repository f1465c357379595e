"""The attention kernels against plain, slow implementations of the papers' formulas.

References are written here from the papers, independently of ``aalib.attention``:
explicit per-pair logits with the relative offsets looked up one by one (Bello et al. 2019,
Sec. 3.2), explicit exponentials for the softmaxes, and Shen et al.'s two normalisations.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from aalib.attention import attention_weights, linear_attention, relative_logits, softmax_attention

SIZES = [(3, 5), (7, 4), (8, 8)]
DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: dict(atol=2e-5, rtol=1e-4), torch.float64: dict(atol=1e-10, rtol=1e-9)}


def explicit_softmax(logits: torch.Tensor, dim: int) -> torch.Tensor:
    shifted = logits - logits.max(dim=dim, keepdim=True).values
    return shifted.exp() / shifted.exp().sum(dim=dim, keepdim=True)


def reference_softmax_weights(q, k, rel_h=None, rel_w=None, size=None):
    """Bello et al.: logit_ij = q_i.k_j + q_i.r_H[y_j - y_i] + q_i.r_W[x_j - x_i], over sqrt(dkh)."""
    batch, heads, n, dkh = q.shape
    width = size[1] if size else n
    rows = []
    for i in range(n):
        yi, xi = divmod(i, width)
        row = []
        for j in range(n):
            yj, xj = divmod(j, width)
            key = k[:, :, j]
            if rel_h is not None:
                key = key + rel_h[yj - yi + size[0] - 1] + rel_w[xj - xi + size[1] - 1]
            row.append((q[:, :, i] * key).sum(-1))
        rows.append(torch.stack(row, dim=-1))
    logits = torch.stack(rows, dim=-2) / math.sqrt(dkh)
    return explicit_softmax(logits, dim=-1)


def reference_linear_weights(q, k):
    """Shen et al.: rho_q softmaxes each query over its features, rho_k each key feature over positions."""
    rho_q = explicit_softmax(q, dim=-1)
    rho_k = explicit_softmax(k, dim=-2)
    batch, heads, n, _ = q.shape
    weights = torch.zeros(batch, heads, n, n, dtype=q.dtype)
    for f in range(q.shape[-1]):
        weights = weights + rho_q[..., :, f, None] * rho_k[..., None, :, f]
    return weights


def random_inputs(size, dtype, dkh=6, dvh=5, heads=2, batch=2, seed=0, grad=False):
    gen = torch.Generator().manual_seed(seed)
    height, width = size
    n = height * width

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_(grad)

    return (rnd(batch, heads, n, dkh), rnd(batch, heads, n, dkh), rnd(batch, heads, n, dvh),
            rnd(2 * height - 1, dkh), rnd(2 * width - 1, dkh))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relative", [False, True])
def test_softmax_attention_matches_reference(size, dtype, relative):
    q, k, v, rel_h, rel_w = random_inputs(size, dtype, grad=True)
    extra = dict(rel_h=rel_h, rel_w=rel_w, size=size) if relative else {}
    out = softmax_attention(q, k, v, **extra)
    ref = reference_softmax_weights(q, k, **extra) @ v
    assert out.shape == (2, 2, size[0] * size[1], 5)
    torch.testing.assert_close(out, ref, **TOL[dtype])

    grad_out = torch.randn_like(out)
    inputs = (q, k, v, rel_h, rel_w) if relative else (q, k, v)
    got = torch.autograd.grad(out, inputs, grad_out)
    want = torch.autograd.grad(ref, inputs, grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL[dtype])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_attention_matches_reference(size, dtype):
    q, k, v, _, _ = random_inputs(size, dtype, grad=True)
    out = linear_attention(q, k, v)
    ref = reference_linear_weights(q, k) @ v
    torch.testing.assert_close(out, ref, **TOL[dtype])
    grad_out = torch.randn_like(out)
    for g, w in zip(torch.autograd.grad(out, (q, k, v), grad_out), torch.autograd.grad(ref, (q, k, v), grad_out)):
        torch.testing.assert_close(g, w, **TOL[dtype])


@pytest.mark.parametrize("size", SIZES)
def test_linear_attention_rows_sum_to_one(size):
    q, k, _, _, _ = random_inputs(size, torch.float64)
    weights = attention_weights(q * 3, k * 3, kind="linear")
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1], dtype=torch.float64))
    assert (weights > 0).all()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("relative", [False, True])
def test_attention_weights_are_what_the_kernels_apply(size, relative):
    q, k, v, rel_h, rel_w = random_inputs(size, torch.float64)
    extra = dict(rel_h=rel_h, rel_w=rel_w, size=size) if relative else {}
    weights = attention_weights(q, k, kind="softmax", **extra)
    torch.testing.assert_close(weights, reference_softmax_weights(q, k, **extra))
    torch.testing.assert_close(softmax_attention(q, k, v, **extra), weights @ v)
    torch.testing.assert_close(linear_attention(q, k, v), attention_weights(q, k, kind="linear") @ v)


def test_relative_logits_are_per_query_offset_lookups():
    size = (3, 4)
    q, _, _, rel_h, rel_w = random_inputs(size, torch.float64)
    lh, lw = relative_logits(q, rel_h, rel_w, size)
    for i in range(12):
        yi, xi = divmod(i, 4)
        for y in range(3):
            torch.testing.assert_close(lh[:, :, i, y], (q[:, :, i] * rel_h[y - yi + 2]).sum(-1))
        for x in range(4):
            torch.testing.assert_close(lw[:, :, i, x], (q[:, :, i] * rel_w[x - xi + 3]).sum(-1))


@pytest.mark.parametrize("relative", [False, True])
def test_gradcheck_softmax_attention(relative):
    size = (3, 4)
    q, k, v, rel_h, rel_w = random_inputs(size, torch.float64, dkh=3, dvh=2, heads=2, batch=1, grad=True)
    if relative:
        fn = lambda q, k, v, rh, rw: softmax_attention(q, k, v, rel_h=rh, rel_w=rw, size=size)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (q, k, v, rel_h, rel_w))
    else:
        assert torch.autograd.gradcheck(softmax_attention, (q, k, v))


def test_gradcheck_linear_attention():
    q, k, v, _, _ = random_inputs((2, 5), torch.float64, dkh=3, dvh=4, batch=1, grad=True)
    assert torch.autograd.gradcheck(linear_attention, (q, k, v))


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any aten op returns (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.add(str(func))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("relative", [False, True])
def test_softmax_attention_never_materialises_n_by_n(relative):
    """No op, forward or backward, returns more than O(N (dkh + H + W)) elements per head."""
    size, batch, heads = (32, 32), 1, 2
    q, k, v, rel_h, rel_w = random_inputs(size, torch.float32, dkh=8, dvh=8, heads=heads, batch=batch, grad=True)
    extra = dict(rel_h=rel_h, rel_w=rel_w, size=size) if relative else {}
    n = size[0] * size[1]
    with _LargestTensor() as mode:
        out = softmax_attention(q, k, v, **extra)
        out.sum().backward()
    head = 8 + size[0] + size[1] if relative else 8
    assert mode.largest <= batch * heads * n * head, (mode.largest, sorted(mode.ops))
    assert mode.largest < batch * heads * n * n // 8
    assert any("flash" in op or "efficient" in op for op in mode.ops), sorted(mode.ops)


def test_linear_attention_never_materialises_n_by_n():
    q, k, v, _, _ = random_inputs((16, 16), torch.float32, dkh=8, dvh=8, grad=True)
    with _LargestTensor() as mode:
        linear_attention(q, k, v).sum().backward()
    assert mode.largest <= q.numel()


def test_kernel_errors_name_the_problem():
    q, k, v, rel_h, rel_w = random_inputs((3, 4), torch.float32)
    with pytest.raises(ValueError, match="size=\\(H, W\\) is required"):
        softmax_attention(q, k, v, rel_h=rel_h, rel_w=rel_w)
    with pytest.raises(ValueError, match="together"):
        softmax_attention(q, k, v, rel_h=rel_h, size=(3, 4))
    with pytest.raises(ValueError, match="has 20 positions but q has N=12"):
        softmax_attention(q, k, v, rel_h=rel_h, rel_w=rel_w, size=(4, 5))
    with pytest.raises(ValueError, match="rel_w must be \\(2W-1, dkh\\)"):
        softmax_attention(q, k, v, rel_h=rel_h, rel_w=rel_h, size=(3, 4))
    with pytest.raises(ValueError, match="same shape"):
        softmax_attention(q, k[..., :2], v)
    with pytest.raises(ValueError, match="v must be"):
        linear_attention(q, k, v[:, :, :5])
    with pytest.raises(ValueError, match="kind must be one of"):
        attention_weights(q, k, kind="sparse")
    with pytest.raises(ValueError, match="no relative logits"):
        attention_weights(q, k, kind="linear", rel_h=rel_h, rel_w=rel_w, size=(3, 4))
