"""Benchmarks: `make bench` (bench/run.py) and its smoke, `make bench-smoke`."""
