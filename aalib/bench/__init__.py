"""Benchmarks: ``python -m aalib.bench {attention,train}``. Each prints a table and writes JSON."""
