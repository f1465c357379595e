"""The attention kernels against plain, slow implementations of the papers' formulas.

References are written here from the papers, independently of ``aalib.attention``:
explicit per-pair logits with the relative offsets looked up one by one (Bello et al. 2019,
Sec. 3.2), explicit exponentials for the softmaxes, and Shen et al.'s two normalisations.
"""

from __future__ import annotations

import math

import pytest
import torch

import aalib.attention as attention_module
from aalib import native
from aalib.attention import (
    BACKENDS,
    attention_weights,
    linear_attention,
    relative_logits,
    softmax_attention,
    swapped_linear_attention,
)
from aalib.bench.gpu_check import OpRecorder

SIZES = [(3, 5), (7, 4), (8, 8)]
DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: dict(atol=2e-5, rtol=1e-4), torch.float64: dict(atol=1e-10, rtol=1e-9)}
# PyTorch has no FlexAttention backward on the CPU: "flex" is checked there without gradients
# (test_flex_backend_matches_reference_without_grad) and with them on CUDA.
NO_CPU_BACKWARD = pytest.mark.skip(reason="backend='flex' has no backward on the CPU; checked under no_grad and on CUDA")
# "native" is a C++ kernel built on first use; without a C++ compiler it cannot run and is skipped.
NEEDS_NATIVE = pytest.mark.skipif(not native.available(), reason=f"native kernel unavailable: {native.unavailable_reason()}")
GRAD_BACKENDS = [pytest.param(b, marks=NO_CPU_BACKWARD) if b == "flex" else
                 pytest.param(b, marks=NEEDS_NATIVE) if b == "native" else b for b in BACKENDS]
NATIVE_IS_FLOAT32 = "backend='native' computes in float32 (it refuses float64: test_native_refuses_what_it_cannot_run)"
# Eager flex_attention warns, once per process, that it materialises the N x N scores: that is the
# documented CPU contract of backend="flex" (a reference check there), not a defect under test.
EAGER_FLEX_WARNING = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile:UserWarning")


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


def reference_swapped_output(q, k, v):
    """The reproduced study's LAA layer, one query and one feature at a time: q and k scaled by
    dkh ** -0.5, each query feature softmaxed over the positions, each key over its features,
    out_i = sum_f rho_q[i, f] * sum_j rho_k[j, f] v_j."""
    batch, heads, n, dkh = q.shape
    rho_q = explicit_softmax(q / math.sqrt(dkh), dim=-2)  # over positions
    rho_k = explicit_softmax(k / math.sqrt(dkh), dim=-1)  # over features
    rows = []
    for i in range(n):
        out_i = torch.zeros(batch, heads, v.shape[-1], dtype=q.dtype)
        for f in range(dkh):
            context_f = (rho_k[..., :, f, None] * v).sum(-2)  # B, heads, dvh
            out_i = out_i + rho_q[..., i, f, None] * context_f
        rows.append(out_i)
    return torch.stack(rows, dim=-2)


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
@pytest.mark.parametrize("backend", GRAD_BACKENDS)
def test_softmax_attention_matches_reference(size, dtype, relative, backend):
    if backend == "native" and dtype == torch.float64:
        pytest.skip(NATIVE_IS_FLOAT32)
    q, k, v, rel_h, rel_w = random_inputs(size, dtype, grad=True)
    extra = dict(rel_h=rel_h, rel_w=rel_w, size=size, backend=backend) if relative else dict(backend=backend)
    ref_extra = dict(rel_h=rel_h, rel_w=rel_w, size=size) if relative else {}
    out = softmax_attention(q, k, v, **extra)
    ref = reference_softmax_weights(q, k, **ref_extra) @ v
    assert out.shape == (2, 2, size[0] * size[1], 5)
    torch.testing.assert_close(out, ref, **TOL[dtype])

    grad_out = torch.randn_like(out)
    inputs = (q, k, v, rel_h, rel_w) if relative else (q, k, v)
    got = torch.autograd.grad(out, inputs, grad_out)
    want = torch.autograd.grad(ref, inputs, grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **TOL[dtype])


@EAGER_FLEX_WARNING
@pytest.mark.parametrize("size", [(3, 5), (5, 7), (8, 8)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("dkh, dvh", [(6, 5), (3, 8), (20, 12)])  # padded to 16, and wider than 16
def test_flex_backend_matches_reference_without_grad(size, dtype, relative, dkh, dvh):
    """backend="flex" on the CPU, gradients off. The inputs are leaves that require grad, as a
    model's parameters under torch.no_grad() are."""
    q, k, v, rel_h, rel_w = random_inputs(size, dtype, dkh=dkh, dvh=dvh, grad=True)
    extra = dict(rel_h=rel_h, rel_w=rel_w, size=size) if relative else {}
    with torch.no_grad():
        out = softmax_attention(q, k, v, **extra, backend="flex")
        ref = reference_softmax_weights(q, k, **extra) @ v
    assert out.shape == (2, 2, size[0] * size[1], dvh) and out.dtype == dtype
    torch.testing.assert_close(out, ref, **TOL[dtype])


def test_flex_backend_refuses_gradients_on_the_cpu(monkeypatch):
    """With gradients on, an input that requires grad (q, or only a relative table) is refused
    before any work: neither the relative logits nor flex_attention run."""
    def no_work(*args):
        pytest.fail("backend='flex' did work before refusing gradients on the CPU")

    monkeypatch.setattr(attention_module, "relative_logits", no_work)
    monkeypatch.setattr(attention_module, "_flex_kernel", no_work)
    size = (3, 4)
    message = "^backend='flex' has no backward pass on the CPU in PyTorch .* or use backend 'auto', 'fused', 'blocked' or 'native'$"
    q, k, v, rel_h, rel_w = random_inputs(size, torch.float32, grad=True)
    with pytest.raises(NotImplementedError, match=message):
        softmax_attention(q, k, v, backend="flex")
    q, k, v, _, _ = random_inputs(size, torch.float32)
    with pytest.raises(NotImplementedError, match=message):
        softmax_attention(q, k, v, rel_h=rel_h, rel_w=rel_w, size=size, backend="flex")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: backend='flex' trains only there")
@pytest.mark.parametrize("size", [(5, 7), (8, 8)])
@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("dkh, dvh", [(6, 5), (20, 12)])
def test_flex_backend_matches_reference_on_cuda(size, relative, dkh, dvh):
    """torch.compile(flex_attention) in float32 on CUDA, forward and backward (the relative
    tables' gradients flow through the captured logits), against the float64 CPU reference."""
    q, k, v, rel_h, rel_w = random_inputs(size, torch.float64, dkh=dkh, dvh=dvh, grad=True)
    inputs = (q, k, v, rel_h, rel_w) if relative else (q, k, v)
    ref_extra = dict(rel_h=rel_h, rel_w=rel_w, size=size) if relative else {}
    ref = reference_softmax_weights(q, k, **ref_extra) @ v
    grad_out = torch.randn_like(ref)
    want = torch.autograd.grad(ref, inputs, grad_out)

    on_gpu = [t.detach().to("cuda", torch.float32).requires_grad_() for t in inputs]
    extra = dict(rel_h=on_gpu[3], rel_w=on_gpu[4], size=size) if relative else {}
    out = softmax_attention(*on_gpu[:3], **extra, backend="flex")
    got = torch.autograd.grad(out, on_gpu, grad_out.to("cuda", torch.float32))
    torch.testing.assert_close(out.cpu().double(), ref, **TOL[torch.float32])
    for g, w in zip(got, want):
        torch.testing.assert_close(g.cpu().double(), w, **TOL[torch.float32])


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
@pytest.mark.parametrize("dtype", DTYPES)
def test_swapped_linear_attention_matches_the_studys_formula(size, dtype):
    q, k, v, _, _ = random_inputs(size, dtype, grad=True)
    out = swapped_linear_attention(q, k, v)
    ref = reference_swapped_output(q, k, v)
    torch.testing.assert_close(out, ref, **TOL[dtype])
    torch.testing.assert_close(attention_weights(q, k, attention="linear_swapped") @ v, ref, **TOL[dtype])
    grad_out = torch.randn_like(out)
    for g, w in zip(torch.autograd.grad(out, (q, k, v), grad_out), torch.autograd.grad(ref, (q, k, v), grad_out)):
        torch.testing.assert_close(g, w, **TOL[dtype])


@pytest.mark.parametrize("size", SIZES)
def test_swapped_linear_attention_is_not_an_attention_map(size):
    q, k, v, _, _ = random_inputs(size, torch.float64)
    weights = attention_weights(q, k, attention="linear_swapped")
    rows = weights.sum(-1)  # B, heads, N
    assert (rows - 1).abs().max() > 0.05  # rows do not sum to 1 ...
    torch.testing.assert_close(rows.sum(-1), torch.full(rows.shape[:-1], float(rows.shape[-1]), dtype=torch.float64))  # ... all N of them sum to N
    assert (swapped_linear_attention(q, k, v) - linear_attention(q, k, v)).abs().max() > 0.05


def test_gradcheck_swapped_linear_attention():
    q, k, v, _, _ = random_inputs((2, 5), torch.float64, dkh=3, dvh=4, batch=1, grad=True)
    assert torch.autograd.gradcheck(swapped_linear_attention, (q, k, v))


@pytest.mark.parametrize("size", SIZES)
def test_linear_attention_rows_sum_to_one(size):
    q, k, _, _, _ = random_inputs(size, torch.float64)
    weights = attention_weights(q * 3, k * 3, attention="linear")
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1], dtype=torch.float64))
    assert (weights > 0).all()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("relative", [False, True])
def test_attention_weights_are_what_the_kernels_apply(size, relative):
    q, k, v, rel_h, rel_w = random_inputs(size, torch.float64)
    extra = dict(rel_h=rel_h, rel_w=rel_w, size=size) if relative else {}
    weights = attention_weights(q, k, attention="softmax", **extra)
    torch.testing.assert_close(weights, reference_softmax_weights(q, k, **extra))
    torch.testing.assert_close(softmax_attention(q, k, v, **extra), weights @ v)
    torch.testing.assert_close(linear_attention(q, k, v), attention_weights(q, k, attention="linear") @ v)


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
@pytest.mark.parametrize("backend", GRAD_BACKENDS)
def test_gradcheck_softmax_attention(relative, backend):
    if backend == "native":
        pytest.skip(f"gradcheck needs float64; {NATIVE_IS_FLOAT32}")
    size = (3, 4)
    q, k, v, rel_h, rel_w = random_inputs(size, torch.float64, dkh=3, dvh=2, heads=2, batch=1, grad=True)
    if relative:
        fn = lambda q, k, v, rh, rw: softmax_attention(q, k, v, rel_h=rh, rel_w=rw, size=size, backend=backend)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (q, k, v, rel_h, rel_w))
    else:
        fn = lambda q, k, v: softmax_attention(q, k, v, backend=backend)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (q, k, v))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_blocked_attention_keeps_low_precision_inputs_accurate(dtype):
    """Half-precision inputs: the blocked kernel computes in float32 and returns the input dtype."""
    size = (5, 6)
    q, k, v, rel_h, rel_w = random_inputs(size, torch.float32)
    extra = dict(rel_h=rel_h, rel_w=rel_w, size=size)
    want = softmax_attention(q, k, v, **extra, backend="blocked")
    low = [t.to(dtype) for t in (q, k, v, rel_h, rel_w)]
    got = softmax_attention(*low[:3], rel_h=low[3], rel_w=low[4], size=size, backend="blocked")
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("heads_per_block, queries_per_block", [(1, 1), (3, 5)])
def test_blocked_attention_spans_many_blocks(heads_per_block, queries_per_block):
    """Many blocks, ragged at the ends (4 heads in blocks of 3, 42 queries in blocks of 5), give
    the same output and gradients as the reference."""
    size = (6, 7)
    n = size[0] * size[1]
    q, k, v, rel_h, rel_w = random_inputs(size, torch.float64, grad=True)  # batch 2 x 2 heads
    extra = dict(rel_h=rel_h, rel_w=rel_w, size=size)
    ref = reference_softmax_weights(q, k, **extra) @ v
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(attention_module, "_ROW_LOGITS", queries_per_block * n)
        patch.setattr(attention_module, "_BLOCK_LOGITS", heads_per_block * queries_per_block * n)
        assert attention_module._block_plan(4, n, 100) == (heads_per_block, queries_per_block)
        out = softmax_attention(q, k, v, **extra, backend="blocked")
        grads = torch.autograd.grad(out.square().sum(), (q, k, v, rel_h, rel_w))
    torch.testing.assert_close(out, ref)
    for g, w in zip(grads, torch.autograd.grad(ref.square().sum(), (q, k, v, rel_h, rel_w))):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("dkh, keeps", [(6, False), (16, True)])
def test_blocked_attention_keeps_weights_of_small_maps(relative, dkh, keeps, monkeypatch):
    """N = 15 queries: with dkh = 16 the whole map fits the memory bound (N <= dkh + H + W), so the
    forward pass keeps the weights and the backward pass does not recompute them; with dkh = 6
    (N > dkh + H + W = 14) it recomputes every block. Both match the reference, gradients included."""
    size, batch, heads = (3, 5), 2, 2
    n = size[0] * size[1]
    q, k, v, rel_h, rel_w = random_inputs(size, torch.float64, dkh=dkh, heads=heads, batch=batch, grad=True)
    extra = dict(rel_h=rel_h, rel_w=rel_w, size=size) if relative else {}
    inputs = (q, k, v, rel_h, rel_w) if relative else (q, k, v)
    calls = []
    weights = attention_module._BlockedAttention._weights
    monkeypatch.setattr(attention_module._BlockedAttention, "_weights",
                        staticmethod(lambda *a: calls.append(1) or weights(*a)))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = softmax_attention(q, k, v, **extra, backend="blocked")
    blocks = len(calls)
    grads = torch.autograd.grad(out.square().sum(), inputs)
    assert len(calls) == (blocks if keeps else 2 * blocks)  # backward: no recomputation, or every block again
    kept = sum(t.numel() for t in saved if t.dim() == 3 and t.shape[-1] == n)  # (g, C, N) weight blocks
    assert kept == (batch * heads * n * n if keeps else 0)
    ref = reference_softmax_weights(q, k, **extra) @ v
    torch.testing.assert_close(out, ref)
    for g, w in zip(grads, torch.autograd.grad(ref.square().sum(), inputs)):
        torch.testing.assert_close(g, w)


def test_gradcheck_linear_attention():
    q, k, v, _, _ = random_inputs((2, 5), torch.float64, dkh=3, dvh=4, batch=1, grad=True)
    assert torch.autograd.gradcheck(linear_attention, (q, k, v))


@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("backend", ["fused", "blocked", pytest.param("native", marks=NEEDS_NATIVE)])
def test_softmax_attention_never_materialises_n_by_n(relative, backend):
    """No op, forward or backward, returns more than O(N (dkh + H + W)) elements per head."""
    size, batch, heads = (32, 32), 1, 2
    q, k, v, rel_h, rel_w = random_inputs(size, torch.float32, dkh=8, dvh=8, heads=heads, batch=batch, grad=True)
    extra = dict(rel_h=rel_h, rel_w=rel_w, size=size) if relative else {}
    extra["backend"] = backend
    n = size[0] * size[1]
    with OpRecorder() as mode:
        out = softmax_attention(q, k, v, **extra)
        out.sum().backward()
    head = 8 + size[0] + size[1] if relative else 8
    assert mode.largest <= batch * heads * n * head, (mode.largest, sorted(mode.ops))
    assert mode.largest < batch * heads * n * n // 8
    if backend == "fused":
        assert any("flash" in op or "efficient" in op for op in mode.ops), sorted(mode.ops)


@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_auto_backend_dispatch(relative, dtype, monkeypatch):
    """auto on the CPU at 32 x 32, dkh = dvh = 8: with relative logits native in float32 (where it
    can run; blocked otherwise) and blocked in float64; fused without; never flex (opt-in)."""
    calls = []
    for kernel in ("blocked", "native", "fused", "flex"):
        record = lambda *a, kernel=kernel: calls.append(kernel) or a[2]  # noqa: E731
        monkeypatch.setattr(attention_module, f"_{kernel}_attention", record)
    q, k, v, rel_h, rel_w = random_inputs((32, 32), dtype, dkh=8, dvh=8, heads=1, batch=1)
    softmax_attention(q, k, v, **(dict(rel_h=rel_h, rel_w=rel_w, size=(32, 32)) if relative else {}))
    with_positions = "native" if dtype == torch.float32 and native.available() else "blocked"
    assert calls == ([with_positions] if relative else ["fused"])


def test_auto_falls_back_to_blocked_without_the_native_kernel(monkeypatch):
    """AALIB_NATIVE=0 (as without a C++ compiler): auto runs the blocked kernel, and an explicit
    backend="native" says why it cannot run."""
    monkeypatch.setenv("AALIB_NATIVE", "0")
    native._load.cache_clear()
    try:
        q, k, v, rel_h, rel_w = random_inputs((32, 32), torch.float32, dkh=8, dvh=8, heads=1, batch=1)
        extra = dict(rel_h=rel_h, rel_w=rel_w, size=(32, 32))
        assert attention_module._cpu_backend(q, 8, 64) == "blocked"
        with pytest.raises(ValueError, match="^backend='native' cannot run here: AALIB_NATIVE=0; use 'auto', 'fused' or 'blocked'$"):
            softmax_attention(q, k, v, **extra, backend="native")
        torch.testing.assert_close(softmax_attention(q, k, v, **extra), softmax_attention(q, k, v, **extra, backend="blocked"))
    finally:
        native._load.cache_clear()


@pytest.mark.parametrize("n, dkh, dvh, extra, prefers", [
    (64 * 64, 8, 8, 64 + 64, True),  # relative logits at 64 x 64: an extended head of 136
    (32 * 32, 20, 20, 32 + 32, True),  # Bello's WRN, first stage: 84 against 40
    (24 * 24, 20, 20, 24 + 24, True),  # 72 against 40
    (32 * 32, 32, 32, 32 + 32, True),  # 96 against 64: at the bound
    (32 * 32, 64, 64, 32 + 32, False),  # 128 against 128: the fused or blocked kernel
    (16 * 16, 8, 8, 16 + 16, False),  # small maps: the fused kernel
    (32 * 32, 16, 16, 0, False),  # no positions below 64 x 64: the machines disagree, the fused kernel
    (64 * 64, 8, 8, 0, True),  # no positions at 64 x 64, small heads: native on both machines measured
    (64 * 64, 32, 32, 0, False),  # no positions, wide heads: not measured faster
])
def test_auto_native_rule(n, dkh, dvh, extra, prefers):
    assert attention_module._cpu_prefers_native(n, dkh, dvh, extra) is prefers


@pytest.mark.parametrize("dkh, dvh, extra, blocked", [
    (8, 8, 64 + 64, True),  # relative logits at 64 x 64
    (20, 20, 32 + 32, True),  # Bello's WRN, first stage
    (8, 8, 16 + 16, False),  # small maps: the fused kernel
    (20, 20, 8 + 8, False),
    (8, 8, 0, False),  # no positions, equal widths
    (256, 64, 0, True),  # the study's values, padded 4x in the fused kernel
])
def test_auto_backend_cost_model(dkh, dvh, extra, blocked):
    assert attention_module._cpu_prefers_blocked(dkh, dvh, extra) is blocked


def test_linear_attention_never_materialises_n_by_n():
    q, k, v, _, _ = random_inputs((16, 16), torch.float32, dkh=8, dvh=8, grad=True)
    with OpRecorder() as mode:
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
    with pytest.raises(ValueError, match="attention must be one of"):
        attention_weights(q, k, attention="sparse")
    with pytest.raises(ValueError, match="no relative logits"):
        attention_weights(q, k, attention="linear", rel_h=rel_h, rel_w=rel_w, size=(3, 4))
    with pytest.raises(ValueError, match="attention='linear_swapped' takes no relative logits"):
        attention_weights(q, k, attention="linear_swapped", rel_h=rel_h, rel_w=rel_w, size=(3, 4))
    with pytest.raises(ValueError, match="v must be"):
        swapped_linear_attention(q, k, v[:, :, :5])
    with pytest.raises(ValueError, match="backend must be one of \\('auto', 'fused', 'blocked', 'native', 'flex'\\), got 'flash'"):
        softmax_attention(q, k, v, backend="flash")
