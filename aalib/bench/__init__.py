"""Benchmarks: ``python -m aalib.bench {attention,train,soak,gpu-check}``. Each prints a table and writes JSON."""
