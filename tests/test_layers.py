"""AugmentedConv2d: shapes at any size, the paper's output layout, position encodings, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from aalib import AugmentedConv2d
from aalib.layers import attention_channels, output_size, sincos_position_encoding
from aalib.models import attention_layers, build_model

CONFIGS = [
    ("softmax", "relative"),
    ("softmax", "sincos"),
    ("softmax", "learned"),
    ("softmax", "none"),
    ("linear", "sincos"),
    ("linear", "learned"),
    ("linear", "none"),
    ("linear_swapped", "sincos"),
]


def make(attention="softmax", position="relative", stride=1, **kw):
    kw = {"dk": 8, "dv": 6, "heads": 2, "extent": 8, **kw}
    return AugmentedConv2d(5, 10, 3, attention=attention, position=position, stride=stride, **kw)


@pytest.mark.parametrize("attention,position", CONFIGS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [(7, 5), (9, 9), (3, 8), (1, 1)])
def test_output_shape_any_size(attention, position, stride, size):
    layer = make(attention, position, stride)
    out = layer(torch.randn(2, 5, *size))
    assert out.shape == (2, 10, math.ceil(size[0] / stride), math.ceil(size[1] / stride))
    assert out.shape[-2:] == output_size(size, stride)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("attention,position", CONFIGS)
def test_runs_at_a_new_size_after_32x32(attention, position):
    layer = make(attention, position, extent=32)
    assert layer(torch.randn(1, 5, 32, 32)).shape == (1, 10, 32, 32)
    assert layer(torch.randn(1, 5, 48, 40)).shape == (1, 10, 48, 40)
    if position == "sincos":
        assert layer.sincos.shape == (5, 48, 40)


def _reference_forward(layer: AugmentedConv2d, x: torch.Tensor) -> torch.Tensor:
    """Bello et al., Eq. 4 written per pixel: concat[conv(x), W_O concat_h(sum_j a_hij v_hj)]."""
    if layer.stride > 1:
        pooled = F.avg_pool2d(x, layer.stride, layer.stride, ceil_mode=True)
    else:
        pooled = x
    if layer.position == "sincos":
        pooled = pooled + sincos_position_encoding(layer.in_channels, *pooled.shape[-2:])
    batch, _, height, width = pooled.shape
    w_qkv = layer.qkv.weight[:, :, 0, 0]  # 2dk + dv, Fin
    pixels = pooled.flatten(2).transpose(1, 2)  # B, N, Fin
    qkv = pixels @ w_qkv.T
    q, k, v = qkv.split([layer.dk, layer.dk, layer.dv], dim=-1)
    dkh, dvh = layer.dim_head_qk, layer.dim_head_v
    heads_out = []
    for h in range(layer.heads):
        qh, kh, vh = q[..., h * dkh:(h + 1) * dkh], k[..., h * dkh:(h + 1) * dkh], v[..., h * dvh:(h + 1) * dvh]
        logits = torch.empty(batch, height * width, height * width, dtype=x.dtype)
        for i in range(height * width):
            yi, xi = divmod(i, width)
            for j in range(height * width):
                yj, xj = divmod(j, width)
                key = kh[:, j]
                if layer.position == "relative":
                    # offsets clip at the table's extent (Shaw et al.)
                    dy = max(-(layer.extent[0] - 1), min(layer.extent[0] - 1, yj - yi))
                    dx = max(-(layer.extent[1] - 1), min(layer.extent[1] - 1, xj - xi))
                    key = key + layer.rel_h[dy + layer.extent[0] - 1] + layer.rel_w[dx + layer.extent[1] - 1]
                logits[:, i, j] = (qh[:, i] * key).sum(-1)
        if layer.attention == "softmax":
            weights = torch.softmax(logits / math.sqrt(dkh), dim=-1)
        elif layer.attention == "linear":
            weights = torch.softmax(qh, -1) @ torch.softmax(kh, -2).transpose(1, 2)
        else:  # the reproduced study's swapped axes, after its dkh ** -0.5 scaling of q and k
            weights = torch.softmax(qh / math.sqrt(dkh), -2) @ torch.softmax(kh / math.sqrt(dkh), -1).transpose(1, 2)
        heads_out.append(weights @ vh)  # B, N, dvh
    attn = torch.cat(heads_out, dim=-1)  # B, N, dv
    attn = attn @ layer.proj.weight[:, :, 0, 0].T
    attn = attn.transpose(1, 2).reshape(batch, layer.dv, height, width)
    return torch.cat([layer.conv(x), attn], dim=1)


@pytest.mark.parametrize("attention,position", [c for c in CONFIGS if c[1] != "learned"])
@pytest.mark.parametrize("stride", [1, 2])
def test_forward_matches_per_pixel_reference(attention, position, stride):
    torch.manual_seed(0)
    layer = make(attention, position, stride, extent=3).double()  # extent 3 < 5: offsets clip
    x = torch.randn(2, 5, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(layer(x), _reference_forward(layer, x))


def test_attention_output_keeps_pixel_layout():
    """The value at output pixel (y, x) is the one its own query attended to (no scrambled reshape)."""
    torch.manual_seed(0)
    layer = make("softmax", "none", dv=10).double()  # no conv branch: output is attention only
    assert layer.conv is None
    x = torch.randn(1, 5, 4, 6, dtype=torch.float64)
    out = layer(x)
    maps = layer.attention_maps(x)  # 1, heads, N, N
    q, k, v, _ = layer._attention_inputs(x)
    per_head = maps @ v  # 1, heads, N, dvh
    y, xx = 2, 5
    pixel = per_head[0, :, y * 6 + xx].reshape(-1)  # heads * dvh values, head-major
    expected = layer.proj.weight[:, :, 0, 0] @ pixel
    torch.testing.assert_close(out[0, :, y, xx], expected)


@pytest.mark.parametrize("attention,position", CONFIGS)
@pytest.mark.parametrize("stride", [1, 2])
def test_attention_maps(attention, position, stride):
    layer = make(attention, position, stride)
    maps = layer.attention_maps(torch.randn(3, 5, 7, 6))
    n = math.ceil(7 / stride) * math.ceil(6 / stride)
    assert maps.shape == (3, 2, n, n)
    if attention == "linear_swapped":  # the reproduced study's defect: only all N rows together sum to N
        torch.testing.assert_close(maps.sum((-2, -1)), torch.full((3, 2), float(n)))
    else:
        torch.testing.assert_close(maps.sum(-1), torch.ones(3, 2, n))


def test_relative_tables_exact_within_extent_and_clipped_beyond():
    layer = make(extent=(4, 6))
    rel_h, rel_w = layer._relative_tables(4, 6)
    torch.testing.assert_close(rel_h, layer.rel_h)
    torch.testing.assert_close(rel_w, layer.rel_w)
    rel_h, _ = layer._relative_tables(2, 6)  # smaller map: the middle rows
    torch.testing.assert_close(rel_h, layer.rel_h[2:5])
    rel_h, _ = layer._relative_tables(6, 6)  # larger map: offsets beyond +-3 reuse the ends
    assert rel_h.shape == (11, 4)
    torch.testing.assert_close(rel_h[:3], layer.rel_h[:1].expand(3, -1))
    torch.testing.assert_close(rel_h[-3:], layer.rel_h[-1:].expand(3, -1))


def test_relative_parameter_count_matches_bello():
    """(2(H + W) - 2) * dkh relative parameters per layer, shared by the heads."""
    layer = make(extent=(8, 8), dk=8, heads=2)
    assert layer.rel_h.numel() + layer.rel_w.numel() == (2 * (8 + 8) - 2) * 4


@pytest.mark.parametrize("attention,position", CONFIGS)
def test_every_parameter_gets_a_gradient(attention, position):
    layer = make(attention, position)
    layer(torch.randn(2, 5, 6, 7)).square().mean().backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("attention,position", CONFIGS)
def test_state_dict_round_trip(attention, position):
    torch.manual_seed(0)
    layer = make(attention, position)
    x = torch.randn(2, 5, 6, 6)
    expected = layer(x)
    clone = make(attention, position)
    clone.load_state_dict(layer.state_dict())
    torch.testing.assert_close(clone(x), expected)
    assert not any("sincos" in key for key in layer.state_dict())  # rebuilt, never saved


@pytest.mark.parametrize("attention,position", CONFIGS)
def test_double_and_to_move_every_table(attention, position):
    layer = make(attention, position)
    layer(torch.randn(1, 5, 6, 6))  # builds the sine-cosine cache
    layer = layer.double()
    for name, tensor in [*layer.named_parameters(), *layer.named_buffers()]:
        assert tensor.dtype == torch.float64, name
    out = layer(torch.randn(1, 5, 6, 6, dtype=torch.float64))
    assert out.dtype == torch.float64
    layer = layer.to("meta")
    for name, tensor in [*layer.named_parameters(), *layer.named_buffers()]:
        assert tensor.device.type == "meta", name


def test_fractions_are_kappa_and_upsilon():
    layer = AugmentedConv2d(16, 40, dk=0.2, dv=0.1, heads=2)
    assert (layer.dk, layer.dv) == (8, 4)
    assert layer.conv.out_channels == 36
    assert AugmentedConv2d(16, 40, dk=8, dv=1.0, heads=2).conv is None


def test_fractions_round_to_a_multiple_of_heads():
    # 0.2 * 100 = 20 channels do not split over 8 heads: the nearest multiple of 8 is 16
    layer = AugmentedConv2d(100, 100, dk=0.2, dv=0.1, heads=8)
    assert (layer.dk, layer.dv) == (16, 8) and layer.conv.out_channels == 92
    assert attention_channels(0.01, 100, 8) == 8  # at least one channel per head
    assert attention_channels(1.0, 14, 4) == 12  # never more than out_channels where a multiple fits
    with pytest.raises(ValueError, match="heads=8 must divide dk=20"):  # a count is exact
        AugmentedConv2d(100, 100, dk=20, dv=8, heads=8)


@pytest.mark.parametrize("width, dk, dv, heads", [(1, 0.2, 0.1, 8), (2, 0.25, 0.5, 4), (3, 0.3, 0.15, 6), (1, 0.5, 1.0, 2)])
def test_layer_and_wrn_builder_turn_fractions_into_the_same_channels(width, dk, dv, heads):
    model = build_model("wrn", depth=10, width=width, attention="softmax", dk=dk, dv=dv, heads=heads,
                        min_key_dims_per_head=0)
    for _, built in attention_layers(model):
        alone = AugmentedConv2d(built.in_channels, built.out_channels, dk=dk, dv=dv, heads=heads)
        assert (built.dk, built.dv) == (alone.dk, alone.dv)
        assert built.dk % heads == 0 and built.dv % heads == 0


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(dk=9, dv=6, heads=2), "heads=2 must divide dk=9 and dv=6"),
        (dict(dk=8, dv=5, heads=2), "heads=2 must divide dk=8 and dv=5"),
        (dict(dk=1.5, dv=6, heads=2), "dk=1.5 as a fraction of out_channels must lie in \\(0, 1\\]"),
        (dict(dk=8, dv=0.0, heads=2), "dv=0.0 as a fraction"),
        (dict(dk=8, dv=12, heads=2), "dv=12 exceeds out_channels=10"),
        (dict(dk=0, dv=6, heads=2), "dk=0 channels must be >= 1"),
        (dict(dk=8, dv=6, heads=2, attention="linear", position="relative"), "linear attention never forms"),
        (dict(dk=8, dv=6, heads=2, attention="linear_swapped", position="relative"), "got attention=.linear_swapped."),
        (dict(dk=8, dv=6, heads=2, attention="sparse"), "attention must be one of \\('softmax', 'linear', 'linear_swapped'\\)"),
        (dict(dk=8, dv=6, heads=2, position="rotary"), "position must be one of"),
        (dict(dk=8, dv=6, heads=2, backend="flash"), "backend must be one of \\('auto', 'fused', 'blocked', 'native', 'flex'\\), got 'flash'"),
        (dict(dk=8, dv=6, heads=0), "heads must be a positive int"),
        (dict(dk=8, dv=6, heads=2, stride=0), "stride must be a positive int"),
        (dict(dk=8, dv=6, heads=2, extent=0), "extent must be a positive int"),
    ],
)
def test_invalid_configurations_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AugmentedConv2d(5, 10, **kwargs)


def test_even_kernel_and_wrong_input_raise():
    with pytest.raises(ValueError, match="kernel_size must be a positive odd int"):
        AugmentedConv2d(5, 10, 2, dk=8, dv=6, heads=2)
    layer = make()
    with pytest.raises(ValueError, match="expects \\(B, 5, H, W\\) input, got shape \\(2, 4, 6, 6\\)"):
        layer(torch.randn(2, 4, 6, 6))


def test_sincos_encoding_values():
    enc = sincos_position_encoding(8, 3, 5)
    assert enc.shape == (8, 3, 5)
    # rows use the first 4 channels: sin(y), cos(y), sin(y / 100), cos(y / 100)
    torch.testing.assert_close(enc[0, :, 0], torch.sin(torch.arange(3.0)))
    torch.testing.assert_close(enc[1, :, 0], torch.cos(torch.arange(3.0)))
    torch.testing.assert_close(enc[2, :, 4], torch.sin(torch.arange(3.0) / 100))
    torch.testing.assert_close(enc[4, 2, :], torch.sin(torch.arange(5.0)))  # columns
    assert (enc[:4, :, 0:1] == enc[:4, :, :]).all()  # row channels constant along x


def test_strided_attention_attends_over_the_pooled_input():
    torch.manual_seed(0)
    layer = make("softmax", "none", stride=2).double()
    x = torch.randn(1, 5, 5, 7, dtype=torch.float64)
    pooled = F.avg_pool2d(x, 2, 2, ceil_mode=True)
    unstrided = make("softmax", "none").double()
    unstrided.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(x)[:, 4:], unstrided(pooled)[:, 4:])


def test_context_maps_are_distributions_over_positions():
    layer = make("linear", "sincos", stride=2)
    maps = layer.context_maps(torch.randn(2, 5, 7, 6))
    assert maps.shape == (2, 2, 4, 4, 3)  # B, heads, dkh, H', W'
    torch.testing.assert_close(maps.sum((-2, -1)), torch.ones(2, 2, 4))
    with pytest.raises(ValueError, match="context_maps needs attention='linear'"):
        make("softmax").context_maps(torch.randn(1, 5, 4, 4))


@pytest.mark.parametrize("position", ["relative", "none"])
def test_backends_agree_in_the_layer(position):
    """The fused and blocked kernels are the same function of the layer's weights (float64)."""
    torch.manual_seed(0)
    layers = [AugmentedConv2d(5, 10, dk=8, dv=6, heads=2, position=position, extent=4, backend=b).double()
              for b in ("fused", "blocked")]
    layers[1].load_state_dict(layers[0].state_dict())
    x = torch.randn(2, 5, 7, 6, dtype=torch.float64)
    outs = [layer(x) for layer in layers]
    torch.testing.assert_close(outs[0], outs[1])
    grads = [torch.autograd.grad(out.square().sum(), list(layer.parameters())) for out, layer in zip(outs, layers)]
    for g0, g1 in zip(*grads):
        torch.testing.assert_close(g0, g1)
    assert "backend='blocked'" in repr(layers[1]) and "backend" not in repr(AugmentedConv2d(5, 10, dk=8, dv=6, heads=2))
