"""Benchmarks: speed and memory, each measured side by side with its reference."""
