"""The reproduced study's models: Wide-(AA|LAA)ResNet and Simple-(AA|LAA)CNN.

Architectures of the seed study (public code: ``yoR-rihsihS/aip-andromeda``, notebooks
``wrn_cifr_final.ipynb`` / ``wrn_tiny_imagenet_final.ipynb`` and ``AA_CNN.py``), rebuilt on
:class:`aalib.layers.AugmentedConv2d` and checked against the parameter counts the study printed
(``tests/test_models.py``):

============================  =========== ===========
model                         100 classes 200 classes
============================  =========== ===========
Wide-ResNet                    11,274,692  11,325,992
Wide-AAResNet / -LAAResNet     11,454,788  11,506,088
Simple-CNN                        419,300
Simple-AACNN / -LAACNN            332,740
============================  =========== ===========

Kept from the seed: widths, strides (including its stride-2 first stage), biases in every conv
and in the q/k/v and output projections, ``Nh = 1/2/4`` by stage, ``dk = 2 Fout``,
``dv = Fout / 2``, a fixed sine-cosine encoding added to the attention branch's input,
``Dropout2d(0.5)``, PyTorch's default initialisation, and the Wide-ResNet's
``BN-ReLU-AvgPool-Linear(512, 512)-ReLU-Dropout(0.25)-Linear`` head.

Seed defects dropped (each would change results, none changes the architecture's parameters):

* LAA softmax axes: the seed softmaxed queries over positions and keys over channels (swapped),
  and scaled both by ``dkh ** -0.5`` first; the layer follows Shen et al. (``rho_q`` over each
  query's features, ``rho_k`` over positions, no scaling), so each implied attention row sums to 1.
* The seed's Tiny-ImageNet LAA model kept the 3x3 conv it replaced (+147,584 parameters); here the
  LAA model is the AA model with linear attention, so their counts are equal at any class count.
* The head's ``Dropout1d(0.25)`` on a (B, 512) tensor zeroed whole samples (PyTorch reads 2-D
  input to ``Dropout1d`` as unbatched (C, L)); ``nn.Dropout(0.25)`` drops features.
* The sine-cosine table was built once for one H x W; the layer rebuilds it for any size, and the
  fixed ``AvgPool2d(4)`` / ``AvgPool2d(8)`` (global at 32x32) is a global average pool, so the
  models run at any input size. The table's channel layout follows
  :func:`aalib.layers.sincos_position_encoding` (rows then columns), not the seed's interleaving:
  a fixed, parameter-free re-ordering of the same frequencies.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ._registry import register_model
from .wrn import ATTENTIONS, WideResNet, check_in_channels, conv3x3_or_augmented, stage_sizes

__all__ = ["SimpleCNN", "ConvBNReLU", "seed_wrn", "seed_simple_cnn", "SEED_HEADS"]

SEED_HEADS: tuple[int, int, int] = (1, 2, 4)  # Nh of the seed's AA/LAA layers, by stage


def _check_attention(attention: str | None) -> None:
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")


def _seed_attention(attention: str, dk: int, dv: int, heads: int, extent: tuple[int, int]) -> dict[str, Any]:
    """AugmentedConv2d options of a seed AA/LAA layer."""
    return {
        "dk": dk,
        "dv": dv,
        "heads": heads,
        "attention": attention,
        "position": "sincos",  # added to the attention branch's input, as in the seed
        "extent": extent,
        "qkv_bias": True,
    }


@register_model
def seed_wrn(
    *, attention: str | None = None, num_classes: int = 100, in_channels: int = 3, dropout: float = 0.5
) -> WideResNet:
    """The seed's Wide-ResNet / Wide-AAResNet / Wide-LAAResNet (a WRN-16-8 variant).

    Stem conv 3->16 (``in_channels`` -> 16 for other inputs); stages of 2 pre-activation blocks
    with widths 128/256/512 and stride 2 in every stage, including the first (maps 16/8/4 at
    32x32); ``Dropout2d(dropout)`` between a block's convs; 1x1 projection shortcut in each
    stage's first block; all convs with bias; head
    ``BN-ReLU-pool-Linear(512, 512)-ReLU-Dropout(dropout / 2)-Linear(512, num_classes)``.
    With ``attention`` the **second** 3x3 conv of all six blocks is an AA (``"softmax"``) or LAA
    (``"linear"``) conv with ``dk = 2 Fout``, ``dv = Fout / 2``, ``Nh = 1, 2, 4`` by stage,
    sine-cosine positions and biased projections.

    Parameters (100 / 200 classes): 11,274,692 / 11,325,992 plain, 11,454,788 / 11,506,088 AA or LAA.
    """
    _check_attention(attention)
    widths, strides = (128, 256, 512), (2, 2, 2)
    per_stage = None
    if attention is not None:
        sizes = stage_sizes(32, strides)  # 16, 8, 4: the maps the seed's fixed tables were built for
        per_stage = [
            _seed_attention(attention, 2 * width, width // 2, heads, size)
            for width, heads, size in zip(widths, SEED_HEADS, sizes)
        ]
    return WideResNet(
        blocks_per_stage=2,
        widths=widths,
        strides=strides,
        num_classes=num_classes,
        in_channels=in_channels,
        stem_channels=16,
        dropout=dropout,
        spatial_dropout=True,
        bias=True,
        attention=per_stage,
        augment_conv="second",
        head_hidden=512,
        head_dropout=dropout / 2,
        init="default",
    )


class ConvBNReLU(nn.Module):
    """``conv3x3 (or AA/LAA-conv) - BN - ReLU``, the Simple-CNN's unit (convs with bias, as the seed)."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, attention: dict[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.conv = conv3x3_or_augmented(in_channels, out_channels, stride, bias=True, attention=attention)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class SimpleCNN(nn.Module):
    """The seed's Simple-CNN: five 3x3 convs whose receptive field (21 px) is smaller than a
    32x32 image, so that attention is the only way to see the whole image.

    ==========  ===================  ======  =============
    unit        channels             map     receptive field
    ==========  ===================  ======  =============
    conv1       3 -> 16              32x32   3
    conv2       16 -> 32, stride 2   16x16   5
    dropout2d
    conv3       32 -> 64             16x16   9       (AA/LAA: dk = dv = 32, Nh = 2)
    conv4       64 -> 128, stride 2  8x8     13
    dropout2d
    conv5       128 -> 256           8x8     21      (AA/LAA: dk = dv = 128, Nh = 4)
    ==========  ===================  ======  =============

    then global average pool and ``Linear(256, num_classes)``. ``in_channels`` other than 3 (1 for
    grey images) changes only conv1's input.
    """

    receptive_field: int = 21  # pixels, of the convolution-only model

    def __init__(
        self, *, num_classes: int = 100, in_channels: int = 3, dropout: float = 0.5, attention: str | None = None
    ) -> None:
        super().__init__()
        _check_attention(attention)
        check_in_channels(in_channels)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        aa3 = aa5 = None
        if attention is not None:
            aa3 = _seed_attention(attention, 32, 32, 2, (16, 16))
            aa5 = _seed_attention(attention, 128, 128, 4, (8, 8))
        self.num_classes = num_classes
        self.num_features = 256
        self.features = nn.Sequential(
            ConvBNReLU(in_channels, 16),  # B, 16, H, W
            ConvBNReLU(16, 32, stride=2),  # B, 32, H/2, W/2
            nn.Dropout2d(dropout),
            ConvBNReLU(32, 64, attention=aa3),  # B, 64, H/2, W/2
            ConvBNReLU(64, 128, stride=2),  # B, 128, H/4, W/4
            nn.Dropout2d(dropout),
            ConvBNReLU(128, 256, attention=aa5),  # B, 256, H/4, W/4
        )
        self.pool = nn.AdaptiveAvgPool2d(1)  # the seed's AvgPool2d(8), global at 32x32
        self.fc = nn.Linear(256, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.features(x)).flatten(1)  # B, 256
        return self.fc(x)  # B, num_classes


@register_model
def seed_simple_cnn(
    *, attention: str | None = None, num_classes: int = 100, in_channels: int = 3, dropout: float = 0.5
) -> SimpleCNN:
    """The seed's Simple-CNN / Simple-AACNN / Simple-LAACNN (see :class:`SimpleCNN`).

    With ``attention``, the two stride-1 convs after the strided ones (32->64 and 128->256) are
    AA (``"softmax"``) or LAA (``"linear"``) convs with ``(dk, dv, Nh) = (32, 32, 2)`` and
    ``(128, 128, 4)``, sine-cosine positions and biased projections.
    Parameters (100 classes): 419,300 plain, 332,740 AA or LAA.
    """
    return SimpleCNN(num_classes=num_classes, in_channels=in_channels, dropout=dropout, attention=attention)
