"""The ``"native"`` CPU kernel of softmax attention: ``aalib/csrc/tiled_attention.cpp``, built on
first use with the machine's C++ compiler and loaded through :mod:`ctypes`.

The kernel fuses what the ``"blocked"`` kernel of :mod:`aalib.attention` does in separate PyTorch
passes over a block (the q.k products, the relative logits of Bello et al. 2019, Sec. 3.2, the
softmax, the products with v and, backwards, every gradient) into one pass over tiles of 8
queries against chunks of about 256 keys, each tile of logits in the core's first-level cache;
a tile's relative logits are computed from the embedding tables as it is loaded, so no
per-query ``(N, H)``/``(N, W)`` logits are stored:
FlashAttention's recipe (Dao et al. 2022; its online softmax forward, FlashAttention-2's backward,
Dao 2023). Exact up to float32 rounding; memory ``O(tile)`` per thread beyond the inputs, the
outputs and one log-sum-exp per query; never an ``N x N`` tensor. Float32 only; heads are split
across ``torch.get_num_threads()`` threads, each head computed the same way whatever the thread
count, so results do not depend on it.

Build: ``$CXX`` or the first of ``g++``, ``c++``, ``clang++`` on the PATH compiles the source with
``-O3 -march=native`` into ``$AALIB_CACHE_DIR`` (default ``~/.cache/aalib``), under a name that
hashes the source, the flags, the compiler's version and the CPU, so a shared home directory
serves machines of several kinds; the library is written atomically (concurrent first uses are
safe). No compiler, a failed build, or ``AALIB_NATIVE=0`` leaves the kernel unavailable
(:func:`unavailable_reason` says why) and ``backend="auto"`` takes ``"blocked"`` instead.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from .machine import cpu_name

__all__ = ["available", "tiled_attention", "unavailable_reason"]

SOURCE = Path(__file__).resolve().parent / "csrc" / "tiled_attention.cpp"
FLAGS: tuple[str, ...] = ("-O3", "-march=native", "-fopenmp-simd", "-std=c++17", "-shared", "-fPIC", "-pthread")
_BUILD_SECONDS = 300


def _compiler() -> str | None:
    return os.environ.get("CXX") or next((c for c in ("g++", "c++", "clang++") if shutil.which(c)), None)


def _cpu_flags() -> str:
    """The CPU's feature flags (``-march=native`` builds for them), or '' where /proc is absent."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            return next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        return ""


def _library_path(compiler: str) -> Path:
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), *FLAGS, version, cpu_name(), _cpu_flags()]).encode()).hexdigest()
    cache = Path(os.environ.get("AALIB_CACHE_DIR") or Path.home() / ".cache" / "aalib")
    return cache / f"tiled_attention-{key[:16]}.so"


def _build(compiler: str, target: Path) -> None:
    """Compile :data:`SOURCE` into ``target`` atomically (a temporary file, then a rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".so")
    os.close(handle)
    try:
        result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", temporary], capture_output=True, text=True,
                                timeout=_BUILD_SECONDS)
        if result.returncode != 0:
            raise OSError(f"{compiler} failed on {SOURCE.name}: {result.stderr.strip().splitlines()[-1:]}")
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str | None]:
    """(the library, None), or (None, the reason it is unavailable); built at most once per process."""
    if os.environ.get("AALIB_NATIVE", "1") == "0":
        return None, "AALIB_NATIVE=0"
    compiler = _compiler()
    if compiler is None:
        return None, "no C++ compiler (set CXX, or install g++)"
    try:
        path = _library_path(compiler)
        if not path.is_file():
            _build(compiler, path)
        library = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"the build failed: {exc}"
    i64, f32, ptr, i32 = ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_int
    library.tiled_attention_forward.argtypes = [i64] * 6 + [f32] + [ptr] * 7 + [i32]
    library.tiled_attention_backward.argtypes = [i64] * 6 + [f32] + [ptr] * 13 + [i32]
    library.tiled_attention_forward.restype = library.tiled_attention_backward.restype = None
    return library, None


def available() -> bool:
    """Whether the native kernel is built and loaded (builds it on first call)."""
    return _load()[0] is not None


def unavailable_reason() -> str | None:
    """Why the native kernel cannot run here, or None when it can."""
    return _load()[1]


def _address(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class _TiledAttention(torch.autograd.Function):
    """``softmax_j(scale q_i.(k_j + rel_h[y_j - y_i + H - 1] + rel_w[x_j - x_i + W - 1])) v_j`` on
    float32 ``(G, N, d)`` tensors (``rel_h``/``rel_w``: ``(2H - 1, d)``/``(2W - 1, d)``, shared by
    the G heads, or None). Works on the transposed ``(G, d, N)`` layout, which is the layout of a
    layer's q, k, v (views of a 1x1 convolution's output), so they arrive without a copy; the
    output and the gradients are returned in that layout too. The tables' gradients come per head
    from the kernel and are summed here, in one order whatever the thread count."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, q: Tensor, k: Tensor, v: Tensor, rel_h: Tensor | None, rel_w: Tensor | None, scale: float,
        size: tuple[int, int],
    ) -> Tensor:
        library = _load()[0]
        groups, n, d = q.shape
        dv = v.shape[-1]
        qt, kt, vt = (t.transpose(1, 2).contiguous() for t in (q, k, v))  # G, d, N (no copy for a layer's views)
        rht, rwt = (None if t is None else t.t().contiguous() for t in (rel_h, rel_w))  # d, 2H - 1 and d, 2W - 1
        ot = q.new_empty(groups, dv, n)
        lse = q.new_empty(groups, n)
        library.tiled_attention_forward(groups, n, d, dv, *size, scale,
                                        *map(_address, (qt, kt, vt, rht, rwt, ot, lse)), torch.get_num_threads())
        ctx.save_for_backward(qt, kt, vt, rht, rwt, ot, lse)
        ctx.scale, ctx.size = scale, size
        return ot.transpose(1, 2)  # G, N, dv (a view of the (G, dv, N) result)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        library = _load()[0]
        qt, kt, vt, rht, rwt, ot, lse = ctx.saved_tensors
        groups, d, n = qt.shape
        got = grad_out.transpose(1, 2).contiguous()  # G, dv, N
        gqt, gkt, gvt = torch.empty_like(qt), torch.empty_like(kt), torch.empty_like(vt)
        grht, grwt = (None if t is None else t.new_empty(groups, *t.shape) for t in (rht, rwt))  # G, d, 2H - 1 ...
        library.tiled_attention_backward(
            groups, n, d, vt.shape[1], *ctx.size, ctx.scale,
            *map(_address, (qt, kt, vt, rht, rwt, got, ot, lse, gqt, gkt, gvt, grht, grwt)), torch.get_num_threads())
        grel_h, grel_w = (None if t is None else t.sum(0).t() for t in (grht, grwt))  # 2H - 1, d and 2W - 1, d
        return gqt.transpose(1, 2), gkt.transpose(1, 2), gvt.transpose(1, 2), grel_h, grel_w, None, None


def tiled_attention(
    q: Tensor, k: Tensor, v: Tensor, scale: float, rel_h: Tensor | None = None, rel_w: Tensor | None = None,
    size: tuple[int, int] | None = None,
) -> Tensor:
    """The native kernel on float32 CPU tensors ``q, k: (G, N, d)``, ``v: (G, N, dv)``, with Bello
    et al.'s relative embeddings ``rel_h: (2H - 1, d)``, ``rel_w: (2W - 1, d)`` (unscaled, shared by
    the G heads) and ``size = (H, W)``, or neither: ``softmax(scale (q k^T + Lh + Lw)) v``.

    Raises:
        ValueError: a tensor that is not float32 on the CPU.
        RuntimeError: the kernel is unavailable (the message says why).
    """
    for name, t in (("q", q), ("k", k), ("v", v), ("rel_h", rel_h), ("rel_w", rel_w)):
        if t is not None and (t.dtype != torch.float32 or t.device.type != "cpu"):
            raise ValueError(f"the native kernel takes float32 CPU tensors; {name} is {t.dtype} on {t.device}")
    library, reason = _load()
    if library is None:
        raise RuntimeError(f"the native attention kernel is unavailable: {reason}")
    return _TiledAttention.apply(q, k, v, rel_h, rel_w, scale, (0, 0) if rel_h is None else tuple(size))
