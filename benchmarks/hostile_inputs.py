"""Peak memory and time of reading hostile inputs (issue 15), each in its own child process.

Writes each hostile file into ``--workdir``, then loads it in a fresh Python process (under an
address-space cap, so that a runaway allocation fails instead of exhausting the machine) and
reports the child's peak resident memory (``ru_maxrss``), its time and the outcome: the
error class and message, or how many images came back. Two modes:

- ``load`` (default): ``load_study`` and the shared ``preprocess`` on every image;
- ``predict``: ``edge_app.predict.predict_paths`` with the bundle given by ``--model``.

Usage::

    OMP_NUM_THREADS=1 fracture-edge measure hostile-inputs --workdir /tmp/hostile \\
        [--mode predict --model models/fracture-lite0-int8] [--tree /path/to/other/checkout] \\
        [--cap-gb 3] [--timeout 60] [--only png_1x1m fifo]

``--tree`` runs the children against another checkout (e.g. the code before a fix), so both
sets of numbers come from the same files and the same script.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from edge_app.errors import UsageError

_CHILD = r"""
import json, resource, sys, time
path, mode, model = sys.argv[1], sys.argv[2], sys.argv[3]
start = time.perf_counter()
outcome = {}
try:
    if mode == "predict":
        import io
        from edge_app.predict import predict_paths
        out, err = io.StringIO(), io.StringIO()
        predict_paths([path], model, as_json=True, out=out, err=err)
        record = json.loads(out.getvalue().splitlines()[-1])
        if record.get("error"):
            outcome = {"outcome": "refused", "message": record["error"]}
        else:
            outcome = {"outcome": "verdict", "verdict": record["verdict"],
                       "probability": record["fracture_probability"]}
    else:
        from edge_app.preprocess import PreprocessConfig, preprocess
        from edge_app.radiograph import load_study
        config = PreprocessConfig(input_size=160)
        images = load_study(path)
        for image in images:
            preprocess(image.pixels, config)
        outcome = {"outcome": "loaded", "images": len(images),
                   "warnings": sorted({w.split(":")[0] for i in images for w in i.warnings})}
except BaseException as error:
    outcome = {"outcome": "error", "error": type(error).__name__, "message": str(error)}
outcome["seconds"] = round(time.perf_counter() - start, 2)
outcome["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(json.dumps(outcome))
"""


def _gradient(height: int, width: int) -> np.ndarray:
    rows = np.arange(height, dtype=np.uint32)[:, None]
    columns = np.arange(width, dtype=np.uint32)[None, :]
    return ((rows + columns) % 256).astype(np.uint8)


def _png_line(length: int) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        path = folder / f"line_1x{length}.png"
        Image.fromarray(_gradient(1, length)).save(path)
        return path

    return write


def _rgb_8000(folder: Path) -> Path:
    path = folder / "rgb_8000x8000.png"
    grey = _gradient(8000, 8000)
    Image.fromarray(np.stack([grey, grey[::-1], grey[:, ::-1]], axis=-1)).save(path)
    return path


def _jpeg_trailer(folder: Path) -> Path:
    path = folder / "trailer_3gb.jpg"
    Image.fromarray(_gradient(512, 512)).save(path, quality=90)
    with path.open("r+b") as stream:
        stream.truncate(3 * 1024**3)  # sparse: three gigabytes of zeros after the end marker
    return path


def _nifti_header(shape: tuple[int, ...], datatype: int, bitpix: int) -> bytes:
    """A little-endian NIfTI-1 single-file header (348 bytes) and the 4-byte extension flag."""
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    dims = [len(shape), *shape] + [1] * (7 - len(shape))
    struct.pack_into("<8h", header, 40, *dims)
    struct.pack_into("<hh", header, 70, datatype, bitpix)
    struct.pack_into("<8f", header, 76, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    struct.pack_into("<f", header, 108, 352.0)
    struct.pack_into("<ff", header, 112, 1.0, 0.0)  # scl_slope, scl_inter
    struct.pack_into("<hh", header, 252, 0, 1)  # qform_code 0, sform_code 1
    for row in range(3):  # srow_x, srow_y, srow_z: the identity affine
        values = [1.0 if column == row else 0.0 for column in range(4)]
        struct.pack_into("<4f", header, 280 + 16 * row, *values)
    header[344:348] = b"n+1\x00"
    return bytes(header) + b"\x00" * 4


def _nifti_bomb(folder: Path) -> Path:
    """A small .nii.gz whose header declares about a billion uint8 voxels."""
    path = folder / "bomb.nii.gz"
    shape = (1024, 1024, 960)
    plane = _gradient(shape[1], shape[0]).tobytes()  # x fastest, as NIfTI stores it
    with gzip.open(path, "wb", compresslevel=6) as stream:
        stream.write(_nifti_header(shape, 2, 8))
        for _ in range(shape[2]):
            stream.write(plane)
    return path


def _ct_like_plane(rows: int, columns: int, index: int) -> np.ndarray:
    """Hounsfield-like int16 values: air around a disc of soft tissue holding a bone ring."""
    y, x = np.ogrid[:rows, :columns]
    radius = np.hypot(y - rows / 2, x - columns / 2) / (min(rows, columns) / 2)
    plane = np.where(radius < 0.8, 40, -1000).astype(np.int16)
    plane[(radius > 0.3 + 0.001 * (index % 50)) & (radius < 0.4)] = 1200
    return plane


def _nifti_at_limit(folder: Path) -> Path:
    """A legitimate CT-like .nii.gz just inside the default volume limit (512² × 488 int16)."""
    path = folder / "ct_512x512x488.nii.gz"
    shape = (512, 512, 488)
    with gzip.open(path, "wb", compresslevel=1) as stream:
        stream.write(_nifti_header(shape, 4, 16))
        for index in range(shape[2]):
            stream.write(_ct_like_plane(512, 512, index).T.tobytes())  # x fastest
    return path


def _dicom_multiframe_at_limit(folder: Path) -> Path:
    """A CT-like multi-frame DICOM just inside the default volume limit (512² × 488 int16)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    frames = 488
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = meta.MediaStorageSOPClassUID
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = "CT"
    dataset.Rows = dataset.Columns = 512
    dataset.NumberOfFrames = frames
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
    dataset.PixelRepresentation = 1
    dataset.RescaleSlope, dataset.RescaleIntercept = 1, 0
    dataset.PixelData = b"".join(_ct_like_plane(512, 512, i).tobytes() for i in range(frames))
    path = folder / "ct_multiframe_512x512x488.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return path


def _fifo(folder: Path) -> Path:
    path = folder / "pipe.png"
    os.mkfifo(path)
    return path


def _dev_zero_link(folder: Path) -> Path:
    path = folder / "zero.dcm"
    path.symlink_to("/dev/zero")
    return path


def _zero_dcm(folder: Path) -> Path:
    path = folder / "zeros_64mb.dcm"
    with path.open("wb") as stream:
        stream.truncate(64 * 1024**2)
    return path


def _dicom_preamble_then_zeros(folder: Path) -> Path:
    """A valid DICOM preamble and file meta, then 64 MB of (sparse) zeros."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    path = folder / "preamble_then_zeros.dcm"
    dataset.save_as(path, enforce_file_format=True)
    with path.open("r+b") as stream:
        stream.truncate(64 * 1024**2)
    return path


def _black_png(folder: Path) -> Path:
    path = folder / "black.png"
    Image.fromarray(np.zeros((512, 512), np.uint8)).save(path)
    return path


def _png_100_bytes(folder: Path) -> Path:
    whole = folder / "whole_for_cut.png"
    Image.fromarray(_gradient(256, 256)).save(whole)
    path = folder / "cut_100_bytes.png"
    path.write_bytes(whole.read_bytes()[:100])
    whole.unlink()
    return path


def _jpeg_ends_early(folder: Path) -> Path:
    whole = folder / "whole_for_cut.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (512, 512), dtype=np.uint8)
    Image.fromarray(noise).save(whole, quality=90)
    data = whole.read_bytes()
    whole.unlink()
    path = folder / "ends_early.jpg"
    path.write_bytes(data[: len(data) // 4] + b"\xff\xd9")
    return path


def _zero_volume(folder: Path) -> Path:
    path = folder / "zeros.nii"
    path.write_bytes(_nifti_header((64, 64, 16), 16, 32) + bytes(64 * 64 * 16 * 4))
    return path


def _big_folder(folder: Path) -> Path:
    study = folder / "study_40x16mp"
    study.mkdir()
    Image.fromarray(_gradient(4096, 4096)).save(study / "view_00.png")
    for index in range(1, 40):
        os.link(study / "view_00.png", study / f"view_{index:02d}.png")
    return study


HOSTILE: dict[str, Callable[[Path], Path]] = {
    "png_1x1m": _png_line(1_000_000),
    "png_1x4m": _png_line(4_000_000),
    "png_1x64m": _png_line(64_000_000),
    "png_rgb_8000x8000": _rgb_8000,
    "jpeg_3gb_trailer": _jpeg_trailer,
    "nifti_gz_bomb": _nifti_bomb,
    "folder_40x16mp": _big_folder,
    "nifti_ct_at_limit": _nifti_at_limit,
    "dicom_multiframe_at_limit": _dicom_multiframe_at_limit,
    "fifo": _fifo,
    "dcm_link_dev_zero": _dev_zero_link,
    "dcm_64mb_zeros": _zero_dcm,
    "dcm_preamble_64mb_zeros": _dicom_preamble_then_zeros,
    "png_all_black": _black_png,
    "png_100_bytes": _png_100_bytes,
    "jpeg_ends_early": _jpeg_ends_early,
    "nifti_all_zero": _zero_volume,
}


def _limit_address_space(cap_bytes: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap_bytes, cap_bytes))

    return apply


def measure(path: Path, tree: Path, mode: str, model: str, cap_gb: float, timeout: float) -> dict:
    environment = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    try:
        result = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path), mode, model],
            capture_output=True,
            text=True,
            env=environment,
            cwd=tree,
            timeout=timeout,
            preexec_fn=_limit_address_space(int(cap_gb * 1024**3)),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"outcome": f"hang: killed after {timeout:g} s", "seconds": timeout}
    lines = result.stdout.strip().splitlines()
    if not lines:
        return {
            "outcome": f"crashed (exit {result.returncode})",
            "seconds": round(time.perf_counter() - start, 2),
            "stderr": result.stderr[-300:],
        }
    return json.loads(lines[-1])


def run(
    workdir: Path,
    tree: Path,
    mode: str = "load",
    model: str = "models/fracture-lite0-int8",
    cap_gb: float = 3.0,
    timeout: float = 60.0,
    only: list[str] | None = None,
    on_record=None,
) -> list[dict]:
    """Write each hostile file into ``workdir`` (once) and measure reading it; one record each."""
    names = only or list(HOSTILE)
    unknown = [name for name in names if name not in HOSTILE]
    if unknown:
        raise UsageError(f"unknown hostile inputs {unknown}; valid: {', '.join(HOSTILE)}")
    workdir.mkdir(parents=True, exist_ok=True)
    records = []
    for name in names:
        folder = workdir / name
        if not folder.exists():
            folder.mkdir()
            HOSTILE[name](folder)
        (path,) = [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
        record = measure(path, tree.resolve(), mode, str(Path(model).resolve()), cap_gb, timeout)
        message = record.pop("message", "")
        records.append({"input": name, **record, "message": message[:160]})
        if on_record:
            on_record(records[-1])
    return records
