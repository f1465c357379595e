"""``python -m aalib.bench NAME [options]``: run one benchmark (``--help`` after NAME for its options)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "attention": "aalib.bench.attention",  # AA / LAA layer time and memory against resolution
    "kernels": "aalib.bench.kernels",  # every CPU kernel of softmax attention on the same inputs
    "train": "aalib.bench.train",  # one training step of every model
    "soak": "aalib.bench.soak",  # resident memory over many training epochs
    "gpu-check": "aalib.bench.gpu_check",  # the GPU verified in one call: CUDA tests, memory, benchmarks, DDP
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: python -m aalib.bench {{{','.join(BENCHMARKS)}}} [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(BENCHMARKS[argv[0]])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
