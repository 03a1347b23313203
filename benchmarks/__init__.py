"""Accuracy-vs-latency and throughput benchmarks. Timings live here, never in unit tests."""
