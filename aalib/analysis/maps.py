"""Attention maps of a model's AA/LAA layers, read off a real forward pass.

A forward hook on every :class:`aalib.layers.AugmentedConv2d` records the tensor the layer
received; the maps are then the layer's own :meth:`~aalib.layers.AugmentedConv2d.attention_maps`
and :meth:`~aalib.layers.AugmentedConv2d.context_maps` of that input, i.e. the same q/k and
position code as the forward pass, not a re-implementation.

* AA-conv (Bello et al. 2019, https://arxiv.org/abs/1904.09925): row ``i`` of the
  ``(N', N')`` softmax map is where output position ``i`` looks.
* LAA-conv (Shen et al. 2021, https://arxiv.org/abs/1812.01243): the implied map
  ``rho_q(Q) rho_k(K)^T`` has rows that sum to 1 as well; its ``dkh`` global context maps
  (rows of ``rho_k(K)^T``) are what every query mixes (Shen et al., Sec. 3.3).

Coordinates: a layer's map lives on its output grid ``(H', W')``; positions are row-major
(``i = y' W' + x'``). An input pixel ``(y, x)`` belongs to grid cell
``(floor(y H' / H), floor(x W' / W))``: exactly ``(y // S, x // S)`` for a total stride ``S``
that divides the image, which is the ``S x S`` block that the attention branch's average pool
(ceil mode) gives that cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import AugmentedConv2d, output_size
from ..models import attention_layers

__all__ = [
    "LayerMaps",
    "capture_layer_inputs",
    "collect_attention_maps",
    "input_to_grid",
    "grid_index",
    "query_map",
    "upsample_to_image",
    "QueryMaps",
    "query_maps",
]


@dataclass(frozen=True)
class LayerMaps:
    """The maps of one AA/LAA layer for a batch of images."""

    name: str  # qualified module name in the model
    layer: AugmentedConv2d
    input: Tensor  # B, Cin, H_in, W_in: what the layer received in the forward pass
    maps: Tensor  # B, heads, N', N': row i = attention of output position i over key positions
    grid: tuple[int, int]  # (H', W') of the layer's output, N' = H' W'
    context: Tensor | None  # B, heads, dkh, H', W': LAA global context maps (None for AA)

    @property
    def attention(self) -> str:
        return self.layer.attention

    @property
    def heads(self) -> int:
        return self.layer.heads


@torch.no_grad()
def capture_layer_inputs(model: nn.Module, x: Tensor, layers: Sequence[str] | None = None) -> dict[str, Tensor]:
    """Run ``model(x)`` in eval mode and return each AA/LAA layer's input, keyed by layer name.

    ``layers`` restricts the capture to those names (default: every attention layer). Forward
    hooks are removed afterwards, also when the forward pass raises.
    """
    found = dict(attention_layers(model))
    wanted = list(found) if layers is None else list(layers)
    unknown = [name for name in wanted if name not in found]
    if unknown:
        raise ValueError(f"no attention layer named {unknown}; the model's attention layers are {list(found)}")
    captured: dict[str, Tensor] = {}

    def hook(name: str):
        def record(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            captured[name] = inputs[0].detach().clone()  # later in-place ops must not change it

        return record

    handles = [found[name].register_forward_hook(hook(name)) for name in wanted]
    try:
        model.eval()
        model(x)
    finally:
        for handle in handles:
            handle.remove()
    return {name: captured[name] for name in wanted}  # forward order


@torch.no_grad()
def collect_attention_maps(model: nn.Module, x: Tensor, layers: Sequence[str] | None = None) -> list[LayerMaps]:
    """Attention (and LAA context) maps of every AA/LAA layer for images ``x`` (B, 3, H, W)."""
    found = dict(attention_layers(model))
    result = []
    for name, layer_input in capture_layer_inputs(model, x, layers).items():
        layer = found[name]
        grid = output_size(layer_input.shape[-2:], layer.stride)
        context = layer.context_maps(layer_input) if layer.attention == "linear" else None
        result.append(
            LayerMaps(name=name, layer=layer, input=layer_input, maps=layer.attention_maps(layer_input), grid=grid, context=context)
        )
    return result


def input_to_grid(y: int, x: int, image_size: tuple[int, int], grid: tuple[int, int]) -> tuple[int, int]:
    """The cell ``(y', x')`` of a layer's ``grid`` that input pixel ``(y, x)`` falls in (module docstring)."""
    height, width = image_size
    if not (0 <= y < height and 0 <= x < width):
        raise ValueError(f"pixel (y={y}, x={x}) lies outside the {height}x{width} image")
    return min(y * grid[0] // height, grid[0] - 1), min(x * grid[1] // width, grid[1] - 1)


def grid_index(y: int, x: int, grid: tuple[int, int]) -> int:
    """Row-major position ``i = y' W' + x'`` of grid cell ``(y', x')``."""
    if not (0 <= y < grid[0] and 0 <= x < grid[1]):
        raise ValueError(f"cell (y={y}, x={x}) lies outside the {grid[0]}x{grid[1]} grid")
    return y * grid[1] + x


def query_map(maps: Tensor, query: int, grid: tuple[int, int]) -> Tensor:
    """Row ``query`` of ``(..., N', N')`` maps as images ``(..., H', W')``: where that query looks."""
    if maps.shape[-1] != grid[0] * grid[1] or maps.shape[-2] != maps.shape[-1]:
        raise ValueError(f"maps of shape {tuple(maps.shape)} do not fit grid {grid} (want (..., N', N'), N'={grid[0] * grid[1]})")
    return maps[..., query, :].reshape(*maps.shape[:-2], *grid)  # ..., H', W'


def upsample_to_image(grid_maps: Tensor, image_size: tuple[int, int], mode: str = "nearest") -> Tensor:
    """Resize ``(..., H', W')`` maps onto the input image ``(..., H, W)``.

    ``"nearest"`` (default) shows each grid cell as the block of pixels it covers; ``"bilinear"``
    gives a smooth picture. Values are resized, not renormalised.
    """
    lead = grid_maps.shape[:-2]
    flat = grid_maps.reshape(-1, 1, *grid_maps.shape[-2:]).float()  # M, 1, H', W'
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    out = F.interpolate(flat, size=tuple(image_size), mode=mode, **kwargs)  # M, 1, H, W
    return out.reshape(*lead, *image_size)


@dataclass(frozen=True)
class QueryMaps:
    """Where one query pixel looks, in one layer, for one image (batch index 0 of ``layer``)."""

    layer: LayerMaps
    query: tuple[int, int]  # (y, x) input pixel
    query_grid: tuple[int, int]  # (y', x') cell of the layer's grid
    heads: tuple[int, ...]  # which heads the maps below hold
    grid_maps: Tensor  # len(heads), H', W': attention rows as images, each sums to 1
    image_maps: Tensor  # len(heads), H, W: the same upsampled onto the input (nearest)
    argmax: tuple[tuple[int, int], ...]  # per head, the input pixel at the centre of the peak cell


def query_maps(
    layer: LayerMaps, image_size: tuple[int, int], query: tuple[int, int], heads: Sequence[int] | None = None
) -> QueryMaps:
    """Attention of input pixel ``query`` in ``layer`` (heads: all by default), on grid and image."""
    heads = tuple(range(layer.heads)) if heads is None else tuple(heads)
    cell = input_to_grid(query[0], query[1], image_size, layer.grid)
    rows = query_map(layer.maps[0, list(heads)], grid_index(*cell, layer.grid), layer.grid)  # heads, H', W'
    scale = (image_size[0] / layer.grid[0], image_size[1] / layer.grid[1])
    argmax = []
    for grid_map in rows:
        gy, gx = divmod(int(grid_map.argmax()), layer.grid[1])
        argmax.append((min(int((gy + 0.5) * scale[0]), image_size[0] - 1), min(int((gx + 0.5) * scale[1]), image_size[1] - 1)))
    return QueryMaps(layer, tuple(query), cell, heads, rows, upsample_to_image(rows, image_size), tuple(argmax))
