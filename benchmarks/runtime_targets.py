"""The on-device runtime's targets: cold start, inference + heatmap latency, peak memory.

- **cold start to first verdict**: a new Python process that imports the runtime, loads the
  bundle (sha256 check included), reads a sample radiograph and prints its verdict; wall time
  from spawning the process to reading the verdict line. The same for the Kivy app under Xvfb
  (spawn → its ``VERDICT`` line) when ``--app`` is given and ``xvfb-run`` exists.
- **inference + heatmap**: ``FractureDetector.predict_pixels`` on an image already in memory
  (preprocessing, one ``invoke()``, calibration, heatmap at the image's size), p50/p95.
- **peak RSS**: the cold-start process's own VmHWM when it exits; for the app, the highest RSS
  of the app's process tree seen while polling every 50 ms.

    fracture-edge measure runtime --bundle models/fracture-lite0-int8 \\
        --images models/samples --repeats 7 --app --json runs/runtime_targets.json
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from edge_app.errors import UsageError

_COLD = """
import sys, time
from edge_app.runtime import FractureDetector
detector = FractureDetector(sys.argv[1], num_threads=int(sys.argv[3]))
result = detector.predict_path(sys.argv[2])
print("VERDICT", result.verdict, round(result.probability, 4), flush=True)
with open("/proc/self/status") as status:
    print([line for line in status if line.startswith("VmHWM")][0].split()[1], flush=True)
"""


def cold_start(bundle: Path, image: Path, threads: int) -> dict:
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", _COLD, str(bundle), str(image), str(threads)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    verdict_line = process.stdout.readline()
    elapsed = time.perf_counter() - started
    rss_kib = process.stdout.readline().strip()
    process.wait(timeout=60)
    if not verdict_line.startswith("VERDICT"):
        raise RuntimeError(f"the runtime printed no verdict: {verdict_line!r}")
    return {
        "seconds": elapsed,
        "peak_rss_mb": int(rss_kib) / 1024,
        "verdict": verdict_line.split()[1],
    }


def app_cold_start(bundle: Path, image: Path, screenshot: Path) -> dict:
    import psutil

    command = [
        "xvfb-run", "-a", sys.executable, "-m", "edge_app.app_cli", "--model", str(bundle),
        "--exit-after", "0.5", "--screenshot", str(screenshot), "--overwrite", str(image),
    ]  # fmt: skip
    import threading

    seen: dict[str, float] = {}
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )

    def read() -> None:
        for line in process.stdout:
            if line.startswith("VERDICT") and "verdict" not in seen:
                seen["verdict"] = time.perf_counter() - started

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    watcher = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            tree = [watcher, *watcher.children(recursive=True)]
            python = [p for p in tree if "python" in p.name()]
            peak = max(peak, sum(p.memory_info().rss for p in python))
        except psutil.Error:
            pass
        time.sleep(0.05)
    reader.join(timeout=5)
    if "verdict" not in seen:
        raise RuntimeError("the app printed no verdict")
    elapsed = seen["verdict"]
    return {"seconds": elapsed, "peak_rss_mb": peak / 2**20}


def warm_latency(bundle: Path, image: Path, threads: int, runs: int, warmup: int) -> dict:
    from edge_app.latency import measure_latency
    from edge_app.radiograph import load_radiograph
    from edge_app.runtime import FractureDetector

    detector = FractureDetector(bundle, num_threads=threads)
    pixels = load_radiograph(image).pixels
    with_heatmap = measure_latency(lambda: detector.predict_pixels(pixels), runs, warmup)
    without = measure_latency(lambda: detector.predict_pixels(pixels, heatmap=False), runs, warmup)
    return {
        "image_size": list(pixels.shape),
        "with_heatmap": with_heatmap.to_json(),
        "without_heatmap": without.to_json(),
    }


def measure(
    bundle: Path,
    images_folder: Path,
    repeats: int = 7,
    threads: int = 2,
    runs: int = 100,
    app: bool = False,
) -> dict:
    """Cold starts (runtime, and the app under Xvfb with ``app``), warm inference + heatmap
    latency per image, peak memory; returns the full result with its ``summary``."""
    images = sorted(p for p in images_folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    if not images:
        raise UsageError(f"no .jpg/.png images in {images_folder}")
    cold = [cold_start(bundle, images[i % len(images)], threads) for i in range(repeats)]
    result = {
        "bundle": str(bundle),
        "threads": threads,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "load_average_at_start": os.getloadavg(),
        "cold_start_runtime": {
            "median_seconds": statistics.median(c["seconds"] for c in cold),
            "max_seconds": max(c["seconds"] for c in cold),
            "median_peak_rss_mb": statistics.median(c["peak_rss_mb"] for c in cold),
            "runs": cold,
        },
        "warm": {
            str(image.name): warm_latency(bundle, image, threads, runs, 10) for image in images
        },
    }
    if app and shutil.which("xvfb-run"):
        screenshot = Path(os.environ.get("TMPDIR", "/tmp")) / "runtime_targets_app.png"
        started = [app_cold_start(bundle, images[0], screenshot) for _ in range(3)]
        result["cold_start_app"] = {
            "median_seconds": statistics.median(a["seconds"] for a in started),
            "median_peak_rss_mb": statistics.median(a["peak_rss_mb"] for a in started),
            "runs": started,
            "note": "spawn → VERDICT line, under xvfb-run (includes Xvfb start-up)",
        }
    p50s = [w["with_heatmap"]["p50_ms"] for w in result["warm"].values()]
    result["summary"] = {
        "cold_start_runtime_s": round(result["cold_start_runtime"]["median_seconds"], 3),
        "inference_plus_heatmap_p50_ms_median_over_images": round(statistics.median(p50s), 3),
        "inference_plus_heatmap_p50_ms_max_over_images": round(max(p50s), 3),
        "peak_rss_runtime_mb": round(result["cold_start_runtime"]["median_peak_rss_mb"], 1),
    }
    if "cold_start_app" in result:
        result["summary"]["cold_start_app_s"] = round(result["cold_start_app"]["median_seconds"], 3)
        result["summary"]["peak_rss_app_mb"] = round(
            result["cold_start_app"]["median_peak_rss_mb"], 1
        )
    return result
