"""Benchmarks: rnnlab against torch CPU, each library timed in its own block."""
