"""Benchmarks: ``python -m aalib.bench {attention,kernels,train,soak,gpu-check}``. Each prints a table and writes JSON."""
