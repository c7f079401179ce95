"""Benchmarks, shipped so that `crevkit bench` works after installation."""
