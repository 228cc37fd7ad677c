"""A procedural captioned dataset: one coloured shape on a plain background, drawn on the fly.

Every example is a `ShapeSpec` (shape, colour, background, size, position, exact centre), the
image drawn from it, and a caption that says what was drawn::

    "a small red circle on a blue background, top left"
    "a green star, bottom"                  (no background named: white, gray or black)
    "a large yellow triangle on a purple background"   (no position named: anywhere)

A caption may leave out the size, the position, the colour, or a neutral (white, gray or black)
background; what it leaves out is then drawn at random, except the background, which is neutral
whenever the caption does not name one. So "a red circle" means a red circle on a neutral
background, anywhere, any size, and its most saturated pixels are red.

Example `i` of a dataset with seed `s` comes from its own generator seeded with (s, i), so any
example can be redrawn alone and a run is reproducible from its seed. Images are uint8 RGB,
`size` pixels square (64 by default, the demo model's native size); shapes are drawn 4x larger
and box-filtered down, so their edges are anti-aliased.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64  # the demo model's native size: 64x64 pixels, an 8x8 latent

# Colours by name, sRGB. Chromatic ones are 30+ degrees of hue apart; pink is a light red-purple.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (245, 135, 25),
    "yellow": (245, 215, 30),
    "green": (40, 160, 60),
    "blue": (35, 75, 215),
    "purple": (130, 50, 180),
    "pink": (240, 130, 190),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (25, 25, 25),
}
NEUTRAL = ("white", "gray", "black")
CHROMATIC = tuple(name for name in COLOURS if name not in NEUTRAL)
SHAPE_COLOURS = CHROMATIC + ("white", "black")
BACKGROUNDS = tuple(COLOURS)

SHAPES = ("circle", "square", "triangle", "star", "diamond")
# Half the larger side of each shape's bounding box, in radii (see `_polygon`).
EXTENT = {"circle": 1.0, "square": 0.88, "triangle": 1.08, "star": 1.065, "diamond": 1.1}

# Size word -> shape radius as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.11, "medium": 0.16, "large": 0.21}

# Position word -> (column, row) of the 3x3 grid; cell centres at 0.27, 0.5, 0.73 of the side.
GRID = (0.27, 0.5, 0.73)
POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (0, 0),
    "top": (1, 0),
    "top right": (2, 0),
    "left": (0, 1),
    "center": (1, 1),
    "right": (2, 1),
    "bottom left": (0, 2),
    "bottom": (1, 2),
    "bottom right": (2, 2),
}
CENTRE_JITTER = 0.03  # the exact centre moves up to this fraction of the side from its cell centre
SIZE_JITTER = 0.05  # and the radius up to 5% either way

# Probabilities of naming each attribute in a training caption.
P_NAME_SIZE = 0.5
P_NAME_POSITION = 0.75
P_NAME_COLOUR = 0.95
P_NAME_NEUTRAL_BACKGROUND = 0.5
P_NEUTRAL_BACKGROUND = 0.3

# Shape and background must differ by at least this much (RGB distance) to be drawn together.
MIN_CONTRAST = 75.0
SUPERSAMPLE = 4


def colour_distance(a: str, b: str) -> float:
    return float(np.linalg.norm(np.subtract(COLOURS[a], COLOURS[b], dtype=np.float64)))


@dataclass(frozen=True)
class ShapeSpec:
    """What one image shows. cx, cy: the shape's centre as fractions of the side (0 = left/top);
    radius: its half-extent as a fraction of the side."""

    shape: str
    colour: str
    background: str
    size: str
    position: str
    cx: float
    cy: float
    radius: float

    def __post_init__(self) -> None:
        for value, allowed, what in ((self.shape, SHAPES, "shape"), (self.colour, COLOURS, "colour"),
                                     (self.background, COLOURS, "background"), (self.size, SIZES, "size"),
                                     (self.position, POSITIONS, "position")):
            if value not in allowed:
                raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")


@dataclass(frozen=True)
class Mentions:
    """Which attributes a caption names (the shape is always named)."""

    colour: bool = True
    background: bool = True
    size: bool = True
    position: bool = True


@dataclass
class Example:
    image: np.ndarray  # uint8 [size, size, 3]
    caption: str
    spec: ShapeSpec
    mentions: Mentions = field(default_factory=Mentions)


def spec_for(shape: str, colour: str, background: str, size: str = "medium", position: str = "center",
             rng: np.random.Generator | None = None) -> ShapeSpec:
    """A spec from words; with `rng`, the centre and radius are jittered as in training."""
    column, row = POSITIONS[position]
    cx, cy, radius = GRID[column], GRID[row], SIZES[size]
    if rng is not None:
        cx += rng.uniform(-CENTRE_JITTER, CENTRE_JITTER)
        cy += rng.uniform(-CENTRE_JITTER, CENTRE_JITTER)
        radius *= 1 + rng.uniform(-SIZE_JITTER, SIZE_JITTER)
    return ShapeSpec(shape, colour, background, size, position, float(cx), float(cy), float(radius))


def random_spec(rng: np.random.Generator, neutral_background: bool | None = None) -> ShapeSpec:
    """A random shape: any colour on a background that contrasts with it (neutral with
    probability P_NEUTRAL_BACKGROUND unless `neutral_background` says)."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    colour = SHAPE_COLOURS[rng.integers(len(SHAPE_COLOURS))]
    if neutral_background is None:
        neutral_background = bool(rng.random() < P_NEUTRAL_BACKGROUND)
    pool = NEUTRAL if neutral_background else CHROMATIC
    choices = [name for name in pool if colour_distance(name, colour) >= MIN_CONTRAST]
    background = choices[rng.integers(len(choices))]
    size = tuple(SIZES)[rng.integers(len(SIZES))]
    position = tuple(POSITIONS)[rng.integers(len(POSITIONS))]
    return spec_for(shape, colour, background, size, position, rng)


def random_mentions(rng: np.random.Generator, spec: ShapeSpec) -> Mentions:
    """What a training caption names: a chromatic background always, the rest at random."""
    neutral = spec.background in NEUTRAL
    return Mentions(
        colour=bool(rng.random() < P_NAME_COLOUR),
        background=not neutral or bool(rng.random() < P_NAME_NEUTRAL_BACKGROUND),
        size=bool(rng.random() < P_NAME_SIZE),
        position=bool(rng.random() < P_NAME_POSITION),
    )


def caption(spec: ShapeSpec, mentions: Mentions = Mentions()) -> str:
    """The caption of a spec: "a [size] [colour] shape[ on a background background][, position]"."""
    words = []
    if mentions.size:
        words.append(spec.size)
    if mentions.colour:
        words.append(spec.colour)
    words.append(spec.shape)
    article = "an" if words[0][0] in "aeiou" else "a"
    text = f"{article} {' '.join(words)}"
    if mentions.background:
        text += f" on a {spec.background} background"
    if mentions.position:
        text += f", {spec.position}"
    return text


_CAPTION = re.compile(
    r"^\s*an?\s+(?:(?P<size>small|medium|large)\s+)?(?:(?P<colour>[a-z]+)\s+)??(?P<shape>[a-z]+)"
    r"(?:\s+on\s+an?\s+(?P<background>[a-z]+)\s+background)?(?:\s*,\s*(?P<position>[a-z ]+?))?\s*$"
)


def parse_caption(text: str) -> dict[str, str]:
    """The attributes a caption of this dataset names, e.g. {"colour": "red", "shape": "circle",
    "background": "blue", "position": "top left"}; unnamed ones are absent. Raises ValueError for
    text that is not such a caption."""
    match = _CAPTION.match(text.lower())
    if match is None:
        raise ValueError(f"not a caption of the shapes dataset: {text!r}")
    found = {key: value for key, value in match.groupdict().items() if value}
    allowed = {"size": SIZES, "colour": COLOURS, "shape": SHAPES, "background": COLOURS, "position": POSITIONS}
    for key, value in found.items():
        if value not in allowed[key]:
            raise ValueError(f"{text!r}: unknown {key} {value!r}")
    return found


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Vertices of a polygonal shape (None for the circle), upright, centred on (cx, cy)."""
    if shape == "square":
        h = 0.88 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        # Centred on its centroid (a third of the way up from the base), as the other shapes are.
        return [(cx, cy - 1.233 * r), (cx + 1.08 * r, cy + 0.617 * r), (cx - 1.08 * r, cy + 0.617 * r)]
    if shape == "diamond":
        return [(cx, cy - 1.1 * r), (cx + 0.9 * r, cy), (cx, cy + 1.1 * r), (cx - 0.9 * r, cy)]
    if shape == "star":
        outer, inner = 1.12 * r, 0.47 * r
        points = []
        for k in range(10):
            angle = -np.pi / 2 + k * np.pi / 5
            radius = outer if k % 2 == 0 else inner
            points.append((cx + radius * np.cos(angle), cy + radius * np.sin(angle)))
        return points
    return None


def render(spec: ShapeSpec, size: int = IMAGE_SIZE) -> np.ndarray:
    """Draw a spec as a uint8 RGB image `size` pixels square."""
    return render_many([spec], size)


def render_many(specs: list[ShapeSpec], size: int = IMAGE_SIZE) -> np.ndarray:
    """Draw several shapes, in order, on the first spec's background."""
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), COLOURS[specs[0].background])
    draw = ImageDraw.Draw(image)
    for spec in specs:
        cx, cy, r = spec.cx * big, spec.cy * big, spec.radius * big
        fill = COLOURS[spec.colour]
        polygon = _polygon(spec.shape, cx, cy, r)
        if polygon is None:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        else:
            draw.polygon(polygon, fill=fill)
    return np.asarray(image.reduce(SUPERSAMPLE), dtype=np.uint8)


def random_collage(rng: np.random.Generator, size: int = IMAGE_SIZE, max_shapes: int = 4) -> np.ndarray:
    """1 to `max_shapes` random shapes anywhere on one background: VAE training images, which
    need no caption and teach the decoder to draw shapes several times faster per image."""
    first = random_spec(rng)
    specs = [first]
    for _ in range(int(rng.integers(max_shapes))):
        spec = random_spec(rng)
        if colour_distance(spec.colour, first.background) < MIN_CONTRAST:
            continue
        cx, cy = rng.uniform(0.12, 0.88, size=2)
        specs.append(ShapeSpec(spec.shape, spec.colour, first.background, spec.size, spec.position,
                               float(cx), float(cy), spec.radius))
    return render_many(specs, size)


class ShapesDataset:
    """An endless, reproducible stream of captioned shape images.

    `example(i)` is the same for the same (seed, i) on every machine; `batch(start, n)` stacks
    examples start..start+n-1 as float tensors in [-1, 1] with their captions.
    """

    def __init__(self, seed: int = 0, size: int = IMAGE_SIZE):
        self.seed = seed
        self.size = size

    def described(self, index: int) -> tuple[ShapeSpec, Mentions]:
        """Example `index`'s spec and what its caption names, without drawing it."""
        rng = np.random.default_rng([self.seed, index])
        spec = random_spec(rng)
        return spec, random_mentions(rng, spec)

    def example(self, index: int) -> Example:
        spec, mentions = self.described(index)
        return Example(render(spec, self.size), caption(spec, mentions), spec, mentions)

    def __iter__(self) -> Iterator[Example]:
        index = 0
        while True:
            yield self.example(index)
            index += 1

    def images(self, start: int, count: int) -> np.ndarray:
        """uint8 [count, size, size, 3] of examples start..start+count-1."""
        return np.stack([self.example(i).image for i in range(start, start + count)])

    def collages(self, start: int, count: int):
        """float32 [count, 3, size, size] in [-1, 1] of several-shape images (see random_collage)."""
        import torch

        images = np.stack([random_collage(np.random.default_rng([self.seed, index, 1]), self.size)
                           for index in range(start, start + count)])
        return torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()

    def batch(self, start: int, count: int):
        """(images float32 [count, 3, size, size] in [-1, 1], captions) of examples start.."""
        import torch

        examples = [self.example(i) for i in range(start, start + count)]
        pixels = np.stack([example.image for example in examples]).astype(np.float32) / 127.5 - 1.0
        return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), [example.caption for example in examples]
