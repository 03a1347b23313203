"""Is this machine quiet enough for latency ratios? Two probes behind docs/benchmarks.md.

1. ``bursts``: one process alternates bursts of a TFLite bundle (``--bursts`` × ``--calls``
   calls) with single calls of a torch architecture (the speed-up reference), and prints each
   burst's median. On a shared host both flip between speeds, each on its own schedule: the
   ratio of medians then depends on the run, the ratio of fastest calls much less.
2. ``processes``: ``--processes`` fresh interpreters each time one torch architecture at one
   thread (four bursts), with and without ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, and print
   each process's fastest call and median: torch's speed can be a per-process draw.

    fracture-edge measure latency-probe bursts --bundle models/fracture-lite0-int8
    fracture-edge measure latency-probe processes --arch custom_cnn --processes 8

Prints the result as JSON and writes nothing. Timings only mean something on an otherwise idle
machine.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import numpy as np

from benchmarks.latency_children import child_environment, torch_callables
from benchmarks.specs import REPO_ROOT, BenchError
from edge_app.latency import measure_latency


def torch_call(arch: str, size: int, threads: int = 1):
    """The benchmark's own ``arch:`` call (seeded weights, fixed input), at ``threads``."""
    job = {"kind": "arch", "target": arch, "input_size": size, "device": "cpu"}
    make_call, _ = torch_callables(job, np.random.default_rng(0))
    return make_call(threads)


def bursts(bundle: str, arch: str, size: int, count: int, calls: int) -> dict:
    """Alternate ``calls`` bundle calls with one reference call, ``count`` times."""
    from edge_app.runtime import FractureDetector

    model = FractureDetector(bundle, num_threads=1).model
    image = np.random.default_rng(0).normal(size=model.input_shape).astype(np.float32)
    reference = torch_call(arch, size)
    for _ in range(3):
        model(image)
        reference()
    bundle_ms, reference_ms = [], []
    for _ in range(count):
        reference_ms.append(measure_latency(reference, runs=1, warmup=0).p50_ms)
        bundle_ms.append(measure_latency(lambda: model(image), runs=calls, warmup=0))
    medians = [b.p50_ms for b in bundle_ms]
    fastest = [b.min_ms for b in bundle_ms]
    return {
        "bundle_burst_medians_ms": [round(v, 2) for v in medians],
        "reference_calls_ms": [round(v, 1) for v in reference_ms],
        "ratio_of_medians": round(statistics.median(reference_ms) / statistics.median(medians), 2),
        "ratio_of_fastest": round(min(reference_ms) / min(fastest), 2),
    }


def _one_process(arch: str, size: int, hugepages: bool) -> dict:
    code = (
        "import json,sys;from benchmarks.latency_probe import torch_call;"
        "from edge_app.latency import measure_latency;"
        f"c=torch_call({arch!r},{size});"
        "r=[measure_latency(c,runs=25,warmup=5) for _ in range(4)];"
        "print(json.dumps([[x.min_ms,x.p50_ms] for x in r]))"
    )
    base = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    env = child_environment(base) if hugepages else base
    finished = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    if finished.returncode != 0:
        tail = "\n".join((finished.stdout + finished.stderr).strip().splitlines()[-8:])
        raise BenchError(f"the probe process for {arch}@{size} failed:\n{tail}")
    values = json.loads(finished.stdout.strip().splitlines()[-1])
    return {
        "fastest_ms": round(min(v[0] for v in values), 1),
        "burst_medians_ms": [round(v[1], 1) for v in values],
    }


def processes(arch: str, size: int, count: int) -> dict:
    return {
        setting: [_one_process(arch, size, setting == "hugepages") for _ in range(count)]
        for setting in ("default malloc", "hugepages")
    }
