"""Benchmarks (load, prompt, score, aggregate) and the generic evaluation runner."""
