"""Latency and peak RSS of one artifact, each in a fresh child process, and the speed-ups
computed from them.

A child (``python -m benchmarks.bench --latency-child JOB.json``, started by
:func:`run_latency_child`; :func:`child_main` is its body) imports the artifact's runtime, loads
the artifact, times single-image calls at each thread count and writes its measurements as
JSON: its peak RSS belongs to that artifact and its runtime alone, and TensorFlow never shares a
process with torchvision (LiteRT comes from ``ai_edge_litert``). :func:`environment` records the
machine the run measured on.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.specs import REPO_ROOT, BenchError
from edge_app.latency import measure_latency, peak_rss_mb


def seeded_architecture(name: str):
    """``create_model(name)`` in eval mode with the same random weights in every run and
    process (seed 0, without touching the caller's RNG): what ``arch:`` rows time."""
    import torch

    from train.models import create_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return create_model(name).eval()


HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb=1"
#: The child's command line. It starts through ``benchmarks.bench`` on purpose: what the child
#: imports before the runtime (numpy, Pillow, the harness) is part of every recorded RSS, and
#: reports stay comparable only while it stays the same.
CHILD_COMMAND = ("-m", "benchmarks.bench", "--latency-child")


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """The latency children's environment: on Linux, glibc's malloc asks for transparent huge
    pages (``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``, glibc ≥ 2.35; older ones ignore it).

    Without it, where the kernel gives huge pages only on request (THP ``madvise``, the common
    default), a torch model's speed depends on where its process's allocations happened to land:
    measured here, fresh processes running the same custom CNN had fastest calls of 38 or 50 ms
    and kept them; with it, 39.5–42 ms. Every artifact gets the same setting.
    """
    env = dict(os.environ if base is None else base)
    if sys.platform.startswith("linux"):
        tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
        if not any(t.startswith("glibc.malloc.hugetlb=") for t in tunables):
            tunables.append(HUGEPAGE_TUNABLE)
        env["GLIBC_TUNABLES"] = ":".join(tunables)
    return env


def transparent_hugepages() -> str | None:
    """The kernel's THP mode (``always``, ``madvise`` or ``never``), None where unknown."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return None
    chosen = [word.strip("[]") for word in text.split() if word.startswith("[")]
    return chosen[0] if chosen else None


def run_latency_child(job: dict, timeout_s: float = 3600.0) -> dict:
    """Run one artifact's load + latency in a fresh interpreter; its measurements as a dict."""
    with tempfile.TemporaryDirectory(prefix="fracture-edge-bench-") as work:
        job_path, result_path = Path(work) / "job.json", Path(work) / "result.json"
        job_path.write_text(json.dumps({**job, "result": str(result_path)}))
        try:
            finished = subprocess.run(
                [sys.executable, *CHILD_COMMAND, str(job_path)],
                cwd=REPO_ROOT,
                env=child_environment(),
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired as error:
            raise BenchError(f"latency of {job['target']} took over {timeout_s:.0f} s") from error
        if finished.returncode != 0 or not result_path.is_file():
            tail = "\n".join((finished.stdout + finished.stderr).strip().splitlines()[-8:])
            raise BenchError(f"the latency child for {job['target']} failed:\n{tail}")
        return json.loads(result_path.read_text())


def _child_callables(job: dict) -> tuple[Callable[[int], Callable[[], object]], dict]:
    """``(threads → zero-argument call, extra facts)`` for the job's artifact, loaded once."""
    rng = np.random.default_rng(0)
    kind = job["kind"]
    if kind == "tflite":
        from edge_app.runtime import FractureDetector

        def tflite_call(threads: int):
            model = FractureDetector(job["target"], num_threads=threads).model
            image = rng.normal(size=model.input_shape).astype(np.float32)
            return lambda: model(image)

        tflite_call(job["threads"][0])  # load once before the clock: sha256 and allocation
        return tflite_call, {}
    if kind == "onnx":
        import onnxruntime

        def onnx_call(threads: int):
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            session = onnxruntime.InferenceSession(
                job["target"], options, providers=["CPUExecutionProvider"]
            )
            model_input = session.get_inputs()[0]
            image = rng.normal(size=model_input.shape).astype(np.float32)
            return lambda: session.run(None, {model_input.name: image})

        return onnx_call, {}
    return torch_callables(job, rng)


def torch_callables(job: dict, rng) -> tuple[Callable[[int], Callable[[], object]], dict]:
    import torch

    if job["kind"] == "arch":
        model = seeded_architecture(job["target"])
        size = job["input_size"]
    else:
        from train.checkpoints import load_checkpoint

        model, _, preprocessing = load_checkpoint(job["target"])
        size = preprocessing.input_size
    parameter_bytes = sum(p.numel() * 4 for p in model.parameters())
    device = torch.device(job["device"])
    model = model.to(device)
    image = torch.from_numpy(rng.normal(size=(1, 1, size, size)).astype(np.float32)).to(device)

    def torch_call(threads: int):
        torch.set_num_threads(threads)

        def call():
            with torch.inference_mode():
                output = model(image)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return output

        return call

    return torch_call, {"parameter_bytes": parameter_bytes}


_RUNTIME_MODULES = {
    "tflite": "ai_edge_litert.interpreter",
    "onnx": "onnxruntime",
    "torch": "timm",
    "arch": "timm",
}


def _own_peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM on Linux; see :func:`peak_rss_mb`)."""
    return peak_rss_mb()


def child_main(job_path: str) -> int:
    """The body of a latency child: measure the job at ``job_path``, write its result file."""
    job = json.loads(Path(job_path).read_text())
    importlib.import_module(_RUNTIME_MODULES[job["kind"]])
    after_import = _own_peak_rss_mb()
    started = time.perf_counter()
    make_call, facts = _child_callables(job)
    load_s = time.perf_counter() - started
    latency = {}
    for threads in job["threads"]:
        call = make_call(threads)
        repeats = [
            measure_latency(call, runs=job["runs"], warmup=job["warmup"]).to_json()
            for _ in range(job["repeats"])
        ]
        latency[str(threads)] = {
            "p50_ms": round(statistics.median(r["p50_ms"] for r in repeats), 4),
            "p95_ms": round(statistics.median(r["p95_ms"] for r in repeats), 4),
            "min_ms": round(min(r["min_ms"] for r in repeats), 4),
            "repeats": repeats,
        }
    result = {
        "latency": latency,
        "rss_after_import_mb": round(after_import, 1),
        "peak_rss_mb": round(_own_peak_rss_mb(), 1),
        "load_s": round(load_s, 3),
        **facts,
    }
    Path(job["result"]).write_text(json.dumps(result))
    return 0


SPEEDUP_STATISTIC = "fastest call"


def _paired_p50_ratio(reference: dict, row: dict) -> float:
    """Median over rounds of reference p50 / row p50 when both have one repeat per round
    (interleaved), else the ratio of the medians."""
    first, second = reference.get("repeats") or [], row.get("repeats") or []
    if first and len(first) == len(second):
        return statistics.median(
            a["p50_ms"] / b["p50_ms"] for a, b in zip(first, second, strict=True)
        )
    return reference["p50_ms"] / row["p50_ms"]


def speedups(rows: Sequence[dict], reference_id: str) -> dict[str, Any]:
    """Set each row's speed-ups over the reference, per thread count, both measured in this run.

    ``speedup``: the reference's fastest call / the row's fastest call. On a shared machine a
    call is slowed by whatever else the host runs, and the two artifacts are slowed by different
    factors at different moments (measured: the int8 bundle alternates between 6.7 and 8.3 ms
    calls within one process, VGG16 between 0.47 and 0.81 s, independently); the fastest call of
    many is the least disturbed estimate of each, so their ratio repeats between runs where the
    ratio of medians does not (docs/benchmarks.md). ``speedup_p50``: the median over rounds of
    the per-round p50 ratios, what a user sees under that run's load.
    """
    reference = next((r for r in rows if r["id"] == reference_id and r["latency"]), None)
    for row in rows:
        if not row["latency"]:
            row["speedup_note"] = row["speedup_note"] or row["latency_note"] or "no latency"
            continue
        if reference is None:
            row["speedup_note"] = f"n/a ({reference_id} not measured in this run)"
            continue
        shared = [t for t in row["latency"] if t in reference["latency"]]
        row["speedup"] = {
            t: round(reference["latency"][t]["min_ms"] / row["latency"][t]["min_ms"], 4)
            for t in shared
        }
        row["speedup_p50"] = {
            t: round(_paired_p50_ratio(reference["latency"][t], row["latency"][t]), 4)
            for t in shared
        }
    return {"id": reference_id, "measured": reference is not None, "statistic": SPEEDUP_STATISTIC}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass  # not Linux: platform.processor() below
    return platform.processor() or platform.machine()


def environment(note: str = "") -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {
            name: _version(name)
            for name in ("numpy", "torch", "timm", "ai-edge-litert", "onnxruntime", "onnx")
        },
        "load_average_start": [round(v, 2) for v in load] if load else None,
        "latency_children": {
            "GLIBC_TUNABLES": child_environment().get("GLIBC_TUNABLES"),
            "transparent_hugepages": transparent_hugepages(),
        },
        "note": note,
    }
