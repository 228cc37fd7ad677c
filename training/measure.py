"""Read a shapes image back into words: background, shape colour, shape class, position, size.

The background colour is the median of the image's outer ring; the shape is every pixel that is
far from it (half-way, in RGB, between the background and the most distant colour present);
its colour is the median of the shape's core, named by the nearest palette colour. The class comes
from the mask's geometry:

    fill     area / bounding-box area       circle ~0.79, square 1.0, triangle and diamond ~0.5, star ~0.4
    solidity area / convex-hull area        a star ~0.6, the convex shapes ~1
    widest   height (0 top, 1 bottom) of the widest row: a triangle's is its base, a diamond's
             its middle

Only the largest connected region counts (specks elsewhere are ignored). The position is the 3x3 grid cell (thirds of the side) of the mask's centroid. This is how the
evaluation and the tests judge generated images; on the dataset's own drawings it is right for
every example (tests/test_demo_model.py checks).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from latentgraph.training.dataset import COLOURS, EXTENT, NEUTRAL, POSITIONS, SIZES

_PALETTE_NAMES = tuple(COLOURS)
_PALETTE = np.array([COLOURS[name] for name in _PALETTE_NAMES], dtype=np.float64)
_CELL_TO_POSITION = {cell: name for name, cell in POSITIONS.items()}


@dataclass
class Reading:
    """What an image shows, as measured. `found` is False when no shape stands out from the
    background (then shape, colour and position are guesses)."""

    background: str
    colour: str
    shape: str
    position: str
    size: str
    found: bool
    centroid: tuple[float, float]  # (x, y) as fractions of the side
    fill: float
    solidity: float
    widest: float
    contrast: float  # RGB distance between shape core and background
    colour_rgb: tuple[float, float, float]  # the shape core's median colour (0-255)
    background_rgb: tuple[float, float, float]  # the outer ring's median colour (0-255)

    def as_dict(self) -> dict[str, str]:
        return {"background": self.background, "colour": self.colour, "shape": self.shape,
                "position": self.position, "size": self.size}


def nearest_colour(rgb, names: tuple[str, ...] = _PALETTE_NAMES) -> str:
    """The palette colour nearest to an RGB triple (0-255), among `names`."""
    rgb = np.asarray(rgb, dtype=np.float64)
    candidates = np.array([COLOURS[name] for name in names], dtype=np.float64)
    return names[int(np.argmin(((candidates - rgb) ** 2).sum(axis=1)))]


def to_rgb_array(image) -> np.ndarray:
    """uint8-range float [H, W, 3] from a PIL image, uint8 array, or float array/tensor in [0, 1]."""
    if hasattr(image, "convert"):
        image = np.asarray(image.convert("RGB"))
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.dtype == np.uint8:
        return array.astype(np.float64)
    return np.clip(array.astype(np.float64), 0.0, 1.0) * 255.0


def border_colour(rgb: np.ndarray, width: int = 2) -> np.ndarray:
    ring = np.concatenate([rgb[:width].reshape(-1, 3), rgb[-width:].reshape(-1, 3),
                           rgb[:, :width].reshape(-1, 3), rgb[:, -width:].reshape(-1, 3)])
    return np.median(ring, axis=0)


def shape_mask(rgb: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, float]:
    """Pixels that belong to the shape, and the distance of the farthest colour from the background."""
    distance = np.linalg.norm(rgb - background, axis=-1)
    far = float(np.percentile(distance, 99.5))
    return distance > max(far / 2, 30.0), far


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected region of a boolean mask (stray specks dropped)."""
    height, width = mask.shape
    labels = np.zeros(mask.shape, dtype=np.int32)
    best_label, best_size, label = 0, 0, 0
    for y0, x0 in zip(*np.nonzero(mask)):
        if labels[y0, x0]:
            continue
        label += 1
        labels[y0, x0] = label
        stack, size = [(y0, x0)], 0
        while stack:
            y, x = stack.pop()
            size += 1
            for ny in (y - 1, y, y + 1):
                for nx in (x - 1, x, x + 1):
                    if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not labels[ny, nx]:
                        labels[ny, nx] = label
                        stack.append((ny, nx))
        if size > best_size:
            best_label, best_size = label, size
    return labels == best_label if best_label else mask


def _convex_hull_area(points: np.ndarray) -> float:
    """Area of the convex hull of 2-D points (Andrew's monotone chain)."""
    pts = sorted(set(map(tuple, points.tolist())))
    if len(pts) < 3:
        return 0.0

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = np.array(lower[:-1] + upper[:-1], dtype=np.float64)
    x, y = hull[:, 0], hull[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def classify_shape(mask: np.ndarray) -> tuple[str, float, float, float]:
    """(shape, fill, solidity, widest) of a boolean mask, per the module doc."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 4:
        return "circle", 0.0, 0.0, 0.5
    top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
    area = float(len(xs))
    fill = area / float((bottom - top + 1) * (right - left + 1))
    # Hull of the pixels' corners, so a pixel counts as the unit square it covers.
    corners = np.concatenate([np.stack([xs + dx, ys + dy], axis=1) for dx in (0, 1) for dy in (0, 1)])
    solidity = area / max(_convex_hull_area(corners), 1.0)
    widths = mask[top : bottom + 1].sum(axis=1).astype(np.float64)
    rows = np.nonzero(widths >= widths.max() - 0.5)[0]
    widest = float(rows.mean()) / max(bottom - top, 1)
    if solidity < 0.8:
        shape = "star"
    elif fill > 0.9:
        shape = "square"
    elif fill > 0.63:
        shape = "circle"
    else:
        shape = "triangle" if widest > 0.7 else "diamond"
    return shape, fill, solidity, widest


def read_image(image) -> Reading:
    """Measure a shapes image (see the module doc). Accepts what `to_rgb_array` does."""
    rgb = to_rgb_array(image)
    side = rgb.shape[0]
    background_rgb = border_colour(rgb)
    mask, far = shape_mask(rgb, background_rgb)
    mask = largest_component(mask)
    found = bool(mask.sum() >= 4 and far >= 40.0)
    background = nearest_colour(background_rgb)
    if not found:
        ring = tuple(float(v) for v in background_rgb)
        return Reading(background, background, "circle", "center", "small", False, (0.5, 0.5), 0.0, 0.0, 0.5, far,
                       ring, ring)
    distance = np.linalg.norm(rgb - background_rgb, axis=-1)
    core = mask & (distance >= np.percentile(distance[mask], 50))
    colour_rgb = np.median(rgb[core], axis=0)
    colour = nearest_colour(colour_rgb)
    ys, xs = np.nonzero(mask)
    cx, cy = (xs.mean() + 0.5) / side, (ys.mean() + 0.5) / side
    cell = (min(int(cx * 3), 2), min(int(cy * 3), 2))
    shape, fill, solidity, widest = classify_shape(mask)
    radius = 0.5 * max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) / side
    size = _size_name(radius / EXTENT[shape])
    contrast = float(np.linalg.norm(colour_rgb - background_rgb))
    return Reading(background, colour, shape, _CELL_TO_POSITION[cell], size, True, (float(cx), float(cy)),
                   fill, solidity, widest, contrast, tuple(float(v) for v in colour_rgb),
                   tuple(float(v) for v in background_rgb))


def colour_error(rgb, name: str) -> float:
    """RGB distance (0-255 units) from a measured colour to the palette colour `name`: how far
    the picture's colour is from the one asked for, finer than right-or-wrong."""
    return float(np.linalg.norm(np.asarray(rgb, dtype=np.float64) - np.asarray(COLOURS[name], dtype=np.float64)))


def _size_name(half_extent: float) -> str:
    """Size word from the shape's radius (a fraction of the side): thresholds halfway between SIZES."""
    names = list(SIZES)
    radii = [SIZES[name] for name in names]
    for name, low, high in zip(names, radii, radii[1:]):
        if half_extent < (low + high) / 2:
            return name
    return names[-1]


def saturated_colour(image, fraction: float = 0.05) -> str:
    """The nearest chromatic palette colour to the mean of the `fraction` most saturated pixels
    (saturation = max - min channel), a measure that needs no segmentation."""
    rgb = to_rgb_array(image).reshape(-1, 3)
    saturation = rgb.max(axis=1) - rgb.min(axis=1)
    count = max(1, int(len(rgb) * fraction))
    top = rgb[np.argsort(saturation)[-count:]]
    return nearest_colour(top.mean(axis=0), tuple(name for name in COLOURS if name not in NEUTRAL))
