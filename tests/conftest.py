"""Shared helpers: synthetic radiograph-like images and a synthetic FracAtlas-like tree.

The helpers are plain functions handed out by fixtures, so test modules never import conftest.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FRACATLAS_COLUMNS = (
    "image_id",
    "hand",
    "leg",
    "hip",
    "shoulder",
    "mixed",
    "hardware",
    "multiscan",
    "fractured",
    "fracture_count",
    "frontal",
    "lateral",
    "oblique",
)


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Periodic Gaussian blur through the FFT (numpy only, fast for a few hundred pixels)."""
    frequency_y = np.fft.fftfreq(image.shape[0])[:, None]
    frequency_x = np.fft.rfftfreq(image.shape[1])[None, :]
    gain = np.exp(-2 * (np.pi * sigma) ** 2 * (frequency_y**2 + frequency_x**2))
    return np.fft.irfft2(np.fft.rfft2(image) * gain, s=image.shape)


def radiograph_like(
    height: int = 240,
    width: int = 300,
    shape_seed: int = 0,
    texture_seed: int = 0,
    texture_amplitude: float = 0.08,
) -> np.ndarray:
    """A uint8 image: smooth blobs (``shape_seed``) plus fine blurred noise (``texture_seed``).

    Two images with the same shapes but different texture look alike at low frequencies, as two
    radiographs of similar anatomy do, yet are not copies of one exposure.
    """
    rng = np.random.default_rng(shape_seed)
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.full((height, width), 0.15)
    for _ in range(6):
        centre_y, centre_x = rng.uniform(0.15, 0.85) * height, rng.uniform(0.15, 0.85) * width
        sigma_y, sigma_x = rng.uniform(0.05, 0.2) * height, rng.uniform(0.05, 0.2) * width
        distance = ((rows - centre_y) / sigma_y) ** 2 + ((columns - centre_x) / sigma_x) ** 2
        image += rng.uniform(0.15, 0.35) * np.exp(-distance / 2)
    white = np.random.default_rng(10_000 + texture_seed).normal(size=(height, width))
    noise = _gaussian_blur(white, 1.5)
    image += texture_amplitude * noise / noise.std()
    return np.clip(image * 255, 0, 255).astype(np.uint8)


def jpeg_bytes(pixels: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_jpeg(path: Path, pixels: np.ndarray, quality: int = 95) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(pixels, quality))
    return path


@dataclass
class AtlasImage:
    """One image of a synthetic FracAtlas tree.

    ``fractured`` is the folder; ``csv_fractured`` the CSV's opinion (defaults to the folder's).
    ``yolo`` holds ``(cx, cy, w, h)`` boxes; ``data`` replaces the JPEG bytes when given.
    """

    name: str
    fractured: bool
    pixels: np.ndarray | None = None
    data: bytes | None = None
    regions: Sequence[str] = ("hand",)
    flags: dict[str, int] = field(default_factory=dict)
    csv_fractured: int | None = None
    fracture_count: int = 0
    yolo: Sequence[tuple[float, float, float, float]] = ()
    in_csv: bool = True


def make_fracatlas(root: Path, images: Sequence[AtlasImage]) -> Path:
    """Write ``dataset.csv``, ``images/{Fractured,Non_fractured}`` and ``annotations/yolo``."""
    for folder in ("Fractured", "Non_fractured"):
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "yolo").mkdir(parents=True, exist_ok=True)
    rows = []
    for image in images:
        folder = "Fractured" if image.fractured else "Non_fractured"
        path = root / "images" / folder / image.name
        if image.data is not None:
            path.write_bytes(image.data)
        else:
            pixels = image.pixels if image.pixels is not None else radiograph_like()
            write_jpeg(path, pixels)
        if image.yolo:
            lines = [f"0 {cx} {cy} {w} {h}" for cx, cy, w, h in image.yolo]
            (root / "annotations" / "yolo" / f"{path.stem}.txt").write_text("\n".join(lines) + "\n")
        if not image.in_csv:
            continue
        row = dict.fromkeys(FRACATLAS_COLUMNS, "0")
        row["image_id"] = image.name
        row.update({region: "1" for region in image.regions})
        row.update({name: str(value) for name, value in image.flags.items()})
        fractured = int(image.fractured) if image.csv_fractured is None else image.csv_fractured
        row["fractured"] = str(fractured)
        row["fracture_count"] = str(image.fracture_count)
        rows.append(row)
    with open(root / "dataset.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, FRACATLAS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return root


def training_cache(root: Path, count: int = 48, size: int = 48) -> Path:
    """A cache as ``fracture-edge data cache`` writes it, ``count`` images of ``size``² px.

    Positives are bright with a bar, negatives dark: learnable in a few epochs.
    """
    from train.cache import CACHE_COLUMNS  # the cache's own columns; train is imported lazily

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    rows = []
    for index in range(count):
        label = index % 2
        split = "train" if index < count * 2 // 3 else ("val" if index < count * 5 // 6 else "test")
        image = rng.normal(0.25 + 0.45 * label, 0.05, (size, size))
        if label:
            image[size // 2 - 2 : size // 2 + 2, 8:-8] = 1.0
        pixels = (np.clip(image, 0, 1) * 255).astype(np.uint8)
        name = f"IMG{index:04d}.jpg"
        Image.fromarray(pixels).save(root / "images" / name, quality=95)
        rows.append(
            {
                "file": name,
                "split": split,
                "fold": -1,
                "label": label,
                "group": name,
                "region": ("hand", "leg")[index % 3 == 0],
                "hardware": 0,
                "boxes": (
                    f"0.16667 {0.5 - 2 / size:.5f} 0.83333 {0.5 + 2 / size:.5f}" if label else ""
                ),
                # the bar as a polygon (the cache's outline format: x y pairs)
                "outlines": (
                    f"0.16667 {0.5 - 2 / size:.5f} 0.83333 {0.5 - 2 / size:.5f} "
                    f"0.83333 {0.5 + 2 / size:.5f} 0.16667 {0.5 + 2 / size:.5f}"
                    if label
                    else ""
                ),
                "truncated": 0,
                "original_width": size,
                "original_height": size,
            }
        )
    with open(root / "index.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, CACHE_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (root / "meta.json").write_text(json.dumps({"size": size, "fill": 0.0, "split_id": "tiny"}))
    return root


def warm_pixels(image: Image.Image, box=None) -> int:
    """Pixels of a screenshot tinted by the heatmap overlay's warm colours (yellow to red): far
    redder than blue, where the grey film has red = blue and the box's cyan blue > red."""
    rgb = np.asarray((image.crop(box) if box else image).convert("RGB"), dtype=np.int16)
    return int((rgb[..., 0] - rgb[..., 2] > 60).sum())


#: A folder named here gets a copy of each front end's screenshot of the samples (how
#: docs/figures/ is refreshed: see docs/app.md).
SCREENSHOTS_ENV = "FRACTURE_EDGE_SCREENSHOTS"


def keep_screenshot(path: Path, name: str) -> None:
    """RGB, without the alpha channel; no palette, which would band the overlay's gradient."""
    folder = os.environ.get(SCREENSHOTS_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with Image.open(path) as shot:
            shot.convert("RGB").save(Path(folder) / name, optimize=True)


@pytest.fixture(scope="session")
def screenshots() -> tuple[Callable[..., int], Callable[[Path, str], None]]:
    """``(warm_pixels, keep_screenshot)`` for the app's and the page's screenshot tests."""
    return warm_pixels, keep_screenshot


@pytest.fixture(scope="session")
def make_radiograph() -> Callable[..., np.ndarray]:
    return radiograph_like


@pytest.fixture(scope="session")
def save_jpeg() -> Callable[..., Path]:
    return write_jpeg


@pytest.fixture(scope="session")
def encode_jpeg() -> Callable[..., bytes]:
    return jpeg_bytes


def write_val_test_split(path: Path, images: Sequence[AtlasImage], val: int) -> Path:
    """A split CSV of a synthetic FracAtlas tree: the first ``val`` images val, the rest test."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "split", "label", "group", "fold", "reason", "relpath"])
        for index, image in enumerate(images):
            kind = "Fractured" if image.fractured else "Non_fractured"
            split = "val" if index < val else "test"
            relpath = f"images/{kind}/{image.name}"
            writer.writerow([image.name, split, int(image.fractured), image.name, -1, "", relpath])
    return path


@pytest.fixture(scope="session")
def val_test_split() -> Callable[[Path, Sequence[AtlasImage], int], Path]:
    return write_val_test_split


@pytest.fixture(scope="session")
def fracatlas_tree() -> Callable[[Path, Sequence[AtlasImage]], Path]:
    return make_fracatlas


@pytest.fixture(scope="session")
def atlas_image() -> type[AtlasImage]:
    return AtlasImage


@pytest.fixture(scope="session")
def tiny_training_cache() -> Callable[..., Path]:
    return training_cache


@pytest.fixture(scope="module")
def synthetic_cache(tmp_path_factory) -> Path:
    """A 64-px synthetic cache of 48 images (32 train, 8 val, 8 test)."""
    return training_cache(tmp_path_factory.mktemp("synthetic") / "cache", size=64)


FRACATLAS_ROOT = Path(
    os.environ.get(
        "FRACATLAS_ROOT", Path(__file__).resolve().parents[2] / "shared" / "data" / "fracatlas"
    )
)


@pytest.fixture(scope="session")
def fracatlas_root() -> Path:
    """The real FracAtlas folder; the test is skipped, with the reason, where it is absent."""
    if not (FRACATLAS_ROOT / "dataset.csv").is_file():
        pytest.skip(f"FracAtlas not found at {FRACATLAS_ROOT} (set FRACATLAS_ROOT)")
    return FRACATLAS_ROOT


TINY_BUNDLE = Path(__file__).resolve().parent / "data" / "tiny-bundle"


def _tiny_bundle_script():
    import importlib.util

    path = TINY_BUNDLE.parent / "make_tiny_bundle.py"
    spec = importlib.util.spec_from_file_location("make_tiny_bundle", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_bundle_model():
    """The committed tiny bundle's torch model, rebuilt exactly (needs torch)."""
    pytest.importorskip("torch")
    return _tiny_bundle_script().tiny_model()


@pytest.fixture(scope="session")
def tiny_bundle_script():
    """The script that made tests/data/tiny-bundle (its make() regenerates it)."""
    return _tiny_bundle_script()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """The committed tiny bundle (tests/data/make_tiny_bundle.py), copied once per session:
    runtime, predict, app and web tests need no torch or TensorFlow to use it (copy to modify)."""
    import shutil

    return Path(shutil.copytree(TINY_BUNDLE, tmp_path_factory.mktemp("bundle") / "tiny"))


def pytest_addoption(parser):
    parser.addoption(
        "--network",
        action="store_true",
        help="run tests that need internet access (marked 'network')",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--network"):
        return
    skip = pytest.mark.skip(reason="needs internet; run with --network")
    for item in items:
        if "network" in item.keywords:
            item.add_marker(skip)
