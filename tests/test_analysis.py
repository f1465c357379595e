"""aalib.analysis: receptive fields (theoretical and Luo et al.'s effective), attention maps, attributions."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from aalib.analysis import (
    default_gradcam_layer,
    effective_receptive_field,
    grad_cam,
    integrated_gradients,
    plot_context_maps,
    save_figure,
    theoretical_receptive_fields,
)
from aalib.analysis.maps import (
    capture_layer_inputs,
    collect_attention_maps,
    grid_index,
    input_to_grid,
    query_map,
    query_maps,
    upsample_to_image,
)
from aalib.analysis.plots import plot_attention_over_image, plot_attributions, plot_erf_grid, plot_theoretical_rf
from aalib.layers import AugmentedConv2d
from aalib.models import build_model

SIZE = 32  # the study's image size: the Simple-CNN's 21 px field is smaller than the image


def simple_cnn(attention: str | None) -> nn.Module:
    torch.manual_seed(0)
    return build_model("repro_simple_cnn", attention=attention, num_classes=2).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))  # B, 3, H, W


# -- theoretical receptive field -------------------------------------------------------------


def test_theoretical_rf_of_simple_cnn_is_21_px() -> None:
    fields = theoretical_receptive_fields(simple_cnn(None))
    assert [f.local_size for f in fields] == [3, 5, 9, 13, 21]
    assert [f.jump for f in fields] == [1, 2, 2, 4, 4]
    assert not any(f.is_global for f in fields)
    assert fields[-1].size(SIZE) == 21


@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_theoretical_rf_is_global_from_the_first_attention_layer(attention: str) -> None:
    fields = theoretical_receptive_fields(simple_cnn(attention))
    assert [f.kind for f in fields] == ["conv", "conv", attention, "conv", attention]
    assert [f.is_global for f in fields] == [False, False, True, True, True]
    assert [f.size(SIZE) for f in fields] == [3, 5, SIZE, SIZE, SIZE]
    # the AA layer's own sub-convs (conv branch, qkv, proj) are not walked as layers of their own
    assert all(".conv." not in f.name and not f.name.endswith(("qkv", "proj")) for f in fields)


def test_theoretical_rf_skips_shortcuts_and_counts_pools() -> None:
    wrn = build_model("wrn", depth=10, width=1, num_classes=2)
    fields = theoretical_receptive_fields(wrn)
    assert not any("shortcut" in f.name for f in fields)
    assert len(fields) == 1 + 2 * 3  # stem + two convs per block
    assert fields[-1].jump == 4  # strides 1, 2, 2, each counted once
    pooled = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, dilation=2))
    assert [(f.kind, f.local_size) for f in theoretical_receptive_fields(pooled)] == [("conv", 3), ("pool", 4), ("conv", 12)]


# -- effective receptive field (Luo et al. 2016) ---------------------------------------------


def test_erf_of_plain_simple_cnn_is_zero_outside_its_theoretical_field(images: torch.Tensor) -> None:
    erf = effective_receptive_field(simple_cnn(None), images)
    assert erf.layer == "features.6.conv" and erf.map.shape == (SIZE, SIZE) and erf.images == 3
    assert erf.map.max() == 1.0
    assert erf.centre == (16, 16)  # central unit (4, 4) of the 8x8 map, jump 4
    inside = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    inside[16 - 10 : 16 + 11, 16 - 10 : 16 + 11] = True  # 21 x 21 around the centre
    assert (erf.map[~inside] == 0).all()
    assert (erf.map[inside] > 0).float().mean() > 0.9  # and it does fill that window
    assert 0 < erf.radius(0.5) < erf.radius(0.9) <= 10 * 2**0.5
    assert 0 < erf.fraction_above(0.05) <= 21 * 21 / SIZE**2


@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_erf_through_attention_is_global(images: torch.Tensor, attention: str) -> None:
    erf = effective_receptive_field(simple_cnn(attention), images)
    assert erf.map.max() == 1.0
    assert (erf.map > 0).all()  # every input pixel reaches the central unit
    earlier = effective_receptive_field(simple_cnn(attention), images, layer="features.1.conv")
    assert (earlier.map > 0).sum() <= 5 * 5  # before the attention layer the field is still local


def test_erf_rejects_an_unknown_layer(images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="features.6.conv"):
        effective_receptive_field(simple_cnn(None), images, layer="nope")


# -- attention maps --------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_maps_match_the_layer_on_its_captured_input(images: torch.Tensor, attention: str) -> None:
    model = simple_cnn(attention)
    layers = collect_attention_maps(model, images)
    assert [m.name for m in layers] == ["features.3.conv", "features.6.conv"]
    with torch.no_grad():
        before = model.features[:3](images)  # what features.3.conv receives in eval mode
    torch.testing.assert_close(layers[0].input, before)
    for m, (heads, grid) in zip(layers, [(2, (16, 16)), (4, (8, 8))]):
        n = grid[0] * grid[1]
        assert m.grid == grid and m.maps.shape == (3, heads, n, n) and m.attention == attention
        torch.testing.assert_close(m.maps.sum(-1), torch.ones(3, heads, n))
        torch.testing.assert_close(m.maps, m.layer.attention_maps(m.input))
        if attention == "linear":
            assert m.context.shape == (3, heads, m.layer.dim_head_qk, *grid)
            torch.testing.assert_close(m.context.sum((-2, -1)), torch.ones(3, heads, m.layer.dim_head_qk))
        else:
            assert m.context is None


def test_strided_attention_layer_grid_and_capture() -> None:
    layer = AugmentedConv2d(4, 8, 3, dk=4, dv=4, heads=2, stride=2, position="relative", extent=5)
    model = nn.Sequential(layer).eval()
    x = torch.randn(2, 4, 9, 9)
    (maps,) = collect_attention_maps(model, x)
    assert maps.grid == (5, 5) and maps.maps.shape == (2, 2, 25, 25)
    assert set(capture_layer_inputs(model, x)) == {"0"}
    with pytest.raises(ValueError, match="no attention layer named"):
        capture_layer_inputs(model, x, ["1"])


def test_query_pixel_maps_to_the_stride_2_and_stride_4_grids() -> None:
    assert input_to_grid(5, 7, (32, 32), (16, 16)) == (2, 3)
    assert input_to_grid(31, 0, (32, 32), (16, 16)) == (15, 0)
    assert input_to_grid(5, 7, (32, 32), (8, 8)) == (1, 1)
    # an odd image: the stride-2 layer's ceil-mode pool gives cell p // 2 to pixel p
    assert [input_to_grid(p, p, (9, 9), (5, 5)) for p in range(9)] == [(p // 2, p // 2) for p in range(9)]
    assert grid_index(2, 3, (16, 16)) == 2 * 16 + 3
    with pytest.raises(ValueError, match="outside"):
        input_to_grid(32, 0, (32, 32), (16, 16))


def test_query_map_and_upsampling() -> None:
    maps = torch.rand(2, 3, 16, 16).softmax(-1)  # B, heads, N', N' on a 4x4 grid
    row = query_map(maps, 5, (4, 4))
    assert row.shape == (2, 3, 4, 4)
    torch.testing.assert_close(row.flatten(-2), maps[..., 5, :])
    image = upsample_to_image(row, (8, 8))
    assert image.shape == (2, 3, 8, 8)
    torch.testing.assert_close(image[..., ::2, ::2], row)  # each cell is a 2x2 block
    torch.testing.assert_close(image[..., 1::2, 1::2], row)


# -- attributions ----------------------------------------------------------------------------


@pytest.mark.parametrize("attention", [None, "softmax", "linear"])
def test_attributions_have_input_shape_and_are_finite(images: torch.Tensor, attention: str | None) -> None:
    model = simple_cnn(attention)
    assert default_gradcam_layer(model) == "features.6.conv"
    ig = integrated_gradients(model, images[:2], torch.tensor([0, 1]), n_steps=4)
    assert ig.shape == images[:2].shape and torch.isfinite(ig).all() and ig.abs().sum() > 0
    cam = grad_cam(model, images[:2])  # the predicted class
    assert cam.shape == (2, SIZE, SIZE) and torch.isfinite(cam).all() and (cam >= 0).all()


# -- figures ---------------------------------------------------------------------------------


def test_figure_builders_return_figures(images: torch.Tensor, tmp_path) -> None:
    pixels = (images.sigmoid() * 255).to(torch.uint8)
    layer = collect_attention_maps(simple_cnn("softmax"), images[:1])[0]
    row = ("m", pixels[0], query_maps(layer, (SIZE, SIZE), (3, 4)))
    erf = effective_receptive_field(simple_cnn(None), images[:1])
    fields = theoretical_receptive_fields(simple_cnn(None))
    figures = [
        plot_attention_over_image([row, row]),
        plot_context_maps(torch.rand(2, 4, 8, 8), max_maps=3),
        plot_theoretical_rf({"cnn": fields, "aa": theoretical_receptive_fields(simple_cnn("softmax"))}, SIZE, highlight=2),
        plot_erf_grid({"cnn": {"untrained": erf, "trained": erf}}, {"cnn": fields[-1]}),
        plot_attributions(pixels[:2], {"cnn": {"ig": torch.rand(2, 3, SIZE, SIZE), "cam": torch.zeros(2, SIZE, SIZE)}}),
    ]
    assert all(isinstance(f, Figure) for f in figures)
    assert save_figure(figures[0], "", "x.png") is None
    path = save_figure(figures[0], tmp_path, "run/seed0.png")
    assert path == tmp_path / "run_seed0.png" and path.stat().st_size > 0
