"""Theoretical and effective receptive fields.

**Theoretical receptive field** (the rule, per spatial axis). Walk the model's modules in
registration order, which is forward order for the models of :mod:`aalib.models`, keeping the
size ``r`` (pixels) an output unit sees and the jump ``j`` (input pixels between neighbouring
units), starting from ``r = j = 1``. A conv or pool with kernel ``k``, stride ``s``, dilation
``d`` gives ``r += (d (k - 1)) j`` and then ``j *= s``:

* a 1x1 conv adds nothing (``k = 1``); a strided one still multiplies the jump;
* modules named ``shortcut`` or ``downsample`` (residual projections) and everything inside
  them are skipped: they run beside the main path, whose own strided conv already counts the stride;
* an AA/LAA layer (:class:`aalib.layers.AugmentedConv2d`) counts its conv branch like a conv,
  and from it on every unit sees the **whole input** (``is_global``): its attention branch mixes
  all positions (Bello et al. 2019, https://arxiv.org/abs/1904.09925; Shen et al. 2021,
  https://arxiv.org/abs/1812.01243);
* a global (adaptive) pool before the classifier is not a feature layer and is left out.

For the study's Simple-CNN this gives 3, 5, 9, 13, 21 px.

**Effective receptive field** (W. Luo, Y. Li, R. Urtasun, R. Zemel, "Understanding the Effective
Receptive Field in Deep Convolutional Neural Networks", NeurIPS 2016,
https://arxiv.org/abs/1605.04640): set the gradient of the central unit of a layer's output
(all its channels) to 1 and everything else to 0, back-propagate to the input, take the absolute
value summed over the colour channels and average over images. Models run in eval mode
(running BN statistics, no dropout), so images do not interact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..attention import ATTENTION_KINDS
from ..checks import int_pair
from ..layers import AugmentedConv2d

__all__ = [
    "ReceptiveField",
    "theoretical_receptive_fields",
    "EffectiveReceptiveField",
    "effective_receptive_field",
]

SKIPPED_BRANCHES: tuple[str, ...] = ("shortcut", "downsample")  # residual projections: not the main path


@dataclass(frozen=True)
class ReceptiveField:
    """Theoretical receptive field of one conv/pool/AA layer's output (square kernels assumed)."""

    name: str  # qualified module name
    kind: str  # "conv", "pool", or the attention kind of an AA/LAA layer ("softmax", "linear", ...)
    kernel_size: int
    stride: int
    dilation: int
    jump: int  # total stride: input pixels between neighbouring output units
    local_size: int  # pixels per side seen through convs and pools alone
    is_global: bool  # an attention layer at or before this one: the whole input is seen

    def size(self, input_size: int) -> int:
        """Pixels per side seen on an ``input_size`` image: the whole side once global."""
        return input_size if self.is_global else min(self.local_size, input_size)


def _on_main_path(name: str) -> bool:
    return not any(part in SKIPPED_BRANCHES for part in name.split("."))


def theoretical_receptive_fields(model: nn.Module) -> list[ReceptiveField]:
    """Receptive field after every conv, pool and AA/LAA layer on the main path, in forward order
    (the rule is in the module docstring)."""
    size, jump, is_global = 1, 1, False
    inside_attention: tuple[str, ...] = ()  # names of AA layers, whose sub-convs are not walked again
    result = []
    for name, module in model.named_modules():
        if not name or not _on_main_path(name) or any(name.startswith(prefix + ".") for prefix in inside_attention):
            continue
        if isinstance(module, AugmentedConv2d):
            kind, kernel, stride, dilation = module.attention, module.kernel_size, module.stride, 1
            inside_attention += (name,)
        elif isinstance(module, nn.Conv2d):
            kind, kernel, stride, dilation = ("conv", int_pair("kernel_size", module.kernel_size)[0],
                                              int_pair("stride", module.stride)[0], int_pair("dilation", module.dilation)[0])
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            kernel = int_pair("kernel_size", module.kernel_size)[0]
            stride = int_pair("stride", module.stride or module.kernel_size)[0]
            kind, dilation = "pool", int_pair("dilation", getattr(module, "dilation", 1))[0]
        else:
            continue
        size += dilation * (kernel - 1) * jump
        jump *= stride
        is_global = is_global or kind in ATTENTION_KINDS
        result.append(ReceptiveField(name, kind, kernel, stride, dilation, jump, size, is_global))
    return result


@dataclass(frozen=True)
class EffectiveReceptiveField:
    """Luo et al.'s ERF of one layer: ``map`` (H, W) normalised to max 1."""

    layer: str  # qualified name of the layer whose central unit was back-propagated
    map: Tensor  # H, W, float, max 1 (all zero only if the gradient vanished)
    centre: tuple[int, int]  # input pixel (y, x) under the central output unit
    images: int  # how many images were averaged

    def radius(self, mass: float = 0.9) -> float:
        """Smallest radius (pixels, Euclidean, about :attr:`centre`) of a disc holding ``mass`` of the ERF."""
        if not 0.0 < mass <= 1.0:
            raise ValueError(f"mass must lie in (0, 1], got {mass}")
        height, width = self.map.shape
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        distance = ((ys - self.centre[0]) ** 2 + (xs - self.centre[1]) ** 2).double().sqrt().flatten()  # H W
        order = distance.argsort()
        cumulative = self.map.double().flatten()[order].cumsum(0)  # H W
        total = float(cumulative[-1])
        if total == 0.0:
            return 0.0
        reached = int(torch.searchsorted(cumulative, torch.tensor(mass * total, dtype=torch.float64) * (1 - 1e-12)))
        return float(distance[order][min(reached, len(order) - 1)])

    def fraction_above(self, threshold: float = 0.05) -> float:
        """Fraction of input pixels whose ERF value exceeds ``threshold`` (of the maximum)."""
        return float((self.map > threshold).float().mean())


def _find_layer(model: nn.Module, layer: str | None) -> tuple[str, ReceptiveField]:
    fields = theoretical_receptive_fields(model)
    if not fields:
        raise ValueError("the model has no conv, pool or attention layer to take a receptive field of")
    if layer is None:
        return fields[-1].name, fields[-1]
    for field in fields:
        if field.name == layer:
            return layer, field
    raise ValueError(f"no main-path layer named {layer!r}; layers: {[f.name for f in fields]}")


def effective_receptive_field(model: nn.Module, x: Tensor, layer: str | None = None) -> EffectiveReceptiveField:
    """Luo et al.'s ERF of ``layer`` (default: the last main-path layer) on images ``x`` (B, 3, H, W).

    The gradient of ``sum over channels of output[:, :, h'//2, w'//2]`` w.r.t. ``x`` gives each
    image's map in one backward pass (eval mode: images are independent).
    """
    name, field = _find_layer(model, layer)
    module = dict(model.named_modules())[name]
    outputs: list[Tensor] = []

    def keep(module: nn.Module, inputs: tuple[Tensor, ...], out: Tensor) -> Tensor:
        outputs.append(out)
        return out.clone()  # later in-place ops (ReLU(inplace=True)) act on the copy, not on ours

    handle = module.register_forward_hook(keep)
    model.eval()
    x = x.detach().clone().requires_grad_(True)
    try:
        with torch.enable_grad():
            model(x)
            out = outputs[0]  # B, C, H', W'
            cy, cx = out.shape[-2] // 2, out.shape[-1] // 2
            out[:, :, cy, cx].sum().backward()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    erf = x.grad.abs().sum(dim=1).mean(dim=0)  # H, W
    peak = erf.max()
    erf = erf / peak if peak > 0 else erf
    centre = (min(cy * field.jump, x.shape[-2] - 1), min(cx * field.jump, x.shape[-1] - 1))
    return EffectiveReceptiveField(layer=name, map=erf.detach(), centre=centre, images=x.shape[0])
