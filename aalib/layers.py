"""Attention-augmented convolution (AA-conv) and its linear-attention variant (LAA-conv).

I. Bello, B. Zoph, A. Vaswani, J. Shlens, Q. V. Le, "Attention Augmented Convolutional Networks",
ICCV 2019, https://arxiv.org/abs/1904.09925: ``AAConv(X) = concat[Conv(X), MHA(X)]`` (Eq. 4),
with 2-D relative position logits (Sec. 3.2). The linear variant swaps the softmax attention for
Z. Shen et al., "Efficient Attention: Attention with Linear Complexities", WACV 2021,
https://arxiv.org/abs/1812.01243.

Departures from the paper, each a choice a user can see:

* Relative tables hold offsets up to ``extent - 1`` rows/columns and clip larger offsets to the
  last entry (Shaw et al. 2018, https://arxiv.org/abs/1803.02155), so a layer runs at any input
  size. When the map is no larger than ``extent`` the logits are exactly Bello et al.'s.
* Stride: the convolution branch strides as usual; the attention branch attends over the input
  average-pooled by ``stride`` x ``stride`` (ceil mode), so both branches give
  ``ceil(H / stride) x ceil(W / stride)`` maps and attention cost falls by ``stride ** 4``.
* ``position="sincos"`` adds a fixed 2-D sine-cosine encoding (Vaswani et al. 2017) to the
  attention branch's input, as the reproduced study did; ``"learned"`` adds a learned absolute
  embedding, bilinearly resized to the input.

Status: complete for 2-D inputs; no dilation or groups in the convolution branch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import (
    ATTENTION_KINDS,
    BACKENDS,
    LINEAR_KINDS,
    attention_weights,
    linear_attention,
    softmax_attention,
    swapped_linear_attention,
)
from .checks import check_choice, check_int, int_pair

__all__ = ["AugmentedConv2d", "POSITIONS", "attention_channels", "output_size", "sincos_position_encoding"]

POSITIONS: tuple[str, ...] = ("relative", "sincos", "learned", "none")


def attention_channels(value: int | float, out_channels: int, heads: int, name: str = "dk") -> int:
    """Channels of an AA-conv's ``dk`` or ``dv`` (``name``) for a layer of ``out_channels`` outputs.

    An int is a channel count, taken as is (:class:`AugmentedConv2d` then requires ``heads`` to
    divide it). A float in (0, 1] is a fraction of ``out_channels``, Bello et al.'s
    ``kappa = dk / Fout`` and ``upsilon = dv / Fout`` (Sec. 4), rounded to the nearest multiple of
    ``heads`` so that the heads split it evenly: at least one channel per head, and no more than
    ``out_channels`` where a multiple of ``heads`` fits. ``AugmentedConv2d(100, 100, dk=0.2,
    dv=0.1, heads=8)`` has ``dk = 16`` and ``dv = 8``, as every augmented layer of
    :func:`aalib.models.wrn` with the same fractions does.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be an int (channels) or a float in (0, 1], got {value!r}")
    if isinstance(value, float):
        if not 0.0 < value <= 1.0:
            raise ValueError(f"{name}={value} as a fraction of out_channels must lie in (0, 1]")
        per_head = max(1, round(value * out_channels / heads))
        return heads * min(per_head, max(1, out_channels // heads))
    if value < 1:
        raise ValueError(f"{name}={value} channels must be >= 1")
    return value


def output_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """``(ceil(H / stride), ceil(W / stride))``: the map an AA-conv with ``stride`` gives for an
    ``(H, W)`` input, as does its convolution branch (odd kernel, 'same' padding) and the
    ceil-mode average pool its attention branch attends over."""
    return -(-size[0] // stride), -(-size[1] // stride)


def sincos_position_encoding(channels: int, height: int, width: int) -> Tensor:
    """Fixed 2-D sine-cosine encoding (Vaswani et al. 2017, Sec. 3.5), shape (channels, H, W).

    The first ``channels // 2`` channels encode the row, the rest the column, each as
    ``sin(p / 10000^(2i/d)), cos(p / 10000^(2i/d))`` pairs.
    """
    def encode_1d(dim: int, length: int) -> Tensor:
        pos = torch.arange(length, dtype=torch.float64)[:, None]
        freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / max(dim, 1))
        table = torch.zeros(length, dim, dtype=torch.float64)
        table[:, 0::2] = torch.sin(pos * freq)
        table[:, 1::2] = torch.cos(pos * freq[: dim // 2])
        return table  # length, dim

    rows, cols = channels // 2, channels - channels // 2
    enc_h = encode_1d(rows, height).T[:, :, None].expand(rows, height, width)  # rows, H, W
    enc_w = encode_1d(cols, width).T[:, None, :].expand(cols, height, width)  # cols, H, W
    return torch.cat([enc_h, enc_w], dim=0).float()


class AugmentedConv2d(nn.Module):
    """Attention-augmented convolution: ``concat[Conv(x), W_O MHA(x)]`` (Bello et al., Eq. 4).

    Args:
        in_channels: input channels ``Fin``.
        out_channels: output channels ``Fout``; the convolution gives ``Fout - dv`` of them.
        kernel_size: odd size of the convolution branch's kernel ('same' padding).
        dk: key/query depth; an int, or a float in (0, 1] as a fraction of ``out_channels`` (kappa),
            rounded to a multiple of ``heads`` (:func:`attention_channels`).
        dv: value depth = attention output channels; int or fraction (upsilon); at most ``Fout``.
        heads: number of heads ``Nh``; must divide ``dk`` and ``dv`` when they are ints.
        attention: ``"softmax"`` (AA-conv), ``"linear"`` (LAA-conv, Shen et al.), or
            ``"linear_swapped"``: the reproduced study's LAA with its softmax axes swapped
            (:func:`aalib.attention.swapped_linear_attention`), a defect kept for ablations.
        position: ``"relative"`` (Bello's 2-D relative logits, softmax only), ``"sincos"``,
            ``"learned"`` or ``"none"``.
        stride: stride of both branches (see the module docstring for the attention branch).
        extent: ``(H, W)`` (or one int) that the position tables cover: relative tables have
            ``2H - 1`` and ``2W - 1`` rows, a learned embedding is ``H x W``.
        bias: bias of the convolution branch.
        qkv_bias: bias of the 1x1 q/k/v and output projections.
        backend: softmax attention kernel, ``"auto"``, ``"fused"``, ``"blocked"``, ``"native"`` or
            ``"flex"`` (all exact; ``"native"`` runs on the CPU only, ``"flex"`` trains on CUDA only;
            see :mod:`aalib.attention`); ignored by linear attention.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        dk: int | float,
        dv: int | float,
        heads: int,
        attention: str = "softmax",
        position: str = "relative",
        stride: int = 1,
        extent: int | tuple[int, int] = 32,
        bias: bool = False,
        qkv_bias: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("heads", heads), ("stride", stride)):
            check_int(name, value)
        check_int("kernel_size", kernel_size, odd=True, note="('same' padding)")
        check_choice("attention", attention, ATTENTION_KINDS)
        check_choice("position", position, POSITIONS)
        check_choice("backend", backend, BACKENDS)
        if attention in LINEAR_KINDS and position == "relative":
            raise ValueError(
                f"position='relative' needs attention='softmax', got attention={attention!r}: linear attention never forms the "
                "N x N logits that relative logits are added to; use position='sincos', 'learned' or 'none'"
            )
        self.dk = attention_channels(dk, out_channels, heads, "dk")
        self.dv = attention_channels(dv, out_channels, heads, "dv")
        if self.dv > out_channels:
            raise ValueError(f"dv={self.dv} exceeds out_channels={out_channels}: the attention branch gives dv of them")
        if self.dk % heads or self.dv % heads:
            raise ValueError(f"heads={heads} must divide dk={self.dk} and dv={self.dv}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.heads = heads
        self.attention = attention
        self.position = position
        self.backend = backend
        self.stride = stride
        self.extent = int_pair("extent", extent)
        self.dim_head_qk = self.dk // heads
        self.dim_head_v = self.dv // heads

        conv_channels = out_channels - self.dv
        self.conv = (
            nn.Conv2d(in_channels, conv_channels, kernel_size, stride, kernel_size // 2, bias=bias)
            if conv_channels > 0
            else None
        )
        self.qkv = nn.Conv2d(in_channels, 2 * self.dk + self.dv, 1, bias=qkv_bias)
        self.proj = nn.Conv2d(self.dv, self.dv, 1, bias=qkv_bias)  # W_O: mixes the heads
        self.rel_h = self.rel_w = self.pos_embed = None
        if position == "relative":  # shared across heads (Bello et al., Sec. 3.2)
            self.rel_h = nn.Parameter(torch.empty(2 * self.extent[0] - 1, self.dim_head_qk))
            self.rel_w = nn.Parameter(torch.empty(2 * self.extent[1] - 1, self.dim_head_qk))
        elif position == "learned":
            self.pos_embed = nn.Parameter(torch.empty(1, in_channels, *self.extent))
        # sine-cosine table for the last input size; rebuilt on a new size, moved by .to()
        self.register_buffer("sincos", torch.empty(0), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.conv, self.qkv, self.proj):
            if conv is not None:
                conv.reset_parameters()
        if self.rel_h is not None:
            nn.init.normal_(self.rel_h, std=self.dim_head_qk**-0.5)
            nn.init.normal_(self.rel_w, std=self.dim_head_qk**-0.5)
        if self.pos_embed is not None:
            nn.init.normal_(self.pos_embed, std=0.02)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, dk={self.dk}, "
            f"dv={self.dv}, heads={self.heads}, attention={self.attention!r}, position={self.position!r}, "
            f"stride={self.stride}, extent={self.extent}"
            + ("" if self.backend == "auto" else f", backend={self.backend!r}")
        )

    # -- position encodings ---------------------------------------------------------------
    def _relative_tables(self, height: int, width: int) -> tuple[Tensor, Tensor]:
        """(2H-1, dkh) and (2W-1, dkh) tables for this size, offsets clipped to the extent."""
        def clipped(table: Tensor, length: int, extent: int) -> Tensor:
            offsets = torch.arange(-(length - 1), length, device=table.device).clamp(-(extent - 1), extent - 1)
            return table[offsets + extent - 1]

        return clipped(self.rel_h, height, self.extent[0]), clipped(self.rel_w, width, self.extent[1])

    def _absolute_position(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        if self.position == "learned":
            embed = self.pos_embed
            if embed.shape[-2:] != (height, width):
                embed = F.interpolate(embed, size=(height, width), mode="bilinear", align_corners=False)
            return x + embed.to(x.dtype)
        if self.sincos.shape != (self.in_channels, height, width):
            table = sincos_position_encoding(self.in_channels, height, width)
            self.sincos = table.to(device=x.device, dtype=self.qkv.weight.dtype)
        return x + self.sincos.to(x.dtype)

    # -- attention branch -----------------------------------------------------------------
    def _attention_inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, dict]:
        """q, k, v as (B, heads, N, d) for the (pooled) input, and the kernel's position kwargs."""
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride, self.stride, ceil_mode=True)
        if self.position in ("sincos", "learned"):
            x = self._absolute_position(x)
        batch, _, height, width = x.shape
        q, k, v = self.qkv(x).split([self.dk, self.dk, self.dv], dim=1)  # B, d, H, W each
        q = q.reshape(batch, self.heads, self.dim_head_qk, height * width).transpose(-2, -1)  # B, heads, N, dkh
        k = k.reshape(batch, self.heads, self.dim_head_qk, height * width).transpose(-2, -1)  # B, heads, N, dkh
        v = v.reshape(batch, self.heads, self.dim_head_v, height * width).transpose(-2, -1)  # B, heads, N, dvh
        relative = {}
        if self.position == "relative":
            rel_h, rel_w = self._relative_tables(height, width)
            relative = {"rel_h": rel_h, "rel_w": rel_w, "size": (height, width)}
        return q, k, v, relative

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, relative: dict) -> Tensor:
        """The attention kernel: (B, heads, N, d) inputs to (B, heads, N, dvh)."""
        if self.attention == "softmax":
            return softmax_attention(q, k, v, **relative, backend=self.backend)
        if self.attention == "linear":
            return linear_attention(q, k, v)
        return swapped_linear_attention(q, k, v)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"AugmentedConv2d expects (B, {self.in_channels}, H, W) input, got shape {tuple(x.shape)}"
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        q, k, v, relative = self._attention_inputs(x)
        out = self._attend(q, k, v, relative)  # B, heads, N, dvh
        height, width = output_size(x.shape[-2:], self.stride)
        out = out.transpose(-2, -1).reshape(x.shape[0], self.dv, height, width)  # B, dv, H', W'
        out = self.proj(out)
        return out if self.conv is None else torch.cat([self.conv(x), out], dim=1)

    @torch.no_grad()
    def attention_maps(self, x: Tensor) -> Tensor:
        """Per-head attention maps of a forward pass on ``x``: (B, heads, N', N'), N' = H' * W'.

        Row ``i`` is the distribution over key positions that output position ``i`` attends to;
        built from the same q, k and position terms as :meth:`forward`.
        """
        self._check_input(x)
        q, k, _, relative = self._attention_inputs(x)
        return attention_weights(q, k, attention=self.attention, **relative)

    @torch.no_grad()
    def context_maps(self, x: Tensor) -> Tensor:
        """LAA-conv's global context maps: ``rho_k(K)^T`` as (B, heads, dkh, H', W').

        Shen et al. (Sec. 3.3) read each row of ``rho_k(K)^T`` as a soft template over the image:
        a distribution over positions that pools one global context vector. Linear attention only.
        """
        if self.attention != "linear":
            raise ValueError(f"context_maps needs attention='linear', this layer has attention={self.attention!r}")
        self._check_input(x)
        _, k, _, _ = self._attention_inputs(x)
        height, width = output_size(x.shape[-2:], self.stride)
        templates = k.softmax(dim=-2).transpose(-2, -1)  # B, heads, dkh, N
        return templates.reshape(*templates.shape[:3], height, width)  # B, heads, dkh, H', W'
