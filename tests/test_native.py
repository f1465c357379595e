"""The "native" CPU kernel (aalib/native.py, aalib/csrc/tiled_attention.cpp): against the plain
reference of tests/test_attention.py on sizes whose query tiles and key chunks are ragged, on a
layer's transposed views, in low precision, whatever the thread count; and its build."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import aalib.attention as attention_module
from aalib import native
from aalib.attention import softmax_attention
from test_attention import NEEDS_NATIVE, random_inputs, reference_softmax_weights

pytestmark = NEEDS_NATIVE

FLOAT32 = dict(atol=2e-5, rtol=1e-4)


@pytest.fixture
def fresh_load():
    """A fresh build decision for the test, and the usual one again after it."""
    native._load.cache_clear()
    yield
    native._load.cache_clear()


def check_against_reference(size, relative, dkh, dvh, heads=3, batch=2):
    """float32 kernel against the float64 reference, outputs and every gradient."""
    q, k, v, rel_h, rel_w = random_inputs(size, torch.float64, dkh=dkh, dvh=dvh, heads=heads, batch=batch, grad=True)
    wide = (q, k, v, rel_h, rel_w) if relative else (q, k, v)
    narrow = [t.detach().float().requires_grad_() for t in wide]
    extra = dict(rel_h=narrow[3], rel_w=narrow[4], size=size) if relative else {}
    out = softmax_attention(*narrow[:3], **extra, backend="native")
    ref = reference_softmax_weights(q, k, **(dict(rel_h=rel_h, rel_w=rel_w, size=size) if relative else {})) @ v
    torch.testing.assert_close(out, ref.float(), **FLOAT32)
    grad_out = torch.randn(ref.shape, dtype=torch.float64)
    got = torch.autograd.grad(out, narrow, grad_out.float())
    want = torch.autograd.grad(ref, wide, grad_out)
    for name, g, w in zip("q k v rel_h rel_w".split(), got, want):
        torch.testing.assert_close(g, w.float(), **FLOAT32, msg=lambda m, name=name: f"gradient of {name}: {m}")


@pytest.mark.parametrize("size, relative, dkh, dvh", [
    ((9, 37), True, 5, 3),  # 333 queries (a last tile of 5), key chunks of 6 rows (222 + 111 keys)
    ((1, 300), True, 8, 8),  # one key row wider than a chunk
    ((12, 25), False, 7, 9),  # no positions: chunks of 256 + 44 keys
    ((2, 3), True, 1, 1),  # fewer queries than a tile
])
def test_ragged_tiles_and_chunks_match_the_reference(size, relative, dkh, dvh):
    check_against_reference(size, relative, dkh, dvh)


def test_a_layers_transposed_views_give_the_contiguous_result():
    """q, k, v as a layer makes them (views of a (B, heads * d, N) convolution output) and as
    contiguous copies: the same output and gradients."""
    batch, heads, size, d = 2, 2, (6, 8), 4
    n = size[0] * size[1]
    conv = torch.randn(batch, 3 * heads * d, n, requires_grad=True)
    views = [t.unflatten(1, (heads, d)).transpose(-2, -1) for t in conv.split(heads * d, dim=1)]  # B, heads, N, d
    rel_h, rel_w = torch.randn(2 * size[0] - 1, d), torch.randn(2 * size[1] - 1, d)
    out = softmax_attention(*views, rel_h=rel_h, rel_w=rel_w, size=size, backend="native")
    (grad,) = torch.autograd.grad(out.square().sum(), conv)
    copies = [t.detach().contiguous().requires_grad_() for t in views]
    out_copy = softmax_attention(*copies, rel_h=rel_h, rel_w=rel_w, size=size, backend="native")
    grads = torch.autograd.grad(out_copy.square().sum(), copies)
    torch.testing.assert_close(out, out_copy, rtol=0, atol=0)
    torch.testing.assert_close(grad, torch.cat([g.transpose(-2, -1).flatten(1, 2) for g in grads], dim=1), rtol=0, atol=0)


def test_results_do_not_depend_on_the_thread_count():
    q, k, v, rel_h, rel_w = random_inputs((7, 9), torch.float32, dkh=6, dvh=4, heads=3, batch=2, grad=True)
    runs = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 5):
            torch.set_num_threads(threads)
            out = softmax_attention(q, k, v, rel_h=rel_h, rel_w=rel_w, size=(7, 9), backend="native")
            runs.append([out, *torch.autograd.grad(out.square().sum(), (q, k, v, rel_h, rel_w))])
    finally:
        torch.set_num_threads(before)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_are_computed_in_float32(dtype):
    size = (5, 6)
    q, k, v, rel_h, rel_w = random_inputs(size, torch.float32)
    low = [t.to(dtype) for t in (q, k, v, rel_h, rel_w)]
    want = softmax_attention(*[t.float() for t in low[:3]], rel_h=low[3].float(), rel_w=low[4].float(), size=size,
                             backend="blocked")
    got = softmax_attention(*low[:3], rel_h=low[3], rel_w=low[4], size=size, backend="native")
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want, atol=1e-2, rtol=1e-2)


def test_native_refuses_what_it_cannot_run():
    q, k, v, rel_h, rel_w = random_inputs((3, 4), torch.float64)
    with pytest.raises(ValueError, match="^backend='native' cannot run here: it computes in float32, and q is "
                                         "torch.float64; use 'auto', 'fused' or 'blocked'$"):
        softmax_attention(q, k, v, backend="native")
    with pytest.raises(ValueError, match="the native kernel takes float32 CPU tensors; k is torch.float64"):
        native.tiled_attention(q[0].float(), k[0], v[0].float(), 1.0)


def test_the_build_is_cached_and_written_atomically(tmp_path: Path, monkeypatch, fresh_load):
    monkeypatch.setenv("AALIB_CACHE_DIR", str(tmp_path))
    assert native.available() and native.unavailable_reason() is None
    (built,) = tmp_path.iterdir()  # one library, no temporary file left
    assert built.name.startswith("tiled_attention-") and built.suffix == ".so"
    stamp = built.stat().st_mtime_ns
    native._load.cache_clear()
    assert native.available() and built.stat().st_mtime_ns == stamp  # a second process loads it


def test_without_a_compiler_auto_runs_the_blocked_kernel(tmp_path: Path, monkeypatch, fresh_load):
    monkeypatch.setenv("AALIB_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    assert not native.available()
    assert native.unavailable_reason().startswith("the build failed: ")
    assert not any(tmp_path.iterdir())
    q = torch.randn(1, 1, 32 * 32, 8)
    assert attention_module._cpu_backend(q, 8, 64) == "blocked"
