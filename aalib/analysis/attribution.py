"""Input attributions with captum: Integrated Gradients and Grad-CAM.

* M. Sundararajan, A. Taly, Q. Yan, "Axiomatic Attribution for Deep Networks", ICML 2017,
  https://arxiv.org/abs/1703.01365: ``IntegratedGradients(model).attribute(x, target=c)``, with
  the all-zero baseline, i.e. the dataset mean image for normalised inputs.
* R. R. Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
  Localization", ICCV 2017, https://arxiv.org/abs/1610.02391:
  ``LayerGradCam(model, layer).attribute(x, target=c, relu_attributions=True)``, resized to the
  input with ``LayerAttribution.interpolate``.

Grad-CAM's default layer is the last conv or AA/LAA layer on the main path
(:func:`aalib.analysis.receptive.theoretical_receptive_fields`), the one before global pooling.
Models run in eval mode.
"""

from __future__ import annotations

import torch
from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam
from torch import Tensor, nn

from .receptive import theoretical_receptive_fields

__all__ = ["default_gradcam_layer", "integrated_gradients", "grad_cam"]


def default_gradcam_layer(model: nn.Module) -> str:
    """Name of the last conv or AA/LAA layer on the main path (the one before global pooling)."""
    names = [f.name for f in theoretical_receptive_fields(model) if f.kind != "pool"]
    if not names:
        raise ValueError("the model has no conv or attention layer for Grad-CAM")
    return names[-1]


def predicted_class(model: nn.Module, x: Tensor) -> Tensor:
    """The model's top-1 class per image, (B,) int64 (eval mode, no gradients)."""
    model.eval()
    with torch.no_grad():
        return model(x).argmax(dim=1)


def _targets(model: nn.Module, x: Tensor, target: int | Tensor | None) -> int | Tensor:
    return predicted_class(model, x) if target is None else target


def integrated_gradients(model: nn.Module, x: Tensor, target: int | Tensor | None = None, *, n_steps: int = 32) -> Tensor:
    """Integrated Gradients of the ``target`` logit (default: the predicted class) w.r.t. ``x``.

    Returns (B, 3, H, W), the shape of ``x``; ``n_steps`` points of the Gauss-Legendre path integral.
    """
    model.eval()
    target = _targets(model, x, target)
    return IntegratedGradients(model).attribute(x, target=target, n_steps=n_steps).detach()  # B, 3, H, W


def grad_cam(model: nn.Module, x: Tensor, target: int | Tensor | None = None, *, layer: str | None = None) -> Tensor:
    """Grad-CAM of the ``target`` logit at ``layer`` (default :func:`default_gradcam_layer`),
    ReLU'd and bilinearly resized to the input: (B, H, W)."""
    model.eval()
    target = _targets(model, x, target)
    name = default_gradcam_layer(model) if layer is None else layer
    modules = dict(model.named_modules())
    if name not in modules:
        raise ValueError(f"no module named {name!r} in the model")
    cam = LayerGradCam(model, modules[name]).attribute(x, target=target, relu_attributions=True)  # B, 1, H', W'
    cam = LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")  # B, 1, H, W
    return cam[:, 0].detach()  # B, H, W
