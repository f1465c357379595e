"""Wide residual networks, plain and attention-augmented.

* S. Zagoruyko, N. Komodakis, "Wide Residual Networks", BMVC 2016, https://arxiv.org/abs/1605.07146
  (reference code: https://github.com/szagoruyko/wide-residual-networks): pre-activation basic
  blocks (BN-ReLU-conv3x3-BN-ReLU-dropout-conv3x3), three stages of widths 16k/32k/64k and
  strides 1/2/2, ``(depth - 4) / 6`` blocks per stage, a 1x1 shortcut when the shape changes,
  bias-free convolutions, BN-ReLU-global average pool-linear head.
* I. Bello et al., "Attention Augmented Convolutional Networks", ICCV 2019,
  https://arxiv.org/abs/1904.09925, Sec. 4.1: AA-WRN, the first 3x3 conv of every residual block
  replaced by an AA-conv (:class:`aalib.layers.AugmentedConv2d`) with ``Nh = 8``,
  ``kappa = 2 upsilon = 0.2`` and at least 20 key dimensions per head, relative positions.

:class:`WideResNet` is also the skeleton of the reproduced study's Wide-ResNet
(:func:`aalib.models.repro.repro_wrn`): its stem conv-BN-ReLU followed by the first block's conv is
exactly a pre-activation block's BN-ReLU-conv, so only widths, strides, biases, dropout kind and
head differ, and those are constructor options.

Status: complete for CIFAR-style (3-stage) WRNs; no ImageNet-style stem or bottleneck blocks.
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import Tensor, nn

from ..attention import ATTENTION_KINDS
from ..checks import check_choice, check_int, int_pair
from ..layers import AugmentedConv2d, attention_channels, output_size
from ._registry import register_model

__all__ = ["WideResNet", "PreActBasicBlock", "check_attention", "check_in_channels", "conv3x3", "wrn",
           "stage_sizes"]

AUGMENT_CONVS: tuple[str, ...] = ("first", "second")


def check_attention(attention: str | None) -> str | None:
    """A model's ``attention``: None (plain convolutions) or one of :data:`aalib.attention.ATTENTION_KINDS`."""
    return check_choice("attention", attention, (None, *ATTENTION_KINDS))


def check_in_channels(in_channels: int) -> int:
    """The input images' channel count must be a positive int."""
    return check_int("in_channels", in_channels, note="(3 for colour, 1 for grey images)")


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """3x3 convolution with 'same' padding."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """1x1 convolution (projection shortcut)."""
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=bias)


def conv3x3_or_augmented(
    in_channels: int, out_channels: int, stride: int = 1, bias: bool = False, attention: dict[str, Any] | None = None
) -> nn.Module:
    """A 3x3 conv, or an AA/LAA-conv with the same in/out channels and stride when ``attention``
    (keyword arguments of :class:`AugmentedConv2d`) is given."""
    if attention is None:
        return conv3x3(in_channels, out_channels, stride, bias)
    return AugmentedConv2d(in_channels, out_channels, 3, stride=stride, bias=bias, **attention)


def stage_sizes(input_size: int | Sequence[int], strides: Sequence[int]) -> list[tuple[int, int]]:
    """Feature-map size ``(H, W)`` of each stage for an input of ``input_size`` (one int or
    ``(H, W)``): each stage's first block maps its input as :func:`aalib.layers.output_size` says."""
    size = int_pair("input_size", input_size)
    sizes = []
    for stride in strides:
        size = output_size(size, stride)
        sizes.append(size)
    return sizes


class PreActBasicBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016, https://arxiv.org/abs/1603.05027; WRN's "B(3,3)").

    ``BN-ReLU-conv3x3(stride)-BN-ReLU-dropout-conv3x3`` plus a shortcut. When the shape changes the
    shortcut is a 1x1 conv applied to the pre-activated input (as the WRN reference code does), else
    the identity on the raw input. Either 3x3 conv may be an AA/LAA-conv (``augment_conv``).

    Args:
        in_channels, out_channels, stride: as for the block's first conv.
        dropout: drop probability between the two convs (0 = none).
        spatial_dropout: ``nn.Dropout2d`` (whole channels, the reproduced study) instead of ``nn.Dropout``.
        bias: biases in the 3x3 and shortcut convs (off in WRN, on in the reproduced study).
        attention: keyword arguments of :class:`AugmentedConv2d` (``dk``, ``dv``, ``heads``,
            ``attention``, ``position``, ``extent``, ...) or None for a plain block.
        augment_conv: which conv the attention replaces: ``"first"`` (Bello et al.; it also takes
            the stride) or ``"second"`` (the reproduced study).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        dropout: float = 0.0,
        spatial_dropout: bool = False,
        bias: bool = False,
        attention: dict[str, Any] | None = None,
        augment_conv: str = "first",
    ) -> None:
        super().__init__()
        check_choice("augment_conv", augment_conv, AUGMENT_CONVS)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        first = attention if augment_conv == "first" else None
        second = attention if augment_conv == "second" else None
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = conv3x3_or_augmented(in_channels, out_channels, stride, bias, first)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if dropout > 0:
            self.drop = nn.Dropout2d(dropout) if spatial_dropout else nn.Dropout(dropout)
        else:
            self.drop = nn.Identity()
        self.conv2 = conv3x3_or_augmented(out_channels, out_channels, 1, bias, second)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = conv1x1(in_channels, out_channels, stride, bias) if needs_projection else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(x))  # B, Cin, H, W
        shortcut = x if self.shortcut is None else self.shortcut(out)  # B, Cout, H', W'
        out = self.conv1(out)  # B, Cout, H', W'
        out = self.drop(self.relu(self.bn2(out)))
        out = self.conv2(out)  # B, Cout, H', W'
        return out + shortcut


class WideResNet(nn.Module):
    """Three-stage pre-activation Wide-ResNet (Zagoruyko & Komodakis 2016, Table 1).

    ``stem conv3x3 -> stage1 -> stage2 -> stage3 -> BN-ReLU -> global average pool -> head``.

    Args:
        blocks_per_stage: ``N`` blocks in each stage (``depth = 6 N + 4``).
        widths: output channels of the three stages (``16k, 32k, 64k`` for widening factor ``k``).
        strides: stride of each stage's first block.
        num_classes: output logits.
        in_channels: channels of the input images (3 for colour, 1 for grey).
        stem_channels: channels of the stem conv (16 in WRN).
        dropout, spatial_dropout, bias: see :class:`PreActBasicBlock`.
        attention: per stage, :class:`AugmentedConv2d` keyword arguments for every block of that
            stage, or None for plain blocks; None for a plain network.
        augment_conv: ``"first"`` or ``"second"``, see :class:`PreActBasicBlock`.
        head_hidden: None for WRN's linear classifier; an int for the reproduced study's
            ``Linear(C, head_hidden)-ReLU-Dropout(head_dropout)-Linear`` head.
        head_dropout: dropout of that head.
        init: ``"kaiming"`` (He normal, fan-out, as WRN's reference code; BN weight 1, bias 0) or
            ``"default"`` (PyTorch's initialisation, as the reproduced study).
    """

    def __init__(
        self,
        *,
        blocks_per_stage: int,
        widths: Sequence[int],
        strides: Sequence[int] = (1, 2, 2),
        num_classes: int = 100,
        in_channels: int = 3,
        stem_channels: int = 16,
        dropout: float = 0.0,
        spatial_dropout: bool = False,
        bias: bool = False,
        attention: Sequence[dict[str, Any] | None] | None = None,
        augment_conv: str = "first",
        head_hidden: int | None = None,
        head_dropout: float = 0.0,
        init: str = "kaiming",
    ) -> None:
        super().__init__()
        if len(widths) != 3 or len(strides) != 3:
            raise ValueError(f"widths and strides must have 3 entries (one per stage), got {widths!r}, {strides!r}")
        check_int("blocks_per_stage", blocks_per_stage)
        check_int("num_classes", num_classes)
        check_in_channels(in_channels)
        check_choice("init", init, ("kaiming", "default"))
        attention = [None, None, None] if attention is None else list(attention)
        if len(attention) != 3:
            raise ValueError(f"attention must give one entry per stage (3), got {len(attention)}")
        self.num_classes = num_classes
        self.num_features = widths[-1]

        self.stem = conv3x3(in_channels, stem_channels, bias=bias)  # B, 16, H, W
        in_channels = stem_channels
        stages = []
        for width, stride, stage_attention in zip(widths, strides, attention):
            blocks = []
            for index in range(blocks_per_stage):
                blocks.append(
                    PreActBasicBlock(
                        in_channels,
                        width,
                        stride if index == 0 else 1,
                        dropout=dropout,
                        spatial_dropout=spatial_dropout,
                        bias=bias,
                        attention=stage_attention,
                        augment_conv=augment_conv,
                    )
                )
                in_channels = width
            stages.append(nn.Sequential(*blocks))
        self.stage1, self.stage2, self.stage3 = stages
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        # Global pooling (WRN's 8x8 average pool at CIFAR size) so that any input size runs.
        self.pool = nn.AdaptiveAvgPool2d(1)
        if head_hidden is None:
            self.head: nn.Module = nn.Linear(in_channels, num_classes)
        else:
            self.head = nn.Sequential(
                nn.Linear(in_channels, head_hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(head_dropout),
                nn.Linear(head_hidden, num_classes),
            )
        if init == "kaiming":
            self._init_kaiming()

    def _init_kaiming(self) -> None:
        # q/k/v and W_O projections keep AugmentedConv2d's own initialisation.
        projections = {id(m.qkv) for m in self.modules() if isinstance(m, AugmentedConv2d)}
        projections |= {id(m.proj) for m in self.modules() if isinstance(m, AugmentedConv2d)}
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and id(module) not in projections:
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """The final BN-ReLU feature map: (B, C, H / total stride, W / total stride)."""
        x = self.stem(x)  # B, 16, H, W
        x = self.stage3(self.stage2(self.stage1(x)))  # B, C, H', W'
        return self.relu(self.norm(x))

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.forward_features(x)).flatten(1)  # B, C
        return self.head(x)  # B, num_classes


_DEPTH_RULE = "of the form 6n+4 (10, 16, 22, 28, ...)"


@register_model
def wrn(
    *,
    depth: int = 28,
    width: int = 10,
    num_classes: int = 100,
    in_channels: int = 3,
    dropout: float = 0.0,
    attention: str | None = None,
    dk: int | float = 0.2,
    dv: int | float = 0.1,
    heads: int = 8,
    min_key_dims_per_head: int = 20,
    position: str | None = None,
    augment_conv: str = "first",
    augment_stages: Sequence[int] = (1, 2, 3),
    input_size: int | Sequence[int] = 32,
) -> WideResNet:
    """WRN-``depth``-``width`` (Zagoruyko & Komodakis 2016), optionally attention-augmented (Bello et al. 2019).

    Defaults give WRN-28-10 for CIFAR-100 (36,536,884 parameters); ``attention="softmax"`` with the
    other defaults gives Bello et al.'s AA-WRN-28-10 (Sec. 4.1): the first conv of every block an
    AA-conv with 8 heads, ``dk = max(0.2 Fout, 8 * 20) = 160`` and ``dv = 0.1 Fout = 16/32/64``,
    relative position logits.

    Args:
        depth: ``6 N + 4`` for ``N`` blocks per stage.
        width: widening factor ``k`` (stage widths ``16k, 32k, 64k``).
        num_classes: output logits.
        in_channels: channels of the input images (3 for colour, 1 for grey): the stem conv's input.
        dropout: between the two convs of each block (WRN's best CIFAR setting uses 0.3); 0 = off.
        attention: None (plain WRN), ``"softmax"`` (AA), ``"linear"`` (LAA, Shen et al.) or
            ``"linear_swapped"`` (the reproduced study's defective LAA, for ablations).
        dk, dv: key and value depth per augmented layer; a float is a fraction of the layer's
            output channels (kappa, upsilon), rounded to a multiple of ``heads`` as
            :func:`aalib.layers.attention_channels` does for the layer itself; an int is channels.
        heads: attention heads ``Nh``.
        min_key_dims_per_head: dk is raised to ``heads * min_key_dims_per_head`` when smaller
            (Bello et al.: "at least 20 dimensions per head for the keys"); 0 disables.
        position: None picks ``"relative"`` for softmax (Bello et al.) and ``"sincos"`` for linear
            attention (which cannot take relative logits); or any of ``aalib.layers.POSITIONS``.
        augment_conv: ``"first"`` (Bello et al.) or ``"second"`` (the reproduced study) conv of each block.
        augment_stages: which of the stages 1, 2, 3 get augmented blocks (a sequence, or one int).
        input_size: the image size the relative tables are sized for: each layer's ``extent`` is its
            stage's map size at this input (32, 16, 8 for 32x32), so the logits are exactly Bello's
            at that size and offsets beyond it are clipped at other sizes.
    """
    if check_int("depth", depth, 10, note=_DEPTH_RULE) % 6 != 4:
        raise ValueError(f"depth must be an int >= 10 {_DEPTH_RULE}, got {depth!r}")
    check_int("width", width)
    check_attention(attention)
    check_choice("augment_conv", augment_conv, AUGMENT_CONVS)
    check_int("heads", heads)
    try:
        stages_set = set(augment_stages)
    except TypeError:
        stages_set = {augment_stages}  # a bare int: reported below unless valid
    if not stages_set <= {1, 2, 3}:
        raise ValueError(f"augment_stages must be drawn from (1, 2, 3), got {augment_stages!r}")
    check_int("min_key_dims_per_head", min_key_dims_per_head, 0)
    widths = (16 * width, 32 * width, 64 * width)
    strides = (1, 2, 2)
    sizes = stage_sizes(input_size, strides)

    per_stage: list[dict[str, Any] | None] = [None, None, None]
    if attention is not None:
        if position is None:
            position = "relative" if attention == "softmax" else "sincos"
        for stage, (out_channels, extent) in enumerate(zip(widths, sizes), start=1):
            if stage not in stages_set:
                continue
            stage_dk = max(attention_channels(dk, out_channels, heads, "dk"), heads * min_key_dims_per_head)
            per_stage[stage - 1] = {
                "dk": stage_dk,
                "dv": attention_channels(dv, out_channels, heads, "dv"),
                "heads": heads,
                "attention": attention,
                "position": position,
                "extent": extent,
            }
    return WideResNet(
        blocks_per_stage=(depth - 4) // 6,
        widths=widths,
        strides=strides,
        num_classes=num_classes,
        in_channels=in_channels,
        dropout=dropout,
        attention=per_stage,
        augment_conv=augment_conv,
    )
