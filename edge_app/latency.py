"""Latency and memory of one model call, measured the same way for every artifact.

Medians (p50) and p95 over repeated single-image calls after a warm-up, wall clock from
``time.perf_counter``; also the fastest call (``min_ms``), the least disturbed by other work on
a shared machine, which the benchmark's speed-ups divide. Benchmarks and the Optuna search both
use :func:`measure_latency`, so a latency quoted anywhere in this project means the same thing.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Latency:
    p50_ms: float
    p95_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    warmup: int

    def to_json(self) -> dict:
        return {
            key: round(value, 4) if isinstance(value, float) else value
            for key, value in asdict(self).items()
        }


def measure_latency(call: Callable[[], object], runs: int = 50, warmup: int = 10) -> Latency:
    """Time ``call()`` ``runs`` times after ``warmup`` untimed calls."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be ≥ 1 and warmup ≥ 0, got runs={runs}, warmup={warmup}")
    for _ in range(warmup):
        call()
    times = np.empty(runs)
    for index in range(runs):
        started = time.perf_counter()
        call()
        times[index] = time.perf_counter() - started
    times *= 1e3
    return Latency(
        p50_ms=float(np.median(times)),
        p95_ms=float(np.percentile(times, 95)),
        mean_ms=float(times.mean()),
        min_ms=float(times.min()),
        runs=runs,
        warmup=warmup,
    )


def tflite_latency(path, outputs=None, threads: int = 1, runs: int = 50, warmup: int = 10):
    """p50/p95 of one ``invoke()`` of a ``.tflite`` file on a fixed normalised input."""
    from edge_app.tflite import TFLiteModel

    model = TFLiteModel(path, outputs=outputs, num_threads=threads)
    image = np.random.default_rng(0).normal(size=model.input_shape).astype(np.float32)
    return measure_latency(lambda: model(image), runs=runs, warmup=warmup)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB.

    On Linux from ``/proc/self/status`` (VmHWM): ``ru_maxrss`` of a forked child starts at its
    parent's peak. Elsewhere ``ru_maxrss`` (Linux reports KiB, macOS bytes).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
