"""The kernels and the AA layer on CUDA, float32 and bfloat16, outputs and gradients.

The kernels are compared with the plain references of tests/test_attention.py (evaluated in
float64 on the CPU, on the inputs rounded to the tested dtype), every backend of
``aalib.attention.BACKENDS``; the layer with a float64 copy of itself on the CPU. float32 runs
with TF32 off, so it is held to float32 tolerances; bfloat16 to a relative error of the whole
tensor. Every test is marked ``cuda`` and skipped without a CUDA GPU (``make gpu-check`` runs them).
"""

from __future__ import annotations

import functools

import pytest
import torch

from aalib.attention import BACKENDS, CPU_ONLY_BACKENDS, linear_attention, softmax_attention
from test_attention import SIZES, random_inputs, reference_linear_weights, reference_softmax_weights
from test_layers import CONFIGS, make

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

DTYPES = [torch.float32, torch.bfloat16]
FLOAT32_TOL = dict(atol=1e-4, rtol=1e-4)
# bf16 (8 significant bits): ||got - want|| / ||want|| of outputs, and of gradients (longer chains of roundings)
BF16_ERROR = {"output": 5e-2, "gradient": 1e-1}
CUDA_BACKENDS = [b for b in BACKENDS if b not in CPU_ONLY_BACKENDS]  # every backend that runs on CUDA


@pytest.fixture(autouse=True)
def no_tf32(monkeypatch):
    """float32 products and convolutions in full precision on CUDA, as on the CPU."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


def check(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype, what: str = "output") -> None:
    """``got`` (on CUDA, computed in ``dtype``) against a float64 CPU reference; ``what`` is
    "output" or "gradient" (optionally followed by a name, for the message)."""
    assert got.device.type == "cuda" and torch.isfinite(got).all(), what
    got = got.detach().cpu().double()
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, **FLOAT32_TOL, msg=lambda m: f"{what}: {m}")
    else:
        error = ((got - want).norm() / want.norm()).item()
        assert error <= BF16_ERROR[what.split()[0]], (what, error)


def rounded(tensors, dtype: torch.dtype) -> list[torch.Tensor]:
    """The float64 values that ``dtype`` holds, as leaves that take gradients."""
    return [t.to(dtype).double().requires_grad_() for t in tensors]


def upstream(shape, dtype: torch.dtype) -> torch.Tensor:
    """A fixed random upstream gradient, float64 values that ``dtype`` holds."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype).double()


@functools.cache
def softmax_reference(size, relative: bool, dtype: torch.dtype):
    """Inputs, output, upstream gradient and input gradients of Bello et al.'s attention (float64)."""
    q, k, v, rel_h, rel_w = random_inputs(size, torch.float64)
    inputs = rounded((q, k, v, rel_h, rel_w) if relative else (q, k, v), dtype)
    extra = dict(rel_h=inputs[3], rel_w=inputs[4], size=size) if relative else {}
    out = reference_softmax_weights(*inputs[:2], **extra) @ inputs[2]
    grad_out = upstream(out.shape, dtype)
    grads = torch.autograd.grad(out, inputs, grad_out)
    return [t.detach() for t in inputs], out.detach(), grad_out, grads


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_softmax_attention_on_cuda(size, dtype, relative, backend):
    inputs, want, grad_out, want_grads = softmax_reference(size, relative, dtype)
    cuda = [t.to("cuda", dtype).requires_grad_() for t in inputs]
    extra = dict(rel_h=cuda[3], rel_w=cuda[4], size=size) if relative else {}
    out = softmax_attention(*cuda[:3], **extra, backend=backend)
    assert out.dtype == dtype
    check(out, want, dtype)
    names = ["q", "k", "v", "rel_h", "rel_w"]  # as many as there are inputs
    for name, got, expected in zip(names, torch.autograd.grad(out, cuda, grad_out.to("cuda", dtype)), want_grads):
        check(got, expected, dtype, f"gradient {name}")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_attention_on_cuda(size, dtype):
    inputs = rounded(random_inputs(size, torch.float64)[:3], dtype)
    want = reference_linear_weights(*inputs[:2]) @ inputs[2]
    grad_out = upstream(want.shape, dtype)
    want_grads = torch.autograd.grad(want, inputs, grad_out)
    cuda = [t.detach().to("cuda", dtype).requires_grad_() for t in inputs]
    out = linear_attention(*cuda)
    assert out.dtype == dtype
    check(out, want.detach(), dtype)
    for name, got, expected in zip("qkv", torch.autograd.grad(out, cuda, grad_out.to("cuda", dtype)), want_grads):
        check(got, expected, dtype, f"gradient {name}")


LAYER_CASES = [(attention, position, backend) for attention, position in CONFIGS
               for backend in (CUDA_BACKENDS if attention == "softmax" else ("auto",))]


@pytest.mark.parametrize("attention, position, backend", LAYER_CASES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_layer_on_cuda_matches_cpu(attention, position, backend, stride, dtype, channels_last):
    """Forward and backward of AugmentedConv2d on CUDA (float32, or bf16 autocast as in training)
    against the same weights in float64 on the CPU, default backend (all are exact, and
    tests/test_layers.py holds that layer to the per-pixel reference): output, input gradient and
    every parameter's gradient."""
    torch.manual_seed(0)
    layer = make(attention, position, stride, backend=backend)
    reference = make(attention, position, stride).double()
    reference.load_state_dict(layer.state_dict())
    layer = layer.cuda()
    x = torch.randn(2, 5, 9, 7).double()  # float32 values: the CUDA layer gets the same input
    want = reference(x.requires_grad_())
    grad_out = upstream(want.shape, dtype)
    want_grads = torch.autograd.grad(want, [x, *reference.parameters()], grad_out)

    x_cuda = x.detach().float().cuda()
    if channels_last:
        layer = layer.to(memory_format=torch.channels_last)
        x_cuda = x_cuda.contiguous(memory_format=torch.channels_last)
    x_cuda.requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out = layer(x_cuda)
    assert out.dtype == dtype
    check(out, want.detach(), dtype)
    got_grads = torch.autograd.grad(out, [x_cuda, *layer.parameters()], grad_out.to("cuda", out.dtype))
    names = ["input", *(name for name, _ in layer.named_parameters())]
    for name, got, expected in zip(names, got_grads, want_grads):
        assert got.dtype == torch.float32, name  # parameters and input stay float32 under autocast
        check(got, expected, dtype, f"gradient {name}")
