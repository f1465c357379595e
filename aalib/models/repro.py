"""The reproduced study's models: Wide-(AA|LAA)ResNet and Simple-(AA|LAA)CNN.

Architectures of the reproduced study (public code: ``yoR-rihsihS/aip-andromeda``, notebooks
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

Kept from the study: widths, strides (including its stride-2 first stage), biases in every conv
and in the q/k/v and output projections, ``Nh = 1/2/4`` by stage, ``dk = 2 Fout``,
``dv = Fout / 2``, a fixed sine-cosine encoding added to the attention branch's input,
``Dropout2d(0.5)``, PyTorch's default initialisation, and the Wide-ResNet's
``BN-ReLU-AvgPool-Linear(512, 512)-ReLU-Dropout(0.25)-Linear`` head.

The study's defects dropped (each would change results, none changes the architecture's parameters):

* LAA softmax axes: the study softmaxed queries over positions and keys over channels (swapped),
  and scaled both by ``dkh ** -0.5`` first; the layer follows Shen et al. (``rho_q`` over each
  query's features, ``rho_k`` over positions, no scaling), so each implied attention row sums to 1.
* The study's Tiny-ImageNet LAA model kept the 3x3 conv it replaced (+147,584 parameters); here the
  LAA model is the AA model with linear attention, so their counts are equal at any class count.
* The head's ``Dropout1d(0.25)`` on a (B, 512) tensor zeroed whole samples (PyTorch reads 2-D
  input to ``Dropout1d`` as unbatched (C, L)); ``nn.Dropout(0.25)`` drops features.
* The study built its sine-cosine table once, for one H x W; the layer rebuilds it for any size,
  and the fixed ``AvgPool2d(4)`` / ``AvgPool2d(8)`` (global at 32x32) is a global average pool, so
  the models run at any input size. The table's channel layout follows
  :func:`aalib.layers.sincos_position_encoding` (rows then columns), not the study's interleaving:
  a fixed, parameter-free re-ordering of the same frequencies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ._registry import register_alias, register_model
from ..attention import LINEAR_KINDS
from ..checks import check_int
from .wrn import WideResNet, check_attention, check_in_channels, conv3x3_or_augmented, stage_sizes

__all__ = ["SimpleCNN", "repro_wrn", "repro_simple_cnn", "StudyResult", "STUDY_RESULTS", "study_name",
           "study_result", "study_epoch_seconds"]

STUDY_HEADS: tuple[int, int, int] = (1, 2, 4)  # Nh of the study's AA/LAA layers, by stage


_STUDY_NETWORKS: dict[str, tuple[str, str]] = {"repro_simple_cnn": ("Simple-", "CNN"), "repro_wrn": ("Wide-", "ResNet")}


def study_name(model: str, attention: str | None) -> str:
    """The study's name of its ``model`` (``repro_simple_cnn`` or ``repro_wrn``) with ``attention``:
    ``Simple-CNN``, ``Simple-AACNN``, ``Wide-LAAResNet``, ...; the swapped-axes layer (the
    study's own, :func:`aalib.attention.swapped_linear_attention`) adds ``" (swapped axes)"``."""
    first, last = _STUDY_NETWORKS[model]
    layer = "" if attention is None else "LAA" if attention in LINEAR_KINDS else "AA"
    return f"{first}{layer}{last}" + (" (swapped axes)" if attention == "linear_swapped" else "")


@dataclass(frozen=True)
class StudyResult:
    """What the reproduced study printed for one model: the last epoch of its one run."""

    top1: float  # test top-1, %
    top5: float  # test top-5, %
    epoch_seconds: float  # seconds per training epoch, on a GPU the study did not record


# The reproduced study's results (Roy & Meghal 2024), keyed by (dataset as aalib.data.list_datasets()
# names it, model, attention). Its LAA layers had the swapped softmax axes, so its LAA numbers are
# those of attention="linear_swapped".
STUDY_RESULTS: dict[tuple[str, str, str | None], StudyResult] = {
    ("cifar100", "repro_wrn", None): StudyResult(57.11, 84.33, 8.42),
    ("cifar100", "repro_wrn", "softmax"): StudyResult(52.91, 80.31, 11.84),
    ("cifar100", "repro_wrn", "linear_swapped"): StudyResult(55.32, 82.95, 12.61),
    ("cifar100", "repro_simple_cnn", None): StudyResult(37.74, 67.94, 2.43),
    ("cifar100", "repro_simple_cnn", "softmax"): StudyResult(41.19, 71.51, 4.07),
    ("cifar100", "repro_simple_cnn", "linear_swapped"): StudyResult(36.88, 67.81, 3.87),
    ("tiny_imagenet", "repro_wrn", None): StudyResult(42.39, 69.61, 57.4),
    ("tiny_imagenet", "repro_wrn", "softmax"): StudyResult(42.18, 68.44, 124.1),
    ("tiny_imagenet", "repro_wrn", "linear_swapped"): StudyResult(43.51, 70.52, 120.1),
}


def study_result(dataset: str, model: str, attention: str | None) -> StudyResult | None:
    """What the study printed for ``model`` with ``attention`` on ``dataset``, None where it printed
    nothing. ``attention="linear"`` (Shen et al.'s layer) gets the study's LAA numbers too: the
    same architecture and parameters, the layer the study set out to build."""
    kind = "linear_swapped" if attention == "linear" else attention
    return STUDY_RESULTS.get((dataset, model, kind))


def study_epoch_seconds(dataset: str) -> dict[str | None, float]:
    """The study's seconds per training epoch of its Wide-ResNet on ``dataset``, keyed by attention
    (None, ``"softmax"``, ``"linear"`` for its LAA layer); empty for a dataset it did not report."""
    results = {kind: study_result(dataset, "repro_wrn", kind) for kind in (None, "softmax", "linear")}
    return {kind: result.epoch_seconds for kind, result in results.items() if result is not None}


def _repro_attention(attention: str, dk: int, dv: int, heads: int, extent: tuple[int, int]) -> dict[str, Any]:
    """AugmentedConv2d options of an AA/LAA layer of the study."""
    return {
        "dk": dk,
        "dv": dv,
        "heads": heads,
        "attention": attention,
        "position": "sincos",  # added to the attention branch's input, as in the study
        "extent": extent,
        "qkv_bias": True,
    }


@register_model
def repro_wrn(
    *, attention: str | None = None, num_classes: int = 100, in_channels: int = 3, dropout: float = 0.5
) -> WideResNet:
    """The study's Wide-ResNet / Wide-AAResNet / Wide-LAAResNet (a WRN-16-8 variant).

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
    check_attention(attention)
    widths, strides = (128, 256, 512), (2, 2, 2)
    per_stage = None
    if attention is not None:
        sizes = stage_sizes(32, strides)  # 16, 8, 4: the maps the study's fixed tables were built for
        per_stage = [
            _repro_attention(attention, 2 * width, width // 2, heads, size)
            for width, heads, size in zip(widths, STUDY_HEADS, sizes)
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
    """``conv3x3 (or AA/LAA-conv) - BN - ReLU``, the Simple-CNN's unit (convs with bias, as the study)."""

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
    """The study's Simple-CNN: five 3x3 convs whose receptive field (21 px) is smaller than a
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
        check_attention(attention)
        check_in_channels(in_channels)
        check_int("num_classes", num_classes)
        aa3 = aa5 = None
        if attention is not None:
            aa3 = _repro_attention(attention, 32, 32, 2, (16, 16))
            aa5 = _repro_attention(attention, 128, 128, 4, (8, 8))
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
        self.pool = nn.AdaptiveAvgPool2d(1)  # the study's AvgPool2d(8), global at 32x32
        self.fc = nn.Linear(256, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.features(x)).flatten(1)  # B, 256
        return self.fc(x)  # B, num_classes


@register_model
def repro_simple_cnn(
    *, attention: str | None = None, num_classes: int = 100, in_channels: int = 3, dropout: float = 0.5
) -> SimpleCNN:
    """The study's Simple-CNN / Simple-AACNN / Simple-LAACNN (see :class:`SimpleCNN`).

    With ``attention``, the two stride-1 convs after the strided ones (32->64 and 128->256) are
    AA (``"softmax"``) or LAA (``"linear"``) convs with ``(dk, dv, Nh) = (32, 32, 2)`` and
    ``(128, 128, 4)``, sine-cosine positions and biased projections.
    Parameters (100 classes): 419,300 plain, 332,740 AA or LAA.
    """
    return SimpleCNN(num_classes=num_classes, in_channels=in_channels, dropout=dropout, attention=attention)


# Deprecated names of these presets, kept so that runs made under them still load ("seed" in
# aalib means only a random seed).
register_alias("seed_wrn", "repro_wrn")
register_alias("seed_simple_cnn", "repro_simple_cnn")
