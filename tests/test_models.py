"""Model zoo: registry, every model's forward/backward at two sizes, exact parameter counts,
attention-layer layout (Bello et al.'s AA-WRN and the study's models), receptive fields."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aalib.layers import AugmentedConv2d
from aalib.models import (
    attention_layers,
    build_model,
    count_parameters,
    list_models,
    model_arguments,
)

# Small variants of every registered model (the full WRN-28-10 is only counted, never run).
RUN_CONFIGS: list[tuple[str, dict]] = [
    ("wrn", {"depth": 10, "width": 2}),
    ("wrn", {"depth": 10, "width": 2, "attention": "softmax"}),
    ("wrn", {"depth": 10, "width": 2, "attention": "linear", "num_classes": 10}),
    ("wrn", {"depth": 10, "width": 2, "attention": "softmax", "augment_conv": "second", "augment_stages": (2, 3), "dropout": 0.3}),
    ("repro_wrn", {}),
    ("repro_wrn", {"attention": "softmax"}),
    ("repro_wrn", {"attention": "linear", "num_classes": 200}),
    ("repro_simple_cnn", {}),
    ("repro_simple_cnn", {"attention": "softmax"}),
    ("repro_simple_cnn", {"attention": "linear", "num_classes": 10}),
]


def _id(config: tuple[str, dict]) -> str:
    name, kwargs = config
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


# -- registry ------------------------------------------------------------------------------
def test_list_models_is_sorted_and_complete():
    names = list_models()
    assert names == sorted(names)
    assert {"wrn", "repro_wrn", "repro_simple_cnn"} <= set(names)


def test_every_registered_model_is_exercised():
    assert {name for name, _ in RUN_CONFIGS} == set(list_models())


def test_unknown_model_lists_known_models():
    with pytest.raises(ValueError, match="unknown model 'resnet9000'") as info:
        build_model("resnet9000")
    for name in list_models():
        assert name in str(info.value)


def test_bad_kwarg_is_named_with_allowed_ones():
    with pytest.raises(ValueError) as info:
        build_model("wrn", widht=10)
    message = str(info.value)
    assert "widht" in message
    for allowed in ("depth", "width", "num_classes", "attention", "dk", "dv", "heads", "input_size"):
        assert allowed in message
    with pytest.raises(ValueError, match="depth"):
        build_model("repro_simple_cnn", depth=10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"depth": 27}, "6n\\+4"),
        ({"width": 0}, "width"),
        ({"attention": "cosine"}, "attention"),
        ({"attention": "softmax", "augment_conv": "third"}, "augment_conv"),
        ({"attention": "softmax", "augment_stages": (0, 4)}, "augment_stages"),
        ({"attention": "softmax", "dk": 1.5}, "dk"),
        ({"attention": "linear", "position": "relative"}, "relative"),
    ],
)
def test_wrn_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model("wrn", **{"depth": 10, "width": 1, **kwargs})


def test_repro_models_reject_unknown_attention():
    for name in ("repro_wrn", "repro_simple_cnn"):
        with pytest.raises(ValueError, match="attention"):
            build_model(name, attention="cosine")


def test_model_arguments_gives_defaults():
    args = model_arguments("wrn")
    assert args["depth"] == 28 and args["width"] == 10 and args["attention"] is None
    assert model_arguments("repro_wrn") == {"attention": None, "num_classes": 100, "in_channels": 3, "dropout": 0.5}


def test_count_parameters():
    model = build_model("repro_simple_cnn")
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    model.fc.weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == count_parameters(model) - model.fc.weight.numel()


# -- every model runs, at two sizes, and trains -----------------------------------------------
@pytest.mark.parametrize("config", RUN_CONFIGS, ids=_id)
def test_forward_backward_any_size(config):
    name, kwargs = config
    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    num_classes = kwargs.get("num_classes", 100)
    for size in ((32, 32), (40, 24)):
        model.zero_grad(set_to_none=True)
        out = model(torch.randn(2, 3, *size))
        assert out.shape == (2, num_classes)
        assert torch.isfinite(out).all()
        out.logsumexp(dim=1).sum().backward()
        for pname, param in model.named_parameters():
            assert param.grad is not None, f"{pname} got no gradient at {size}"
            assert torch.isfinite(param.grad).all(), f"{pname} has a non-finite gradient at {size}"
        model.eval()
        with torch.no_grad():
            assert torch.isfinite(model(torch.randn(1, 3, *size))).all()
        model.train()


# -- parameter counts ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, kwargs, expected",
    [
        ("repro_wrn", {}, 11_274_692),
        ("repro_wrn", {"attention": "softmax"}, 11_454_788),
        ("repro_wrn", {"attention": "linear"}, 11_454_788),
        ("repro_wrn", {"num_classes": 200}, 11_325_992),
        ("repro_wrn", {"num_classes": 200, "attention": "softmax"}, 11_506_088),
        # the study's Tiny-ImageNet LAA model had a stray 3x3 conv (+147,584); this one does not
        ("repro_wrn", {"num_classes": 200, "attention": "linear"}, 11_506_088),
        ("repro_simple_cnn", {}, 419_300),
        ("repro_simple_cnn", {"attention": "softmax"}, 332_740),
        ("repro_simple_cnn", {"attention": "linear"}, 332_740),
        ("repro_simple_cnn", {"attention": "linear_swapped"}, 332_740),
        ("wrn", {}, 36_536_884),  # WRN-28-10, CIFAR-100, bias-free convs
        ("wrn", {"depth": 28, "width": 10, "num_classes": 10}, 36_479_194),
    ],
)
def test_exact_parameter_counts(name, kwargs, expected):
    assert count_parameters(build_model(name, **kwargs)) == expected


def test_aa_wrn_28_10_matches_bello():
    """Bello et al. Table 1: AA-WRN-28-10 on CIFAR-100 has 36.2M parameters (baseline 36.3M)."""
    model = build_model("wrn", attention="softmax")
    assert 36_150_000 <= count_parameters(model) <= 36_350_000
    assert count_parameters(model) < count_parameters(build_model("wrn"))
    layers = attention_layers(model)
    assert len(layers) == 12  # the first conv of all 3 x 4 blocks
    dv_by_stage = {"stage1": 16, "stage2": 32, "stage3": 64}
    extent_by_stage = {"stage1": (32, 32), "stage2": (16, 16), "stage3": (8, 8)}
    for name, layer in layers:
        stage, block, conv = name.split(".")
        assert conv == "conv1"
        assert layer.attention == "softmax" and layer.position == "relative"
        assert layer.heads == 8 and layer.dk == 160 and layer.dim_head_qk == 20
        assert layer.dv == dv_by_stage[stage]
        assert layer.extent == extent_by_stage[stage]
        assert layer.rel_h.shape == (2 * extent_by_stage[stage][0] - 1, 20)
        # strided blocks: the AA-conv takes the stride (conv branch strides, attention pools)
        assert layer.stride == (2 if stage != "stage1" and block == "0" else 1)
        assert layer.conv.bias is None and layer.qkv.bias is None


def test_wrn_options_reach_the_layers():
    model = build_model(
        "wrn", depth=10, width=2, attention="linear", dk=16, dv=8, heads=2, min_key_dims_per_head=0, input_size=64
    )
    layers = attention_layers(model)
    assert [layer.extent for _, layer in layers] == [(64, 64), (32, 32), (16, 16)]
    assert all(layer.dk == 16 and layer.dv == 8 and layer.heads == 2 for _, layer in layers)
    assert all(layer.position == "sincos" and layer.attention == "linear" for _, layer in layers)
    # min_key_dims_per_head raises dk to heads * 20
    model = build_model("wrn", depth=10, width=2, attention="softmax", dk=16, dv=8, heads=2)
    assert all(layer.dk == 40 for _, layer in attention_layers(model))
    # second conv, last stage only, rectangular input size
    model = build_model(
        "wrn", depth=16, width=1, attention="softmax", augment_conv="second", augment_stages=(3,), input_size=(32, 48)
    )
    layers = attention_layers(model)
    assert [name for name, _ in layers] == ["stage3.0.conv2", "stage3.1.conv2"]
    assert all(layer.extent == (8, 12) and layer.stride == 1 for _, layer in layers)


# -- attention layers ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, kwargs, expected",
    [
        ("wrn", {"depth": 10, "width": 1}, 0),
        ("wrn", {"depth": 16, "width": 1, "attention": "softmax"}, 6),
        ("wrn", {"depth": 16, "width": 1, "attention": "linear", "augment_stages": (1, 3)}, 4),
        ("repro_wrn", {}, 0),
        ("repro_wrn", {"attention": "softmax"}, 6),
        ("repro_wrn", {"attention": "linear"}, 6),
        ("repro_simple_cnn", {}, 0),
        ("repro_simple_cnn", {"attention": "softmax"}, 2),
        ("repro_simple_cnn", {"attention": "linear"}, 2),
    ],
)
def test_attention_layers_count_and_kind(name, kwargs, expected):
    layers = attention_layers(build_model(name, **kwargs))
    assert len(layers) == expected
    for _, layer in layers:
        assert isinstance(layer, AugmentedConv2d)
        assert layer.attention == kwargs["attention"]


@pytest.mark.parametrize("name, kwargs", [("wrn", {"depth": 16, "width": 1, "attention": "softmax"}), ("repro_simple_cnn", {"attention": "linear"})])
def test_attention_layers_are_in_forward_order(name, kwargs):
    model = build_model(name, **kwargs)
    called: list[str] = []
    for layer_name, layer in attention_layers(model):
        layer.register_forward_hook(lambda module, args, out, layer_name=layer_name: called.append(layer_name))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 32, 32))
    assert called == [layer_name for layer_name, _ in attention_layers(model)]


@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_repro_wrn_layout(attention):
    model = build_model("repro_wrn", attention=attention)
    layers = attention_layers(model)
    assert [name for name, _ in layers] == [f"stage{s}.{b}.conv2" for s in (1, 2, 3) for b in (0, 1)]
    widths = [128, 128, 256, 256, 512, 512]
    assert [layer.heads for _, layer in layers] == [1, 1, 2, 2, 4, 4]
    for (_, layer), width in zip(layers, widths):
        assert layer.dk == 2 * width and layer.dv == width // 2
        assert layer.position == "sincos" and layer.stride == 1
        assert layer.qkv.bias is not None and layer.proj.bias is not None and layer.conv.bias is not None
    # stride 2 in every stage (maps 16/8/4 at 32x32), Dropout2d(0.5) in every block
    assert [m.stride for m in (model.stage1[0].conv1, model.stage2[0].conv1, model.stage3[0].conv1)] == [(2, 2)] * 3
    assert sum(isinstance(m, nn.Dropout2d) for m in model.modules()) == 6
    # the head drops features (nn.Dropout), never whole samples (the study's Dropout1d on 2-D input)
    assert not any(isinstance(m, nn.Dropout1d) for m in model.modules())
    head_dropout = [m for m in model.head.modules() if type(m) is nn.Dropout]
    assert len(head_dropout) == 1 and head_dropout[0].p == 0.25
    assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 512, 4, 4)


def test_repro_simple_cnn_layout():
    layers = attention_layers(build_model("repro_simple_cnn", attention="softmax"))
    assert [(layer.in_channels, layer.out_channels, layer.dk, layer.dv, layer.heads) for _, layer in layers] == [
        (32, 64, 32, 32, 2),
        (128, 256, 128, 128, 4),
    ]
    assert all(layer.position == "sincos" and layer.qkv.bias is not None for _, layer in layers)


def _support(model: nn.Module, size: int) -> tuple[int, int]:
    """Rows and columns of the input that the centre unit of the last feature map depends on."""
    model.eval()
    grad_total = torch.zeros(size, size)
    for seed in range(4):
        torch.manual_seed(seed)
        x = torch.randn(2, 3, size, size, requires_grad=True)
        features = model.forward_features(x)  # B, C, h, w
        h, w = features.shape[-2:]
        features[:, :, h // 2, w // 2].sum().backward()
        grad_total += x.grad.abs().sum(dim=(0, 1))
    rows = torch.nonzero(grad_total.sum(dim=1)).flatten()
    cols = torch.nonzero(grad_total.sum(dim=0)).flatten()
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def test_simple_cnn_receptive_field_is_21_and_attention_sees_everything():
    torch.manual_seed(0)
    plain = build_model("repro_simple_cnn")
    assert plain.receptive_field == 21
    assert _support(plain, 64) == (21, 21)
    assert _support(build_model("repro_simple_cnn", attention="linear"), 64) == (64, 64)


@pytest.mark.parametrize("old, new", [("seed_wrn", "repro_wrn"), ("seed_simple_cnn", "repro_simple_cnn")])
def test_old_preset_names_build_the_same_model_with_a_deprecation_warning(old: str, new: str) -> None:
    from aalib.experiment import load_config
    from aalib.models import canonical_model_name

    assert old not in list_models() and old in list_models(deprecated=True) and canonical_model_name(old) == new
    torch.manual_seed(0)
    with pytest.warns(DeprecationWarning, match=f"model '{old}' is deprecated; use '{new}'"):
        built = build_model(old, attention="softmax")
    torch.manual_seed(0)
    expected = build_model(new, attention="softmax")
    assert [(k, v.shape) for k, v in built.state_dict().items()] == [(k, v.shape) for k, v in expected.state_dict().items()]
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), expected.state_dict().values()))
    assert load_config(None, [f"model={old}", "dataset=long_range", "model_args.attention=softmax"]).model == old
