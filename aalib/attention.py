"""Attention kernels of attention-augmented convolution.

* Softmax (dot-product) self-attention with 2-D relative position logits, from
  I. Bello, B. Zoph, A. Vaswani, J. Shlens, Q. V. Le, "Attention Augmented Convolutional
  Networks", ICCV 2019, https://arxiv.org/abs/1904.09925 (Sec. 3.1-3.2).
* Efficient (linear) attention, from Z. Shen, M. Zhang, H. Zhao, S. Yi, H. Li, "Efficient
  Attention: Attention with Linear Complexities", WACV 2021, https://arxiv.org/abs/1812.01243
  (Eq. 4, softmax normalisation variant).

Layout: every tensor is ``(B, heads, N, d)`` with ``N = H * W`` positions in row-major order
(position ``i`` is pixel ``(y, x) = divmod(i, W)``).

How relative logits stay fused. Bello et al.'s logit for query ``i`` and key ``j`` is
``q_i.k_j + q_i.rel_h[y_j - y_i + H - 1] + q_i.rel_w[x_j - x_i + W - 1]``. The two relative terms
depend on the query and only the row (column) of the key, so they are a dot product of an
*extended* query ``[q_i, Lh_i, Lw_i]`` (``Lh_i[y] = q_i.rel_h[y - y_i + H - 1]``, H values, and
``Lw_i``, W values) with an extended key ``[k_j, onehot(y_j), onehot(x_j)]``. This is exact, costs
``O(N (dkh + H + W))`` memory per head, and lets ``F.scaled_dot_product_attention`` run its
fused kernel (flash on the CPU, memory-efficient or flash on CUDA): no ``N x N`` tensor exists,
in the forward or the backward pass. FlexAttention with a ``score_mod`` would avoid the wider
head, but it has no backward on the CPU (PyTorch 2.14), so one path serves every device.

Status: exact for any ``H x W``; the explicit ``(B, heads, N, N)`` maps of
:func:`attention_weights` are for visualisation and tests only.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["softmax_attention", "linear_attention", "attention_weights", "relative_logits"]

AttentionKind = Literal["softmax", "linear"]
ATTENTION_KINDS: tuple[str, ...] = ("softmax", "linear")

# Fused SDPA backends want equal q/k/v head sizes (the CPU flash kernel falls back to the
# N x N math path otherwise) aligned to 8 (CUDA memory-efficient kernel in half precision).
_HEAD_ALIGN = 8


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


def _fused_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """SDPA with q/k and v padded with zeros to one aligned head size (exact: zeros add nothing).

    PyTorch's fused kernels (CPU flash, CUDA flash / memory-efficient) take equal q, k, v head
    sizes with unit stride; anything else silently runs the math backend and its N x N weights.
    """
    dvh = v.shape[-1]
    head = -(-max(q.shape[-1], dvh) // _HEAD_ALIGN) * _HEAD_ALIGN
    out = F.scaled_dot_product_attention(_pad_head(q, head), _pad_head(k, head), _pad_head(v, head), scale=scale)
    return out[..., :dvh]


def softmax_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    rel_h: Tensor | None = None,
    rel_w: Tensor | None = None,
    size: tuple[int, int] | None = None,
) -> Tensor:
    """Multi-head dot-product attention with optional 2-D relative logits (Bello et al., Eq. 3).

    ``softmax_j((q_i.k_j + q_i.rel_h[y_j - y_i + H - 1] + q_i.rel_w[x_j - x_i + W - 1]) / sqrt(dkh)) v_j``.

    Args:
        q, k: ``(B, heads, N, dkh)``.
        v: ``(B, heads, N, dvh)``.
        rel_h: ``(2H - 1, dkh)`` row-offset embeddings, or None.
        rel_w: ``(2W - 1, dkh)`` column-offset embeddings, or None.
        size: ``(H, W)`` with ``H * W == N``; required with ``rel_h``/``rel_w``.

    Returns:
        ``(B, heads, N, dvh)``. Never materialises an ``N x N`` tensor (see the module docstring).
    """
    _check_qk(q, k)
    _check_v(k, v)
    grid = _check_relative(q, rel_h, rel_w, size)
    scale = q.shape[-1] ** -0.5
    if grid is None:
        return _fused_attention(q, k, v, scale)
    lh, lw = relative_logits(q, rel_h, rel_w, grid)
    q_ext = torch.cat([q, lh, lw], dim=-1)  # B, heads, N, dkh + H + W
    key_pos = _key_positions(grid, k).expand(*k.shape[:2], -1, -1)  # B, heads, N, H + W
    k_ext = torch.cat([k, key_pos], dim=-1)  # B, heads, N, dkh + H + W
    return _fused_attention(q_ext, k_ext, v, scale)


def _linear_factors(q: Tensor, k: Tensor, feature_dim: int = -1) -> tuple[Tensor, Tensor]:
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
    q_soft, k_soft = _linear_factors(q.transpose(-2, -1), k.transpose(-2, -1), feature_dim=-2)  # B, heads, dkh, N
    context = k_soft @ v  # B, heads, dkh, dvh
    return (context.transpose(-2, -1) @ q_soft).transpose(-2, -1)  # B, heads, N, dvh


def attention_weights(
    q: Tensor,
    k: Tensor,
    *,
    kind: AttentionKind,
    rel_h: Tensor | None = None,
    rel_w: Tensor | None = None,
    size: tuple[int, int] | None = None,
) -> Tensor:
    """The explicit ``(B, heads, N, N)`` attention map that a kernel applies.

    ``softmax_attention(q, k, v, ...) == attention_weights(q, k, kind="softmax", ...) @ v`` and
    ``linear_attention(q, k, v) == attention_weights(q, k, kind="linear") @ v``. Quadratic in N:
    for visualisation, tests and the naive benchmark reference.
    """
    _check_qk(q, k)
    if kind == "softmax":
        grid = _check_relative(q, rel_h, rel_w, size)
        logits = q @ k.transpose(-2, -1)  # B, heads, N, N
        if grid is not None:
            height, width = grid
            lh, lw = relative_logits(q, rel_h, rel_w, grid)
            logits = logits.unflatten(-1, grid) + lh[..., :, None] + lw[..., None, :]  # B, heads, N, H, W
            logits = logits.flatten(-2)  # B, heads, N, N
        return (logits * q.shape[-1] ** -0.5).softmax(dim=-1)
    if kind == "linear":
        if rel_h is not None or rel_w is not None:
            raise ValueError("kind='linear' takes no relative logits: linear attention has no N x N logits")
        q_soft, k_soft = _linear_factors(q, k)
        return q_soft @ k_soft.transpose(-2, -1)  # B, heads, N, N
    raise ValueError(f"kind must be one of {ATTENTION_KINDS}, got {kind!r}")
