"""Attention kernels of attention-augmented convolution.

* Softmax (dot-product) self-attention with 2-D relative position logits, from
  I. Bello, B. Zoph, A. Vaswani, J. Shlens, Q. V. Le, "Attention Augmented Convolutional
  Networks", ICCV 2019, https://arxiv.org/abs/1904.09925 (Sec. 3.1-3.2).
* Efficient (linear) attention, from Z. Shen, M. Zhang, H. Zhao, S. Yi, H. Li, "Efficient
  Attention: Attention with Linear Complexities", WACV 2021, https://arxiv.org/abs/1812.01243
  (Eq. 4, softmax normalisation variant).
* For ablations only: the reproduced study's linear attention, whose two softmaxes run along
  the wrong axes (:func:`swapped_linear_attention`, attention kind ``"linear_swapped"``).

Layout: every tensor is ``(B, heads, N, d)`` with ``N = H * W`` positions in row-major order
(position ``i`` is pixel ``(y, x) = divmod(i, W)``).

How relative logits avoid an ``N x N`` tensor. Bello et al.'s logit for query ``i`` and key ``j``
is ``q_i.k_j + q_i.rel_h[y_j - y_i + H - 1] + q_i.rel_w[x_j - x_i + W - 1]``. The two relative
terms depend on the query and only the row (column) of the key: with
``Lh_i[y] = q_i.rel_h[y - y_i + H - 1]`` (H values per query) and ``Lw_i[x]`` (W values), the
logit is ``q_i.k_j + Lh_i[y_j] + Lw_i[x_j]``. Four exact kernels use this (``backend=``):

* ``"fused"``: the logit is the dot product of an *extended* query ``[q_i, Lh_i, Lw_i]`` with an
  extended key ``[k_j, onehot(y_j), onehot(x_j)]``, so ``F.scaled_dot_product_attention`` runs
  its fused kernel (flash on the CPU, memory-efficient or flash on CUDA) on heads of
  ``dkh + H + W`` values. Memory ``O(N (dkh + H + W))`` per head; but every logit costs
  ``dkh + H + W`` multiply-adds instead of ``dkh`` (136 instead of 8 at 64 x 64, dkh = 8).
* ``"blocked"``: FlashAttention's recipe (Dao et al. 2022) in PyTorch ops: queries in blocks of
  at most ``_BLOCK_LOGITS`` logits (all heads together), ``Lh``/``Lw`` added to each block by
  broadcasting, and the backward pass recomputing each block's weights rather than storing the
  ``N x N`` map. Memory: one block plus ``O(N (dkh + dvh + H + W))`` per head; work: ``dkh``
  multiply-adds per logit and a few passes over a cache-sized block. On small maps
  (``N <= dkh + H + W``, as in the study's models) the whole map is no larger than that bound, so
  the forward pass keeps it and the backward pass skips the recomputation (one product fewer).
* ``"native"``: the same recipe fused into one C++ pass (:mod:`aalib.native`, built on first use
  with the machine's compiler): tiles of 8 queries against chunks of whole key rows, the bias,
  the online softmax and the products with v in the first-level cache, and a backward pass that
  recomputes each chunk from one log-sum-exp per query. Each tile computes its ``Lh``/``Lw``
  from the tables ``rel_h``/``rel_w`` itself, so they are never stored. Float32 on the CPU;
  memory ``O(tile)`` per thread beyond the inputs and outputs; ``dkh`` multiply-adds per logit.
* ``"flex"``: FlexAttention (J. Dong, B. Feng, D. Guessous, Y. Liang, H. He, "Flex Attention: A
  Programming Model for Generating Optimized Attention Kernels", 2024,
  https://arxiv.org/abs/2412.05496; ``torch.nn.attention.flex_attention`` in the PyTorch docs)
  with a ``score_mod`` that adds ``Lh_i[y_j] + Lw_i[x_j]`` to each scaled logit, so the bias widens
  no head. On CUDA it runs ``torch.compile(flex_attention)``: one fused kernel each for the forward
  and backward passes (gradients of the captured ``Lh``/``Lw`` included); memory
  ``O(N (dkh + dvh + H + W))`` per head.
  PyTorch has no FlexAttention backward on the CPU: there the backend runs eager
  ``flex_attention``, which materialises the ``N x N`` scores (and warns so), with gradients off
  only, and raises ``NotImplementedError`` for inputs that need gradients. On the CPU it is a
  reference check, not a kernel.

``backend="auto"`` on the CPU takes ``"native"`` for relative logits from 24 x 24 up where the
fused kernel's extended head is much wider than ``dkh + dvh``, and without positions on maps
from 64 x 64 up with small heads (:func:`_cpu_prefers_native`), when the kernel can run
(float32, a C++ compiler); otherwise ``"blocked"`` where a measured cost model
says the fused kernel's widened or padded head costs more than the blocked kernel's passes (or
values much narrower than keys, as in the study's models) and ``"fused"`` otherwise. On CUDA it
always takes ``"fused"``, whose kernels run the wide head on tensor cores. It never takes
``"flex"``, which is opt-in: no GPU measurement shows it faster than the extended-head
``"fused"`` kernel.

Status: exact for any ``H x W``; the explicit ``(B, heads, N, N)`` maps of
:func:`attention_weights` are for visualisation and tests only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from . import native
from .checks import check_choice

__all__ = [
    "ATTENTION_KINDS",
    "BACKENDS",
    "CPU_ONLY_BACKENDS",
    "LINEAR_KINDS",
    "attention_weights",
    "linear_attention",
    "linear_factors",
    "relative_logits",
    "softmax_attention",
    "swapped_factors",
    "swapped_linear_attention",
]

# The one list of attention kinds: layers, models and the analysis check against it.
# "linear_swapped" is the reproduced study's defect, kept as an explicit, opt-in ablation.
AttentionKind = Literal["softmax", "linear", "linear_swapped"]
ATTENTION_KINDS: tuple[str, ...] = get_args(AttentionKind)
LINEAR_KINDS: tuple[str, ...] = ("linear", "linear_swapped")  # no N x N logits: no relative positions
Backend = Literal["auto", "fused", "blocked", "native", "flex"]
BACKENDS: tuple[str, ...] = ("auto", "fused", "blocked", "native", "flex")
CPU_ONLY_BACKENDS: tuple[str, ...] = ("native",)

# Fused SDPA backends want equal q/k/v head sizes (the CPU flash kernel falls back to the
# N x N math path otherwise) aligned to 8 (CUDA memory-efficient kernel in half precision).
_HEAD_ALIGN = 8
# FlexAttention's compiled (Triton) kernel takes q/k and v head sizes of at least 16, the
# smallest tl.dot; it rounds larger ones up to a power of two itself.
_FLEX_MIN_HEAD = 16
# Logits per block of the "blocked" kernel, all heads together: 8 MiB in float32, the size of a
# small CPU's last-level cache (block sizes from 2^20 to 2^22 time within 10 % of each other)...
_BLOCK_LOGITS = 1 << 21
# ... and per head at most 2^16 logits (256 KiB in float32, the size of a core's L2 cache).
_ROW_LOGITS = 1 << 16
# What the blocked kernel's passes over a block (bias, softmax, its backward, the reductions) cost,
# in the fused kernel's multiply-adds per logit (fitted: see _cpu_prefers_blocked).
_BLOCKED_PASSES = 64


def _check_qk(q: Tensor, k: Tensor) -> None:
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(
            f"q and k must be (B, heads, N, d) tensors, got shapes {tuple(q.shape)} and {tuple(k.shape)}"
        )
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape, got {tuple(q.shape)} and {tuple(k.shape)}")


def _check_v(k: Tensor, v: Tensor) -> None:
    if v.dim() != 4 or v.shape[:3] != k.shape[:3]:
        raise ValueError(
            f"v must be (B, heads, N, dvh) with the B, heads, N of k {tuple(k.shape[:3])}, got {tuple(v.shape)}"
        )


def _check_relative(
    q: Tensor, rel_h: Tensor | None, rel_w: Tensor | None, size: tuple[int, int] | None
) -> tuple[int, int] | None:
    """Validate the relative tables against q; returns (H, W) when relative logits are used."""
    if rel_h is None and rel_w is None:
        return None
    if rel_h is None or rel_w is None:
        raise ValueError("rel_h and rel_w must be given together (or neither)")
    if size is None:
        raise ValueError("size=(H, W) is required when rel_h and rel_w are given")
    height, width = size
    n, dkh = q.shape[-2], q.shape[-1]
    if height * width != n:
        raise ValueError(f"size={tuple(size)} has {height * width} positions but q has N={n}")
    if rel_h.shape != (2 * height - 1, dkh):
        raise ValueError(f"rel_h must be (2H-1, dkh) = {(2 * height - 1, dkh)}, got {tuple(rel_h.shape)}")
    if rel_w.shape != (2 * width - 1, dkh):
        raise ValueError(f"rel_w must be (2W-1, dkh) = {(2 * width - 1, dkh)}, got {tuple(rel_w.shape)}")
    return height, width


def _relative_table(rel: Tensor, length: int) -> Tensor:
    """``table[a, b] = rel[b - a + length - 1]``: the (length, length, d) offset lookup."""
    pos = torch.arange(length, device=rel.device)
    return rel[pos[None, :] - pos[:, None] + length - 1]  # length_q, length_k, d


def relative_logits(q: Tensor, rel_h: Tensor, rel_w: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Per-query relative logits of Bello et al. (Sec. 3.2), unscaled.

    Returns ``(lh, lw)`` of shapes ``(B, heads, N, H)`` and ``(B, heads, N, W)`` with
    ``lh[..., i, y] = q_i . rel_h[y - y_i + H - 1]`` and ``lw[..., i, x] = q_i . rel_w[x - x_i + W - 1]``.
    """
    height, width = size
    batch, heads, n, dkh = q.shape
    q_grid = q.reshape(batch, heads, height, width, dkh)  # B, heads, H, W, dkh
    lh = torch.einsum("bhyxd,yYd->bhyxY", q_grid, _relative_table(rel_h, height))  # B, heads, H, W, H
    lw = torch.einsum("bhyxd,xXd->bhyxX", q_grid, _relative_table(rel_w, width))  # B, heads, H, W, W
    return lh.reshape(batch, heads, n, height), lw.reshape(batch, heads, n, width)


def _key_positions(size: tuple[int, int], like: Tensor) -> Tensor:
    """``[onehot(y_j), onehot(x_j)]`` for every key ``j``: (N, H + W)."""
    height, width = size
    rows = torch.eye(height, dtype=like.dtype, device=like.device)
    cols = torch.eye(width, dtype=like.dtype, device=like.device)
    rows = rows[:, None, :].expand(height, width, height)  # H, W, H
    cols = cols[None, :, :].expand(height, width, width)  # H, W, W
    return torch.cat([rows, cols], dim=-1).reshape(height * width, height + width)


def _pad_head(x: Tensor, size: int) -> Tensor:
    # fused kernels need a unit stride on the head dimension, else SDPA falls back to N x N math
    return x.contiguous() if x.shape[-1] == size else F.pad(x, (0, size - x.shape[-1]))


def _fused_head(dqk: int, dvh: int) -> int:
    """The one head size the fused kernel runs q, k and v at: the wider, aligned up."""
    return -(-max(dqk, dvh) // _HEAD_ALIGN) * _HEAD_ALIGN


def _fused_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """SDPA with q/k and v padded with zeros to one aligned head size (exact: zeros add nothing).

    PyTorch's fused kernels (CPU flash, CUDA flash / memory-efficient) take equal q, k, v head
    sizes with unit stride; anything else silently runs the math backend and its N x N weights.
    """
    dvh = v.shape[-1]
    head = _fused_head(q.shape[-1], dvh)
    out = F.scaled_dot_product_attention(_pad_head(q, head), _pad_head(k, head), _pad_head(v, head), scale=scale)
    return out[..., :dvh]


def _block_plan(groups: int, n: int, max_rows: int) -> tuple[int, int]:
    """(heads per block, queries per block) of the "blocked" kernel, from :data:`_BLOCK_LOGITS`
    and :data:`_ROW_LOGITS`; at most ``max_rows`` queries (the memory bound)."""
    rows = max(1, min(n, max_rows, _ROW_LOGITS // n))
    return max(1, min(groups, _BLOCK_LOGITS // (rows * n))), rows


def _is_transposed(t: Tensor) -> bool:
    """Whether ``t`` is the transpose of a contiguous tensor in its last two dimensions."""
    return not t.is_contiguous() and t.transpose(-2, -1).is_contiguous()


def _matmul_into(out: Tensor, a: Tensor, b: Tensor, beta: int, alpha: float = 1.0) -> None:
    """``out = alpha a @ b`` (``beta=0``) or ``out += alpha a @ b`` (``beta=1``), batched, in place.

    Computed as ``out^T = b^T a^T`` when ``out`` is a transposed view (a layer's q, k, v are views
    of a convolution's (d, N) output, and so are their gradients): BLAS then writes contiguous
    rows instead of PyTorch looping over the batch.
    """
    if _is_transposed(out):
        out, a, b = out.transpose(-2, -1), b.transpose(-2, -1), a.transpose(-2, -1)
    out.baddbmm_(a, b, beta=beta, alpha=alpha)


class _BlockedAttention(torch.autograd.Function):
    """Exact softmax attention over blocks of (heads, queries) against all keys, with the relative
    logits ``lh``/``lw`` broadcast onto each block; the backward pass recomputes each block's
    weights instead of storing them (FlashAttention's recipe, Dao et al. 2022) unless the whole
    map fits the memory bound (``N <= max_rows``), when it keeps them. Tensors are
    ``(G, N, d)`` with ``G = B * heads``; ``lh``, ``lw`` arrive scaled by ``1/sqrt(dkh)``, and
    the products with ``q`` take the scale as a factor of the matrix product (no scaled copy of q).
    """

    @staticmethod
    def _weights(
        q: Tensor, kt: Tensor, lh: Tensor | None, lw: Tensor | None, scale: float, heads: slice, rows: slice
    ) -> Tensor:
        """``softmax_j(scale q_i.k_j + lh[i, y_j] + lw[i, x_j])`` for one block: (g, C, N)."""
        q_block, kt_block = q[heads, rows], kt[heads]
        logits = q.new_empty(*q_block.shape[:2], kt.shape[-1])  # g, C, N
        logits.baddbmm_(q_block, kt_block, beta=0, alpha=scale)
        if lh is not None:
            by_row = logits.unflatten(-1, (lh.shape[-1], lw.shape[-1]))  # g, C, H, W (a view)
            by_row.add_(lh[heads, rows, :, None]).add_(lw[heads, rows, None, :])
        return logits.softmax(dim=-1)

    @staticmethod
    def _blocks(q: Tensor, plan: tuple[int, int]) -> Iterator[tuple[slice, slice]]:
        (groups, n, _), (per_block, rows) = q.shape, plan
        for first in range(0, groups, per_block):
            for start in range(0, n, rows):
                yield slice(first, first + per_block), slice(start, start + rows)

    @staticmethod
    def forward(
        ctx: FunctionCtx, q: Tensor, k: Tensor, v: Tensor, lh: Tensor | None, lw: Tensor | None, scale: float,
        max_rows: int,
    ) -> Tensor:
        plan = _block_plan(q.shape[0], q.shape[1], max_rows)
        kt = k.transpose(-2, -1)  # G, dkh, N
        out = torch.empty_like(v)  # G, N, dvh, laid out as v (a layer then reshapes it without a copy)
        keep = q.shape[1] <= max_rows  # the whole (N, N) map per head fits the O(N max_rows) bound
        kept = []
        for heads, rows in _BlockedAttention._blocks(q, plan):
            weights = _BlockedAttention._weights(q, kt, lh, lw, scale, heads, rows)  # g, C, N
            _matmul_into(out[heads, rows], weights, v[heads], 0)
            if keep:
                kept.append(weights)
        ctx.save_for_backward(q, k, v, lh, lw, out, *kept)
        ctx.plan, ctx.scale = plan, scale
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, lh, lw, out, *kept = ctx.saved_tensors
        if not (grad_out.is_contiguous() or _is_transposed(grad_out)):
            grad_out = grad_out.contiguous()  # e.g. the expanded gradient of a sum(); BLAS needs a unit stride
        delta = (grad_out * out).sum(dim=-1, keepdim=True)  # G, N, 1: sum_j P_ij dP_ij
        kt, vt = k.transpose(-2, -1), v.transpose(-2, -1)
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        grad_lh = None if lh is None else torch.empty_like(lh)
        grad_lw = None if lw is None else torch.empty_like(lw)
        for index, (heads, rows) in enumerate(_BlockedAttention._blocks(q, ctx.plan)):
            weights = kept[index] if kept else _BlockedAttention._weights(q, kt, lh, lw, ctx.scale, heads, rows)  # P
            beta = 0 if rows.start == 0 else 1  # a head group's first query block sets dK and dV, later ones add
            _matmul_into(grad_v[heads], weights.transpose(-2, -1), grad_out[heads, rows], beta)
            grad_logits = (grad_out[heads, rows] @ vt[heads]).sub_(delta[heads, rows]).mul_(weights)  # P (dP - delta)
            _matmul_into(grad_q[heads, rows], grad_logits, k[heads], 0, ctx.scale)
            _matmul_into(grad_k[heads], grad_logits.transpose(-2, -1), q[heads, rows], beta, ctx.scale)
            if lh is not None:
                by_row = grad_logits.unflatten(-1, (lh.shape[-1], lw.shape[-1]))  # g, C, H, W
                torch.sum(by_row, dim=-1, out=grad_lh[heads, rows])
                torch.sum(by_row, dim=-2, out=grad_lw[heads, rows])
        return grad_q, grad_k, grad_v, grad_lh, grad_lw, None, None


def _flat_in_float32(
    q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor | None, rel_w: Tensor | None,
    kernel: Callable[[Tensor, Tensor, Tensor, Tensor | None, Tensor | None], Tensor],
) -> Tensor:
    """Run ``kernel(q, k, v, rel_h, rel_w)`` of the "blocked" or "native" kernel on
    ``(B * heads, N, d)`` views, in float32 or wider (softmax statistics need the range), autocast off."""
    batch, heads, n, _ = q.shape
    dtype = torch.promote_types(q.dtype, torch.float32)

    def flat(t: Tensor) -> Tensor:
        return t.to(dtype).reshape(batch * heads, n, t.shape[-1])  # B * heads, N, d (a view of a layer's q, k, v)

    with torch.autocast(q.device.type, enabled=False):
        out = kernel(flat(q), flat(k), flat(v), *(None if t is None else t.to(dtype) for t in (rel_h, rel_w)))
    return out.view(batch, heads, n, v.shape[-1]).to(q.dtype)  # B, heads, N, dvh


def _blocked_attention(
    q: Tensor, k: Tensor, v: Tensor, scale: float, rel_h: Tensor | None, rel_w: Tensor | None,
    size: tuple[int, int] | None,
) -> Tensor:
    """The "blocked" kernel. The q.k products take the scale as a factor of the matrix products,
    the relative logits take it through the (small) tables, so no scaled copy of q is made. A
    block holds at most ``dkh + H + W`` queries per head (``dkh`` without relative logits), so its
    logits never outnumber the fused kernel's extended queries: ``O(N (dkh + H + W))`` per head.
    """
    max_rows = q.shape[-1] + (0 if size is None else sum(size))

    def kernel(q_: Tensor, k_: Tensor, v_: Tensor, rh: Tensor | None, rw: Tensor | None) -> Tensor:
        bias = (None, None) if size is None else (t[0] for t in relative_logits(q_[None], rh * scale, rw * scale, size))
        return _BlockedAttention.apply(q_, k_, v_, *bias, scale, max_rows)  # q_[None]: 1, B * heads, N, d

    return _flat_in_float32(q, k, v, rel_h, rel_w, kernel)


def _native_usable(q: Tensor) -> str | None:
    """Why the "native" kernel cannot take ``q`` (a CUDA tensor, float64, or no build), or None."""
    if q.device.type != "cpu":
        return f"it runs on the CPU, and q is on {q.device}"
    if torch.promote_types(q.dtype, torch.float32) != torch.float32:
        return f"it computes in float32, and q is {q.dtype}"
    return native.unavailable_reason()


def _native_attention(
    q: Tensor, k: Tensor, v: Tensor, scale: float, rel_h: Tensor | None, rel_w: Tensor | None,
    size: tuple[int, int] | None,
) -> Tensor:
    """The "native" kernel (:mod:`aalib.native`): float32, ``O(tile)`` memory per thread; it
    computes the relative logits from the tables itself."""
    return _flat_in_float32(q, k, v, rel_h, rel_w,
                            lambda q_, k_, v_, rh, rw: native.tiled_attention(q_, k_, v_, scale, rh, rw, size))


@functools.cache
def _flex_kernel(compiled: bool) -> Callable[..., Tensor]:
    """``flex_attention``, eager or ``torch.compile``d, built once on first use (importing it loads
    the compiler stack, which the other backends do not need)."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention) if compiled else flex_attention


def _flex_attention(
    q: Tensor, k: Tensor, v: Tensor, scale: float, rel_h: Tensor | None, rel_w: Tensor | None,
    size: tuple[int, int] | None,
) -> Tensor:
    """The "flex" backend: ``flex_attention`` with ``lh[i, y_j] + lw[i, x_j]`` as its ``score_mod``.

    FlexAttention applies ``scale`` to ``q.k`` before ``score_mod``, so ``lh``/``lw`` come from the
    tables scaled by it (as in the "blocked" kernel). q/k and v are padded with zeros to at least
    :data:`_FLEX_MIN_HEAD` (exact; ``scale`` stays that of ``dkh``). Compiled off the CPU; eager,
    and with gradients off only, on it.

    Raises:
        NotImplementedError: on the CPU when an input needs gradients (before any work).
    """
    on_cpu = q.device.type == "cpu"
    if on_cpu:
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, rel_h, rel_w)):
            *others, last = (repr(b) for b in BACKENDS if b != "flex")
            raise NotImplementedError(
                f"backend='flex' has no backward pass on the CPU in PyTorch {torch.__version__}: "
                f"run it under torch.no_grad() or use backend {', '.join(others)} or {last}"
            )
        # gradients are off, so this changes nothing; flex_attention refuses any CPU input with requires_grad
        q, k, v = q.detach(), k.detach(), v.detach()
    score_mod = None
    if size is not None:
        width = size[1]
        lh, lw = relative_logits(q, rel_h * scale, rel_w * scale, size)  # B, heads, N, H and B, heads, N, W

        def score_mod(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            return score + lh[b, h, q_idx, kv_idx // width] + lw[b, h, q_idx, kv_idx % width]  # key = (y, x) of kv_idx

    qk_head, dvh = max(q.shape[-1], _FLEX_MIN_HEAD), v.shape[-1]
    out = _flex_kernel(not on_cpu)(
        _pad_head(q, qk_head), _pad_head(k, qk_head), _pad_head(v, max(dvh, _FLEX_MIN_HEAD)),
        score_mod=score_mod, scale=scale,
    )  # B, heads, N, max(dvh, 16)
    return out[..., :dvh]


def _cpu_prefers_blocked(dkh: int, dvh: int, rel_dims: int) -> bool:
    """The CPU cost model of ``backend="auto"``: per logit, the fused kernel does ``2 * head``
    multiply-adds (q.k and p.v at the padded width ``head`` of ``dkh + rel_dims`` and ``dvh``), the
    blocked one ``dkh + dvh`` plus its passes over the block, worth :data:`_BLOCKED_PASSES`.

    Fitted on forward + backward timings of both kernels on a 2-core CPU (inputs laid out as a
    layer's; ``python -m aalib.bench kernels`` measures them): with relative logits from 8 x 8 to
    32 x 32 at dkh = 20 and at 64 x 64 with dkh = 8, and without positions at dkh = dvh = 8 and at
    the study's first stage (dkh = 256, dvh = 64), it picks the faster kernel. Known limit: near
    its boundary (dkh = 8 at 16 x 16 and 32 x 32; maps from 32 x 32 up without positions) the
    kernel it picks can be up to about a tenth slower, and the number of heads, which the rule
    does not see, decides there.
    """
    return 2 * _fused_head(dkh + rel_dims, dvh) > dkh + dvh + _BLOCKED_PASSES


def _cpu_prefers_native(n: int, dkh: int, dvh: int, rel_dims: int) -> bool:
    """The rule of ``backend="auto"`` for the "native" kernel: relative logits (``rel_dims = H + W``) on
    maps of at least 24 x 24, where the fused kernel's extended head is at least 1.5 times the
    native kernel's ``dkh + dvh`` multiply-adds per logit; and, without positions, maps of at
    least 64 x 64 with heads of at most 32 values (``dkh + dvh``). Fitted on
    ``python -m aalib.bench kernels`` (8 x 8 to 64 x 64, dkh 8 to 256, with and without positions)
    on two 2-core machines (``benchmarks/kernels_cpu-2core_2026-12-01.json``, an Intel Xeon, and
    ``benchmarks/kernels_cpu-2core_2026-12-02.json``, an AMD EPYC), where it takes the native
    kernel only where that kernel was the fastest on both. Known limit: below those sizes the
    machines disagree (the CPU flash kernel of the fused backend is several times faster on one
    than on the other), and the rule keeps the fused kernel there.
    """
    if rel_dims == 0:
        return n >= 64 * 64 and dkh + dvh <= 32
    return n >= 24 * 24 and _fused_head(dkh + rel_dims, dvh) >= 1.5 * (dkh + dvh)


def _cpu_backend(q: Tensor, dvh: int, rel_dims: int) -> str:
    """What ``backend="auto"`` runs on the CPU: "native" where :func:`_cpu_prefers_native` says so
    and the kernel can run (float32, built), else "blocked" or "fused" by :func:`_cpu_prefers_blocked`."""
    n, dkh = q.shape[-2:]
    if _cpu_prefers_native(n, dkh, dvh, rel_dims) and _native_usable(q) is None:
        return "native"
    return "blocked" if _cpu_prefers_blocked(dkh, dvh, rel_dims) else "fused"


def softmax_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    rel_h: Tensor | None = None,
    rel_w: Tensor | None = None,
    size: tuple[int, int] | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """Multi-head dot-product attention with optional 2-D relative logits (Bello et al., Eq. 3).

    ``softmax_j((q_i.k_j + q_i.rel_h[y_j - y_i + H - 1] + q_i.rel_w[x_j - x_i + W - 1]) / sqrt(dkh)) v_j``.

    Args:
        q, k: ``(B, heads, N, dkh)``.
        v: ``(B, heads, N, dvh)``.
        rel_h: ``(2H - 1, dkh)`` row-offset embeddings, or None.
        rel_w: ``(2W - 1, dkh)`` column-offset embeddings, or None.
        size: ``(H, W)`` with ``H * W == N``; required with ``rel_h``/``rel_w``.
        backend: ``"fused"``, ``"blocked"``, ``"native"``, ``"flex"`` or ``"auto"`` (never
            ``"flex"``); all exact (see the module docstring).

    Returns:
        ``(B, heads, N, dvh)``. Never materialises an ``N x N`` tensor, except ``"flex"`` on the CPU
        (see the module docstring).

    Raises:
        ValueError: ``backend="native"`` where it cannot run (CUDA tensors, float64, no C++ compiler).
        NotImplementedError: ``backend="flex"`` on the CPU with inputs that need gradients.
    """
    _check_qk(q, k)
    _check_v(k, v)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    size = _check_relative(q, rel_h, rel_w, size)
    scale = q.shape[-1] ** -0.5
    rel_dims = 0 if size is None else sum(size)  # H + W relative logits per query
    if backend == "auto":
        backend = _cpu_backend(q, v.shape[-1], rel_dims) if q.device.type == "cpu" else "fused"
    if backend == "native" and (reason := _native_usable(q)) is not None:
        raise ValueError(f"backend='native' cannot run here: {reason}; use 'auto', 'fused' or 'blocked'")
    if backend == "blocked":
        return _blocked_attention(q, k, v, scale, rel_h, rel_w, size)
    if backend == "native":
        return _native_attention(q, k, v, scale, rel_h, rel_w, size)
    if backend == "flex":
        return _flex_attention(q, k, v, scale, rel_h, rel_w, size)
    if size is None:
        return _fused_attention(q, k, v, scale)
    lh, lw = relative_logits(q, rel_h, rel_w, size)
    # the zero columns that align the head are part of the same concatenation (one copy, not two)
    pad = _fused_head(q.shape[-1] + rel_dims, v.shape[-1]) - (q.shape[-1] + rel_dims)
    zeros = q.new_zeros(()).expand(*q.shape[:-1], pad)  # B, heads, N, pad (no memory)
    q_ext = torch.cat([q, lh, lw, zeros], dim=-1)  # B, heads, N, dkh + H + W + pad
    key_pos = _key_positions(size, k).expand(*k.shape[:2], -1, -1)  # B, heads, N, H + W
    k_ext = torch.cat([k, key_pos, zeros], dim=-1)  # B, heads, N, dkh + H + W + pad
    return _fused_attention(q_ext, k_ext, v, scale)


def linear_factors(q: Tensor, k: Tensor, feature_dim: int = -1) -> tuple[Tensor, Tensor]:
    """Shen et al.'s normalisers: rho_q = softmax over each query's features,
    rho_k = softmax of each key feature over the N positions (the other of the last two dims)."""
    position_dim = -2 if feature_dim == -1 else -1
    return q.softmax(dim=feature_dim), k.softmax(dim=position_dim)


def linear_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Efficient attention (Shen et al., Eq. 4): ``rho_q(Q) (rho_k(K)^T V)``, no 1/sqrt(d) scaling.

    ``rho_k(K)^T V`` is the ``(dkh, dvh)`` matrix of global context vectors; time
    ``O(N dkh dvh)``, memory ``O(N d + dkh dvh)`` per head. Each row of the implied map
    ``rho_q(Q) rho_k(K)^T`` sums to 1.

    Args:
        q, k: ``(B, heads, N, dkh)``; v: ``(B, heads, N, dvh)``.

    Returns:
        ``(B, heads, N, dvh)``.
    """
    _check_qk(q, k)
    _check_v(k, v)
    # Feature-major layout: a conv's q/k/v arrive as transposed views of (d, N) storage, so
    # softmaxes and products run on contiguous memory and the output goes back without a copy.
    q_soft, k_soft = linear_factors(q.transpose(-2, -1), k.transpose(-2, -1), feature_dim=-2)  # B, heads, dkh, N
    context = k_soft @ v  # B, heads, dkh, dvh
    return (context.transpose(-2, -1) @ q_soft).transpose(-2, -1)  # B, heads, N, dvh


def swapped_factors(q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """The reproduced study's normalisers: q and k scaled by ``dkh ** -0.5``, then each query
    feature softmaxed over the N positions and each key over its dkh features."""
    scale = q.shape[-1] ** -0.5
    return (q * scale).softmax(dim=-2), (k * scale).softmax(dim=-1)


def swapped_linear_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """The reproduced study's linear attention, softmax axes swapped: a defect, for ablations.

    Shen et al.'s Eq. 4 normalises each query over its features and each key feature over the
    positions (:func:`linear_attention`). The study's LAA layer (Roy & Meghal 2024) scaled q and k
    by ``dkh ** -0.5`` and then normalised the other way round:
    ``softmax_N(Q / sqrt(dkh)) (softmax_d(K / sqrt(dkh))^T V)``, each query *feature* a
    distribution over positions and each *key* a distribution over features. The implied map
    ``softmax_N(Q) softmax_d(K)^T`` is not an attention map: its rows do not sum to 1 (all
    N rows together sum to N), so a query's output scales with how much of each feature's
    position distribution it holds. Shapes and cost as :func:`linear_attention`.
    """
    _check_qk(q, k)
    _check_v(k, v)
    q_soft, k_soft = swapped_factors(q, k)  # B, heads, N, dkh each
    context = k_soft.transpose(-2, -1) @ v  # B, heads, dkh, dvh
    return q_soft @ context  # B, heads, N, dvh


def attention_weights(
    q: Tensor,
    k: Tensor,
    *,
    attention: AttentionKind,
    rel_h: Tensor | None = None,
    rel_w: Tensor | None = None,
    size: tuple[int, int] | None = None,
) -> Tensor:
    """The explicit ``(B, heads, N, N)`` attention map that a kernel applies.

    ``softmax_attention(q, k, v, ...) == attention_weights(q, k, attention="softmax", ...) @ v`` and
    ``linear_attention(q, k, v) == attention_weights(q, k, attention="linear") @ v`` (likewise
    ``"linear_swapped"`` and :func:`swapped_linear_attention`). Quadratic in N: for
    visualisation, tests and the naive benchmark reference.
    """
    _check_qk(q, k)
    check_choice("attention", attention, ATTENTION_KINDS)
    if attention == "softmax":
        size = _check_relative(q, rel_h, rel_w, size)
        logits = q @ k.transpose(-2, -1)  # B, heads, N, N
        if size is not None:
            lh, lw = relative_logits(q, rel_h, rel_w, size)
            logits = logits.unflatten(-1, size) + lh[..., :, None] + lw[..., None, :]  # B, heads, N, H, W
            logits = logits.flatten(-2)  # B, heads, N, N
        return (logits * q.shape[-1] ** -0.5).softmax(dim=-1)
    if rel_h is not None or rel_w is not None:
        raise ValueError(f"attention={attention!r} takes no relative logits: linear attention has no N x N logits")
    q_soft, k_soft = linear_factors(q, k) if attention == "linear" else swapped_factors(q, k)
    return q_soft @ k_soft.transpose(-2, -1)  # B, heads, N, N
