"""Exact and near-duplicate detection on radiograph thumbnails.

Near-duplicates (the same radiograph re-encoded, resized, slightly shifted or cut short) are
found in two stages:

1. *Candidates*, cheap and generous: a 63-bit DCT perceptual hash (Hamming distance, with a
   loose correlation floor) or a high correlation of 32×32 thumbnails, the latter also
   restricted to the decoded rows of a truncated image (a cut-off JPEG decodes to a grey band
   that hides the match from global measures).
2. *Pixel check*, strict: the two 256² thumbnails are aligned by phase correlation, high-pass
   filtered, and the median correlation over an 8×8 grid of tiles must reach a threshold. Fine
   texture (trabeculae, noise, burnt-in markers) lines up only in copies of one exposure; two
   different radiographs of similar anatomy share the low frequencies but not this. Taking the
   median over tiles tolerates a marker added to one copy or a grey band in a truncated one.

On FracAtlas the pixel check separates cleanly: confirmed pairs score ≥ 0.9, the nearest
non-duplicates below 0.75 (see docs/data.md), so the default threshold is 0.8.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

THUMBNAIL_SIZE = 256
DEFAULT_HAMMING_THRESHOLD = 16
DEFAULT_HASH_CORRELATION_FLOOR = 0.8
DEFAULT_CORRELATION_THRESHOLD = 0.95
DEFAULT_TRUNCATED_CORRELATION_THRESHOLD = 0.9
DEFAULT_PIXEL_THRESHOLD = 0.8
_TILE_GRID = 8
_BLOCK = 1024


def downsample(thumbnails: np.ndarray, factor: int) -> np.ndarray:
    """Box-downsample a stack ``(n, s, s)`` by an integer factor."""
    count, size, _ = thumbnails.shape
    small = size // factor
    return thumbnails.reshape(count, small, factor, small, factor).mean(axis=(2, 4))


def perceptual_hashes(thumbnails: np.ndarray) -> np.ndarray:
    """63-bit DCT hash per thumbnail (bool array ``(n, 63)``), from the 8×8 low frequencies."""
    small = downsample(thumbnails.astype(np.float32), thumbnails.shape[1] // 32)
    basis = np.cos(np.pi * (2 * np.arange(32)[None, :] + 1) * np.arange(8)[:, None] / 64)
    coefficients = np.einsum("ui,nij,vj->nuv", basis, small, basis).reshape(len(small), 64)[:, 1:]
    return coefficients > np.median(coefficients, axis=1, keepdims=True)


def _standardise_rows(vectors: np.ndarray) -> np.ndarray:
    centred = vectors - vectors.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return centred / np.where(norms > 1e-8, norms, 1.0)


def decoded_rows(thumbnail: np.ndarray, tolerance: float = 0.02) -> int:
    """Rows from the top that carry image content (a truncated JPEG ends in a flat band)."""
    varying = np.flatnonzero(np.abs(np.diff(thumbnail, axis=1)).max(axis=1) > tolerance)
    return int(varying.max()) + 1 if varying.size else thumbnail.shape[0]


def candidate_pairs(
    thumbnails: np.ndarray,
    truncated: Sequence[bool] = (),
    hamming_threshold: int = DEFAULT_HAMMING_THRESHOLD,
    correlation_threshold: float = DEFAULT_CORRELATION_THRESHOLD,
) -> set[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, worth a pixel check (blocked: memory O(n·block))."""
    count = len(thumbnails)
    hashes = perceptual_hashes(thumbnails).astype(np.float32)
    small = downsample(thumbnails.astype(np.float32), thumbnails.shape[1] // 32)
    vectors = _standardise_rows(small.reshape(count, -1))
    pairs: set[tuple[int, int]] = set()
    for start in range(0, count, _BLOCK):
        block = slice(start, min(count, start + _BLOCK))
        # Hamming distance from dot products of ±1 codes: d = (bits - dot) / 2.
        signed, signed_all = 2 * hashes[block] - 1, 2 * hashes - 1
        hamming = (hashes.shape[1] - signed @ signed_all.T) / 2
        correlation = vectors[block] @ vectors.T
        close_hash = (hamming <= hamming_threshold) & (
            correlation >= DEFAULT_HASH_CORRELATION_FLOOR
        )
        rows, columns = np.nonzero(close_hash | (correlation >= correlation_threshold))
        found = zip(rows, columns, strict=True)
        pairs.update(_ordered(start + row, column) for row, column in found)
    for index in np.flatnonzero(np.asarray(truncated, dtype=bool)):
        pairs.update(
            _truncated_candidates(small, int(index), DEFAULT_TRUNCATED_CORRELATION_THRESHOLD)
        )
    return {pair for pair in pairs if pair[0] != pair[1]}


def _ordered(first: int, second: int) -> tuple[int, int]:
    return (int(first), int(second)) if first < second else (int(second), int(first))


def _truncated_candidates(small: np.ndarray, index: int, threshold: float) -> set[tuple[int, int]]:
    # The last decoded row is partly grey band already; leave it out.
    rows = max(4, decoded_rows(small[index]) - 1)
    vectors = _standardise_rows(small[:, :rows].reshape(len(small), -1))
    correlation = vectors @ vectors[index]
    return {_ordered(index, other) for other in np.flatnonzero(correlation >= threshold)}


def _high_pass(image: np.ndarray) -> np.ndarray:
    """Image minus a 5×5 box blur (applied twice ≈ Gaussian σ≈2)."""
    blurred = image
    for _ in range(2):
        padded = np.pad(blurred, 2, mode="edge")
        cumulative = padded.cumsum(0).cumsum(1)
        cumulative = np.pad(cumulative, ((1, 0), (1, 0)))
        size = image.shape[0]
        blurred = (
            cumulative[5 : 5 + size, 5 : 5 + size]
            - cumulative[:size, 5 : 5 + size]
            - cumulative[5 : 5 + size, :size]
            + cumulative[:size, :size]
        ) / 25.0
    return image - blurred


def _overlap(first: np.ndarray, second: np.ndarray, dy: int, dx: int):
    size = first.shape[0]
    return (
        first[max(0, dy) : size + min(0, dy), max(0, dx) : size + min(0, dx)],
        second[max(0, -dy) : size + min(0, -dy), max(0, -dx) : size + min(0, -dx)],
    )


def tiled_correlation(first: np.ndarray, second: np.ndarray, grid: int = _TILE_GRID) -> float:
    """Median Pearson correlation over a grid of tiles; flat tiles (no texture) are skipped."""
    height, width = (first.shape[0] // grid) * grid, (first.shape[1] // grid) * grid
    if height < grid or width < grid:
        return 0.0

    def tiles(image: np.ndarray) -> np.ndarray:
        cut = image[:height, :width].reshape(grid, height // grid, grid, width // grid)
        flat = cut.transpose(0, 2, 1, 3).reshape(grid * grid, -1)
        return flat - flat.mean(axis=1, keepdims=True)

    a, b = tiles(first), tiles(second)
    energy = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    textured = energy > 1e-6 * a.shape[1]
    if not textured.any():
        return 0.0
    return float(np.median((a * b).sum(1)[textured] / energy[textured]))


class _PixelFeatures:
    """Per-image features for the pixel check, computed once instead of once per pair."""

    def __init__(self, thumbnails: np.ndarray) -> None:
        self.high_pass = [_high_pass(t.astype(np.float32)) for t in thumbnails]
        coarse = downsample(thumbnails.astype(np.float32), 2)
        self.spectra = np.fft.fft2(coarse - coarse.mean(axis=(1, 2), keepdims=True))

    def shift(self, first: int, second: int, max_shift: int) -> tuple[int, int]:
        spectrum = self.spectra[first] * np.conj(self.spectra[second])
        response = np.fft.ifft2(spectrum / (np.abs(spectrum) + 1e-9)).real
        dy, dx = np.unravel_index(int(np.argmax(response)), response.shape)
        size = response.shape[0]
        dy, dx = (dy - size if dy > size // 2 else dy), (dx - size if dx > size // 2 else dx)
        if abs(dy) > max_shift or abs(dx) > max_shift:
            return 0, 0
        return 2 * int(dy), 2 * int(dx)

    def similarity(self, first: int, second: int, max_shift_fraction: float = 0.1) -> float:
        """Tiled high-pass correlation after alignment; refined by ±1 px only when it matters."""
        size = self.high_pass[first].shape[0]
        dy, dx = self.shift(first, second, int(size // 2 * max_shift_fraction))
        a, b = self.high_pass[first], self.high_pass[second]
        best = tiled_correlation(*_overlap(a, b, dy, dx))
        if best < 0.5 * DEFAULT_PIXEL_THRESHOLD:
            return best  # far from a duplicate: a one-pixel refinement cannot rescue it
        for refine_y in (-1, 0, 1):
            for refine_x in (-1, 0, 1):
                if refine_y or refine_x:
                    shifted = _overlap(a, b, dy + refine_y, dx + refine_x)
                    best = max(best, tiled_correlation(*shifted))
        return best


def pixel_similarity(first: np.ndarray, second: np.ndarray) -> float:
    """The strict check for one pair of equally sized square thumbnails."""
    return _PixelFeatures(np.stack([first, second])).similarity(0, 1)


def connected_groups(count: int, edges: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Union-find: the groups (size ≥ 2) that ``edges`` connect, each sorted, by first member."""
    parent = list(range(count))

    def find(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for first, second in edges:
        root_first, root_second = find(first), find(second)
        if root_first != root_second:
            parent[max(root_first, root_second)] = min(root_first, root_second)
    members: dict[int, list[int]] = {}
    for node in range(count):
        members.setdefault(find(node), []).append(node)
    return sorted((group for group in members.values() if len(group) > 1), key=lambda g: g[0])


def near_duplicate_pairs(
    thumbnails: np.ndarray,
    truncated: Sequence[bool] = (),
    pixel_threshold: float = DEFAULT_PIXEL_THRESHOLD,
) -> list[tuple[int, int, float]]:
    """Confirmed near-duplicate pairs ``(i, j, similarity)`` among ``thumbnails`` (n, s, s)."""
    features = _PixelFeatures(thumbnails)
    confirmed = []
    for first, second in sorted(candidate_pairs(thumbnails, truncated)):
        similarity = features.similarity(first, second)
        if similarity >= pixel_threshold:
            confirmed.append((first, second, similarity))
    return confirmed
