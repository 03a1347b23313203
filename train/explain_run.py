"""``fracture-edge explain``: Grad-CAM of a checkpoint on cached images, scored by the pointing
game against the fracture boxes, plus a few overlays to look at.

For a GAP + linear model the in-graph class-activation map (what the phone computes) equals
Grad-CAM after ReLU and normalisation, so both are scored and their agreement reported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edge_app._optional import require
from edge_app.errors import UsageError
from train.cache import load_cached_image, parse_boxes, read_cache_index
from train.checkpoints import load_checkpoint
from train.gradcam import explainer
from train.localisation import cam_agreement, pointing_game_score
from train.plotting import new_figure, save_figure
from train.tensor_preprocess import preprocess_batch

torch = require("torch", "explain models")
F = torch.nn.functional


def _cam_heatmaps(model, images) -> np.ndarray:
    with torch.no_grad():
        cam = torch.relu(model.class_activation_map(images)).unsqueeze(1)
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)
    cam = cam.squeeze(1).numpy()
    low = cam.min(axis=(1, 2), keepdims=True)
    span = cam.max(axis=(1, 2), keepdims=True) - low
    return (cam - low) / np.where(span > 0, span, 1)


def explain_cache(
    checkpoint: str | Path,
    cache_dir: str | Path,
    split: str = "test",
    method: str = "gradcam",
    out: str | Path | None = None,
    overlays: int = 6,
) -> dict[str, Any]:
    model, card, preprocessing = load_checkpoint(checkpoint)
    rows = [
        r
        for r in read_cache_index(cache_dir)
        if r["split"] == split and int(r["label"]) == 1 and parse_boxes(r["boxes"])
    ]
    if not rows:
        raise UsageError(f"{cache_dir} has no fractured images with boxes in split {split!r}")
    canvases = np.stack([load_cached_image(cache_dir, r["file"]) for r in rows])
    inputs = preprocess_batch(torch.from_numpy(canvases).unsqueeze(1), preprocessing)
    boxes = [parse_boxes(r["boxes"]) for r in rows]
    gradcams = []
    with explainer(model, method) as explain_batch:
        for start in range(0, len(rows), 16):
            gradcams.append(explain_batch(inputs[start : start + 16]))
    gradcam = np.concatenate(gradcams)
    cams = _cam_heatmaps(model, inputs)
    agreement = [cam_agreement(a, b) for a, b in zip(gradcam, cams, strict=True)]
    report = {
        "checkpoint": str(checkpoint),
        "method": method,
        "split": split,
        "images_with_boxes": len(rows),
        "pointing_game": {
            method: pointing_game_score(gradcam, boxes),
            "in_graph_cam": pointing_game_score(cams, boxes),
        },
        "gradcam_vs_in_graph_cam": {
            "pearson_median": float(np.nanmedian([a["pearson"] for a in agreement])),
            "top10_iou_median": float(np.nanmedian([a["top10_iou"] for a in agreement])),
        },
    }
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "explain.json").write_text(json.dumps(report, indent=1))
        _write_overlays(
            canvases[:overlays],
            gradcam[:overlays],
            boxes[:overlays],
            [r["file"] for r in rows[:overlays]],
            out / "overlays.png",
        )
    return report


def _write_overlays(canvases, heatmaps, boxes, names, path: Path) -> Path:
    patches = require("matplotlib.patches", "draw overlays")
    columns = len(canvases)
    figure = new_figure(2.6 * columns, 2.9, "draw overlays", dpi=100)
    for index, (canvas, heatmap, image_boxes, name) in enumerate(
        zip(canvases, heatmaps, boxes, names, strict=True)
    ):
        axes = figure.add_subplot(1, columns, index + 1)
        size = canvas.shape[0]
        axes.imshow(canvas, cmap="gray", vmin=0, vmax=1)
        axes.imshow(np.asarray(_resize(heatmap, size)), cmap="jet", alpha=0.35, vmin=0, vmax=1)
        for x0, y0, x1, y1 in image_boxes:
            axes.add_patch(
                patches.Rectangle(
                    (x0 * size, y0 * size),
                    (x1 - x0) * size,
                    (y1 - y0) * size,
                    fill=False,
                    color="lime",
                )
            )
        peak = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
        scale = size / heatmap.shape[0]
        axes.plot((peak[1] + 0.5) * scale, (peak[0] + 0.5) * scale, "w+", markersize=10)
        axes.set_title(name, fontsize=8)
        axes.axis("off")
    return save_figure(figure, path)


def _resize(heatmap: np.ndarray, size: int) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(heatmap, dtype=np.float32))[None, None]
    return F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)[
        0, 0
    ].numpy()
