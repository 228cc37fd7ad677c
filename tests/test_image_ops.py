"""Image and mask nodes (nodes/image_ops.py, nodes/masks.py): resizing against Pillow and torch
references, every other node against small hand-made inputs with exact expected outputs (and,
where ComfyUI's node defines the result, against that definition written out here), batches,
size limits and error messages, and a few runs through the executor from a loaded PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import latentgraph.nodes.library  # noqa: F401  (registers the built-in nodes)
from latentgraph.engine import CancelToken, EventBus, Executor, OutputCache, RunContext, WorkflowInvalid, registry
from latentgraph.nodes import image_ops, masks
from latentgraph.nodes.folders import Folders
from latentgraph.nodes.sd.limits import OverLimit
from latentgraph.nodes.services import RunLimits, Services

FORMAT = "latentgraph/workflow@1"
RNG = np.random.default_rng(1234)


def run_node(cls, services: Services | None = None, **inputs):
    """One node's run outside a workflow; its outputs as a dict."""
    ctx = RunContext("run", "node", cls.node_info.type, services or Services(), CancelToken(), lambda *_: None)
    return dict(cls.model_construct(**inputs).run(ctx))


def image_of(*rows_per_image) -> torch.Tensor:
    """An IMAGE batch from nested lists of grey values (each pixel's three channels equal)."""
    grey = torch.tensor(rows_per_image, dtype=torch.float32)
    return grey[..., None].expand(-1, -1, -1, 3).contiguous()


def random_image(batch: int, height: int, width: int) -> torch.Tensor:
    return torch.from_numpy(RNG.random((batch, height, width, 3), dtype=np.float32))


def pillow_resize(image: torch.Tensor, width: int, height: int, resample) -> torch.Tensor:
    """The reference: Pillow on each channel of each image as 32-bit float ("F") pictures."""
    out = np.empty((image.shape[0], height, width, image.shape[3]), np.float32)
    for b, picture in enumerate(image.numpy()):
        for c in range(picture.shape[2]):
            plane = Image.fromarray(np.ascontiguousarray(picture[:, :, c]))
            out[b, :, :, c] = np.asarray(plane.resize((width, height), resample))
    return torch.from_numpy(out)


# ---- resampling against Pillow and torch ---------------------------------------------------------------

SIZES = [(50, 36), (13, 9), (31, 40), (24, 7)]  # from 31x23: larger, smaller, mixed


@pytest.mark.parametrize(("method", "resample"), [("bilinear", Image.Resampling.BILINEAR),
                                                  ("bicubic", Image.Resampling.BICUBIC),
                                                  ("nearest-exact", Image.Resampling.NEAREST),
                                                  ("lanczos", Image.Resampling.LANCZOS)])
def test_resize_equals_pillow_on_float_pixels_enlarging_and_shrinking(method, resample):
    image = random_image(2, 23, 31)
    for width, height in SIZES:
        got = run_node(image_ops.ImageScale, image=image, upscale_method=method, width=width, height=height,
                       crop="disabled")["image"]
        assert got.shape == (2, height, width, 3) and got.dtype == torch.float32 and got.is_contiguous()
        expected = pillow_resize(image, width, height, resample)
        if method in ("bicubic", "lanczos"):
            expected = expected.clamp(0, 1)  # both overshoot at hard edges; an IMAGE stays in [0, 1]
        tolerance = 0 if method == "nearest-exact" else 2e-6
        assert (got - expected).abs().max() <= tolerance, (method, width, height)


def test_lanczos_keeps_the_float_values_where_comfyui_rounds_to_8_bits():
    # levels 64-191: Lanczos's overshoot stays inside 0-255, where Pillow's 8-bit passes would clip it
    image = torch.from_numpy(RNG.integers(64, 192, (1, 20, 30, 3)).astype(np.float32) / 255)
    got = run_node(image_ops.ImageScaleBy, image=image, upscale_method="lanczos", scale_by=1.5)["image"]
    eight_bit = Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8)).resize((45, 30), Image.Resampling.LANCZOS)
    as_comfyui = torch.from_numpy(np.asarray(eight_bit).astype(np.float32) / 255)
    difference = (got[0] - as_comfyui).abs()
    # the same filter: Pillow's 8-bit path rounds after each of its two passes, and nothing else differs
    assert difference.max() <= 1.5 / 255
    assert difference.max() > 0 and not torch.equal(got[0] * 255, (got[0] * 255).round())


def test_bilinear_enlarging_equals_plain_interpolation_and_a_hand_computed_row():
    # Comfy's ImageScale is plain F.interpolate; antialiasing only changes a shrink.
    image = random_image(1, 9, 11)
    got = run_node(image_ops.ImageScale, image=image, upscale_method="bilinear", width=29, height=20, crop="disabled")["image"]
    plain = F.interpolate(image.movedim(-1, 1), size=(20, 29), mode="bilinear").movedim(1, -1)
    assert (got - plain).abs().max() < 2e-6
    row = run_node(image_ops.ImageScale, image=image_of([[0.0, 1.0]]), upscale_method="bilinear", width=4, height=1,
                   crop="disabled")["image"]
    assert row[0, 0, :, 0].tolist() == [0.0, 0.25, 0.75, 1.0]  # pixel centres at -0.25, 0.25, 0.75, 1.25


def test_shrinking_with_bilinear_is_antialiased_not_a_sample_between_two_pixels():
    lines = image_of([[float(x % 4 == 0) for x in range(16)]] * 4)  # a white line every 4 pixels, a quarter white
    got = run_node(image_ops.ImageScale, image=lines, upscale_method="bilinear", width=4, height=1, crop="disabled")["image"]
    # inside, the 8-pixel triangle filter (weights 1, 3, 5, 7, 7, 5, 3, 1 / 32) meets one line at 5 and one at 3
    assert got[0, 0, 1:3, 0].tolist() == pytest.approx([0.25, 0.25], abs=1e-6)
    aliased = F.interpolate(lines.movedim(-1, 1), size=(1, 4), mode="bilinear").movedim(1, -1)
    assert (aliased == 0).all()  # plain bilinear samples between two black pixels: the lines vanish


def test_area_averages_whole_blocks_and_matches_opencv_for_integer_factors():
    import cv2

    image = image_of([[0, 2, 4, 6], [2, 4, 6, 8], [1, 1, 0, 0], [3, 3, 0, 8]]) / 8
    got = run_node(image_ops.ImageScale, image=image, upscale_method="area", width=2, height=2, crop="disabled")["image"]
    assert (got[0, :, :, 0] * 8).tolist() == [[2.0, 6.0], [2.0, 2.0]]
    big = random_image(1, 24, 36)
    got = run_node(image_ops.ImageScaleBy, image=big, upscale_method="area", scale_by=1 / 3)["image"]
    expected = cv2.resize(big[0].numpy(), (12, 8), interpolation=cv2.INTER_AREA)
    assert np.abs(got[0].numpy() - expected).max() < 1e-6


def test_nearest_exact_doubling_repeats_each_pixel_as_a_2x2_block():
    image = image_of([[0.1, 0.2], [0.3, 0.4]])
    got = run_node(image_ops.ImageScaleBy, image=image, upscale_method="nearest-exact", scale_by=2.0)["image"]
    assert torch.equal(got[0, :, :, 0], torch.tensor([[0.1, 0.1, 0.2, 0.2], [0.1, 0.1, 0.2, 0.2],
                                                      [0.3, 0.3, 0.4, 0.4], [0.3, 0.3, 0.4, 0.4]]))


def test_image_scale_keeps_the_aspect_ratio_for_a_zero_side_and_leaves_both_zero_alone():
    image = random_image(2, 20, 40)
    scale = image_ops.ImageScale
    assert run_node(scale, image=image, upscale_method="bilinear", width=0, height=10, crop="disabled")["image"].shape == (2, 10, 20, 3)
    assert run_node(scale, image=image, upscale_method="bilinear", width=30, height=0, crop="disabled")["image"].shape == (2, 15, 30, 3)
    assert run_node(scale, image=image, upscale_method="bilinear", width=0, height=0, crop="disabled")["image"] is image


def test_center_crop_cuts_to_the_new_aspect_ratio_around_the_middle_before_resizing():
    image = random_image(1, 20, 40)
    got = run_node(image_ops.ImageScale, image=image, upscale_method="nearest-exact", width=20, height=20, crop="center")["image"]
    assert torch.equal(got, image[:, :, 10:30])  # margins round((40 - 40 * 0.5) / 2) = 10 each side
    got = run_node(image_ops.ImageScale, image=image, upscale_method="bilinear", width=10, height=10, crop="center")["image"]
    expected = pillow_resize(image[:, :, 10:30].contiguous(), 10, 10, Image.Resampling.BILINEAR)
    assert (got - expected).abs().max() < 2e-6
    assert image_ops.center_crop_box(40, 20, 16, 9) == (2, 0, 36, 20)  # margins round(2.22) = 2
    assert image_ops.center_crop_box(12, 12, 8, 6) == (0, 2, 12, 8)  # round(1.5) = 2: Python rounds half to even
    assert image_ops.center_crop_box(7, 5, 1, 1) == (1, 0, 5, 5)


def test_scale_to_total_pixels_sizes_and_resolution_steps():
    image = random_image(1, 20, 30)
    total = image_ops.ImageScaleToTotalPixels
    # 0.01 MP = int(0.01 * 1024 * 1024) = 10485 pixels; the scale is sqrt(10485 / 600) = 4.180
    got = run_node(total, image=image, upscale_method="bilinear", megapixels=0.01, resolution_steps=1)["image"]
    assert got.shape == (1, 84, 125, 3)
    got = run_node(total, image=image, upscale_method="bilinear", megapixels=0.01, resolution_steps=8)["image"]
    assert got.shape == (1, 80, 128, 3)
    expected = pillow_resize(image, 128, 80, Image.Resampling.BILINEAR)
    assert (got - expected).abs().max() < 2e-6


def test_a_scale_by_factor_too_small_for_one_pixel_is_refused_naming_the_input():
    with pytest.raises(ValueError, match=r"^input 'scale_by': 0.01 makes the 40x20 image 0x0 pixels; at least 1x1"):
        run_node(image_ops.ImageScaleBy, image=random_image(1, 20, 40), upscale_method="bilinear", scale_by=0.01)


# ---- size limits -------------------------------------------------------------------------------------

def test_results_over_the_run_limits_are_refused_before_anything_is_allocated():
    image = random_image(1, 300, 300)
    with pytest.raises(OverLimit, match=r"^the scaled image: 2400x2400 is 5,760,000 pixels, over the limit of "
                                        r"4,194,304 \(--max-pixels\)$"):
        run_node(image_ops.ImageScaleBy, image=image, upscale_method="bilinear", scale_by=8.0)
    # with the run limit off, the node's own cap still holds: no side over 8192
    services = Services(limits=RunLimits(max_pixels=0))
    with pytest.raises(OverLimit, match=r"^the scaled image would be 9600x9600 pixels; at most 8192 a side"):
        run_node(image_ops.ImageScaleBy, services, image=random_image(1, 1200, 1200), upscale_method="bilinear", scale_by=8.0)
    with pytest.raises(OverLimit, match=r"^the padded image: .* over the limit of 4,194,304 \(--max-pixels\)"):
        run_node(image_ops.ImagePad, image=image, left=3000, top=0, right=0, bottom=3000, feathering=0)
    hungry = Services(limits=RunLimits(memory_fraction=1e-9))
    with pytest.raises(OverLimit, match=r"^the scaled image \(1 x 600x600\) needs about .* of memory, but"):
        run_node(image_ops.ImageScaleBy, hungry, image=image, upscale_method="bilinear", scale_by=2.0)
    few = Services(limits=RunLimits(max_batch=2))
    with pytest.raises(OverLimit, match=r"^the batch: a batch of 3 is over the limit of 2 \(--max-batch\)$"):
        run_node(image_ops.ImageBatch, few, image1=random_image(2, 4, 4), image2=random_image(1, 4, 4))


# ---- crop, flip, rotate ------------------------------------------------------------------------------

GRID = [[10 * r + c for c in range(5)] for r in range(4)]  # 4 rows, 5 columns: value = 10 x row + column


def test_crop_takes_the_rectangle_at_x_y_and_stops_at_the_edges():
    image = image_of(GRID, GRID)
    crop = image_ops.ImageCrop
    got = run_node(crop, image=image, width=2, height=1, x=1, y=2)["image"]
    assert got.shape == (2, 1, 2, 3) and got[0, :, :, 0].tolist() == [[21.0, 22.0]] and got.is_contiguous()
    got = run_node(crop, image=image, width=512, height=512, x=3, y=1)["image"]
    assert got[1, :, :, 0].tolist() == [[13.0, 14.0], [23.0, 24.0], [33.0, 34.0]]
    with pytest.raises(ValueError, match=r"^input 'x' is 5, outside the 5x4 image \(at most 4\)$"):
        run_node(crop, image=image, width=2, height=2, x=5, y=0)
    with pytest.raises(ValueError, match=r"^input 'y' is 9, outside the 5x4 image \(at most 3\)$"):
        run_node(crop, image=image, width=2, height=2, x=0, y=9)


def test_flip_vertically_and_horizontally():
    image = random_image(2, 4, 5)
    upside_down = run_node(image_ops.ImageFlip, image=image, flip_method="x-axis: vertically")["image"]
    mirrored = run_node(image_ops.ImageFlip, image=image, flip_method="y-axis: horizontally")["image"]
    assert np.array_equal(upside_down.numpy(), image.numpy()[:, ::-1])
    assert np.array_equal(mirrored.numpy(), image.numpy()[:, :, ::-1])


def test_rotate_turns_clockwise_as_pillow_does_and_swaps_the_sides():
    image = image_of([[1, 2, 3], [4, 5, 6]])
    got = run_node(image_ops.ImageRotate, image=image, rotation="90 degrees")["image"]
    assert got[0, :, :, 0].tolist() == [[4.0, 1.0], [5.0, 2.0], [6.0, 3.0]]  # the left column becomes the top row
    pixels = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    picture = torch.from_numpy(pixels.astype(np.float32) / 255)[None]
    for rotation, transpose in (("90 degrees", Image.Transpose.ROTATE_270), ("180 degrees", Image.Transpose.ROTATE_180),
                                ("270 degrees", Image.Transpose.ROTATE_90)):  # Pillow's angles run anticlockwise
        got = run_node(image_ops.ImageRotate, image=picture, rotation=rotation)["image"]
        expected = np.asarray(Image.fromarray(pixels).transpose(transpose)).astype(np.float32) / 255
        assert np.array_equal(got[0].numpy(), expected), rotation
    assert torch.equal(run_node(image_ops.ImageRotate, image=picture, rotation="none")["image"], picture)


# ---- outpainting pad ---------------------------------------------------------------------------------

def comfyui_pad_mask(height, width, left, top, right, bottom, feathering):
    """ImagePadForOutpaint's mask written out as ComfyUI defines it, pixel by pixel."""
    mask = np.ones((height + top + bottom, width + left + right), np.float32)
    inner = np.zeros((height, width), np.float32)
    if feathering > 0 and feathering * 2 < height and feathering * 2 < width:
        for i in range(height):
            for j in range(width):
                d = min(i if top else height, height - i if bottom else height,
                        j if left else width, width - j if right else width)
                if d < feathering:
                    inner[i, j] = ((feathering - d) / feathering) ** 2
    mask[top:top + height, left:left + width] = inner
    return mask


def test_pad_puts_the_picture_on_a_grey_canvas_and_masks_the_new_area_exactly():
    image = image_of(*[[[0.1 * (r + c) for c in range(4)] for r in range(4)]] * 2)
    out = run_node(image_ops.ImagePad, image=image, left=2, top=0, right=0, bottom=1, feathering=1)
    canvas, mask = out["image"], out["mask"]
    assert canvas.shape == (2, 5, 6, 3) and mask.shape == (2, 5, 6) and mask.dtype == torch.float32
    assert torch.equal(canvas[:, :4, 2:], image)
    assert (canvas[:, :, :2] == 0.5).all() and (canvas[:, 4:] == 0.5).all()
    assert mask[0].tolist() == [[1, 1, 1, 0, 0, 0],  # the column beside the padding: d = 0, so 1
                                [1, 1, 1, 0, 0, 0],
                                [1, 1, 1, 0, 0, 0],
                                [1, 1, 1, 0, 0, 0],
                                [1, 1, 1, 1, 1, 1]]
    assert torch.equal(mask[0], mask[1])


@pytest.mark.parametrize(("left", "top", "right", "bottom", "feathering"),
                         [(8, 16, 0, 8, 6), (0, 0, 24, 0, 10), (8, 8, 8, 8, 3), (16, 0, 0, 0, 12), (8, 8, 8, 8, 0), (0, 0, 0, 0, 5)])
def test_pad_feathering_follows_comfyuis_formula(left, top, right, bottom, feathering):
    image = random_image(1, 26, 30)
    mask = run_node(image_ops.ImagePad, image=image, left=left, top=top, right=right, bottom=bottom,
                    feathering=feathering)["mask"][0]
    assert np.abs(mask.numpy() - comfyui_pad_mask(26, 30, left, top, right, bottom, feathering)).max() < 1e-6


def test_pad_leaves_feathering_out_when_the_picture_is_too_small_for_it():
    mask = run_node(image_ops.ImagePad, image=random_image(1, 10, 30), left=8, top=0, right=0, bottom=0, feathering=5)["mask"][0]
    assert (mask[:, 8:] == 0).all() and (mask[:, :8] == 1).all()  # 2 x 5 is not below the height 10


# ---- composite, blend, batch -------------------------------------------------------------------------

def test_composite_pastes_at_x_y_and_leaves_out_what_runs_past_the_edges():
    destination, source = image_of([[0.0] * 4] * 4), image_of([[0.5, 0.6], [0.7, 0.8]])
    composite = image_ops.ImageCompositeMasked
    got = run_node(composite, destination=destination, source=source, x=1, y=2, resize_source=False, mask=None)["image"]
    assert torch.equal(got[0, :, :, 0], torch.tensor([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0.5, 0.6, 0], [0, 0.7, 0.8, 0]]))
    got = run_node(composite, destination=destination, source=source, x=3, y=3, resize_source=False, mask=None)["image"]
    assert got[0, :, :, 0].sum() == 0.5 and got[0, 3, 3, 0] == 0.5
    got = run_node(composite, destination=destination, source=source, x=4, y=0, resize_source=False, mask=None)["image"]
    assert torch.equal(got, destination)
    assert destination.sum() == 0  # the input is not written to


def test_composite_mixes_by_the_mask_and_resizes_a_mask_of_another_size():
    destination, source = image_of([[0.2] * 3] * 2), image_of([[1.0] * 3] * 2)
    mask = torch.tensor([[[1.0, 0.5, 0.0], [0.0, 0.25, 1.0]]])
    got = run_node(image_ops.ImageCompositeMasked, destination=destination, source=source, x=0, y=0,
                   resize_source=False, mask=mask)["image"]
    assert torch.allclose(got[0, :, :, 0], torch.tensor([[1.0, 0.6, 0.2], [0.2, 0.4, 1.0]]))
    one_value = torch.full((1, 1, 1), 0.75)  # resized bilinearly to the source's 3x2: 0.75 everywhere
    got = run_node(image_ops.ImageCompositeMasked, destination=destination, source=source, x=0, y=0,
                   resize_source=False, mask=one_value)["image"]
    assert torch.allclose(got, torch.full_like(got, 0.8))


def test_composite_resize_source_and_batches():
    destination = image_of([[0.0] * 4] * 4, [[0.1] * 4] * 4, [[0.2] * 4] * 4)
    source = image_of([[1.0, 0.0], [0.0, 1.0]])
    got = run_node(image_ops.ImageCompositeMasked, destination=destination, source=source, x=0, y=0,
                   resize_source=True, mask=None)["image"]
    expected = pillow_resize(source, 4, 4, Image.Resampling.BILINEAR)
    assert got.shape == (3, 4, 4, 3) and (got - expected).abs().max() < 2e-6
    many = image_of([[1.0]], [[0.5]], [[0.25]])
    got = run_node(image_ops.ImageCompositeMasked, destination=destination[:1], source=many, x=1, y=1,
                   resize_source=False, mask=None)["image"]
    assert got[:, 1, 1, 0].tolist() == [1.0, 0.5, 0.25] and got.shape[0] == 3
    with pytest.raises(ValueError, match=r"^the batches do not fit together \('destination' has 3, 'source' has 2\)"):
        run_node(image_ops.ImageCompositeMasked, destination=destination, source=many[:2], x=0, y=0,
                 resize_source=False, mask=None)
    with pytest.raises(ValueError, match=r"^input 'mask' must be a batch of masks, shape \[batch, height, width\]; got "
                                         r"Tensor of shape \[1, 2, 2, 3\]"):
        run_node(image_ops.ImageCompositeMasked, destination=destination, source=source, x=0, y=0,
                 resize_source=False, mask=source)
    with pytest.raises(ValueError, match=r"^input 'source' must be a batch of RGB images"):
        run_node(image_ops.ImageCompositeMasked, destination=destination, source=source[..., 0], x=0, y=0,
                 resize_source=False, mask=None)


BASE, LAYER = 0.2, 0.6  # one pixel pair, each mode's value worked out by hand


@pytest.mark.parametrize(("mode", "blended"), [
    ("normal", 0.6),
    ("multiply", 0.12),
    ("screen", 0.68),                                   # 1 - 0.8 x 0.4
    ("overlay", 0.24),                                  # base <= 0.5: 2 x 0.2 x 0.6
    ("soft_light", 0.2496),                             # 0.2 + 0.2 x (D(0.2) - 0.2), D(0.2) = 0.448
    ("difference", 0.4),
])
def test_blend_modes_with_hand_computed_values(mode, blended):
    image1, image2 = image_of([[BASE, 0.8]]), image_of([[LAYER, 0.3]])
    for factor in (1.0, 0.5):
        got = run_node(image_ops.ImageBlend, image1=image1, image2=image2, blend_factor=factor, blend_mode=mode)["image"]
        assert got[0, 0, 0, 0].item() == pytest.approx(BASE * (1 - factor) + blended * factor, abs=1e-6)
    second = {"normal": 0.3, "multiply": 0.24, "screen": 0.86, "overlay": 0.72,  # base > 0.5: 1 - 2 x 0.2 x 0.7
              "soft_light": 0.8 - 0.4 * 0.8 * 0.2, "difference": 0.5}[mode]
    got = run_node(image_ops.ImageBlend, image1=image1, image2=image2, blend_factor=1.0, blend_mode=mode)["image"]
    assert got[0, 0, 1, 0].item() == pytest.approx(second, abs=1e-6)


def test_blend_resizes_image2_to_image1_and_keeps_image1_at_factor_0():
    image1, image2 = random_image(2, 6, 8), random_image(1, 12, 12)
    got = run_node(image_ops.ImageBlend, image1=image1, image2=image2, blend_factor=1.0, blend_mode="normal")["image"]
    expected = pillow_resize(image2[:, 2:10].contiguous(), 8, 6, Image.Resampling.BICUBIC).clamp(0, 1)  # centre crop
    assert got.shape == (2, 6, 8, 3) and (got[1] - expected[0]).abs().max() < 2e-6
    got = run_node(image_ops.ImageBlend, image1=image1, image2=image2, blend_factor=0.0, blend_mode="multiply")["image"]
    assert torch.equal(got, image1)


def test_batch_joins_in_order_and_fits_image2_to_image1s_size():
    first, second = random_image(2, 6, 8), random_image(3, 6, 8)
    got = run_node(image_ops.ImageBatch, image1=first, image2=second)["image"]
    assert torch.equal(got, torch.cat((first, second)))
    other = random_image(1, 10, 10)
    got = run_node(image_ops.ImageBatch, image1=first, image2=other)["image"]
    expected = pillow_resize(other[:, 1:9].contiguous(), 8, 6, Image.Resampling.BILINEAR)  # centre crop to 4:3, then resize
    assert got.shape == (3, 6, 8, 3) and (got[2:] - expected).abs().max() < 2e-6


# ---- making masks ------------------------------------------------------------------------------------

def test_image_to_mask_and_back():
    image = torch.tensor([[[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]]])
    for channel, values in (("red", [0.1, 0.4]), ("green", [0.2, 0.5]), ("blue", [0.3, 0.6])):
        mask = run_node(masks.ImageToMask, image=image, channel=channel)["mask"]
        assert mask.shape == (1, 1, 2) and mask[0, 0].tolist() == pytest.approx(values)
    mask = torch.tensor([[[0.0, 0.25], [1.0, 0.5]]])
    image = run_node(masks.MaskToImage, mask=mask)["image"]
    assert image.shape == (1, 2, 2, 3) and image.is_contiguous()
    assert all(torch.equal(image[..., c], mask) for c in range(3))


def test_mask_from_color_matches_8bit_colours_with_a_tolerance():
    pixels = np.array([[[255, 0, 0], [254, 1, 0], [250, 0, 0], [0, 0, 255]]], np.uint8)
    image = torch.from_numpy(pixels.astype(np.float32) / 255)[None]
    exact = run_node(masks.MaskFromColor, image=image, color=0xFF0000, tolerance=0)["mask"]
    assert exact.tolist() == [[[1.0, 0.0, 0.0, 0.0]]]
    near = run_node(masks.MaskFromColor, image=image, color=0xFF0000, tolerance=1)["mask"]
    assert near.tolist() == [[[1.0, 1.0, 0.0, 0.0]]]
    blue = run_node(masks.MaskFromColor, image=image, color=255, tolerance=0)["mask"]
    assert blue.tolist() == [[[0.0, 0.0, 0.0, 1.0]]]
    rounded = run_node(masks.MaskFromColor, image=torch.full((1, 1, 1, 3), 0.999), color=0xFFFFFF, tolerance=0)["mask"]
    assert rounded.item() == 1.0  # 0.999 x 255 rounds to 255


def test_solid_mask_and_its_size_checks(tmp_path):
    mask = run_node(masks.SolidMask, value=0.25, width=5, height=3)["mask"]
    assert mask.shape == (1, 3, 5) and (mask == 0.25).all()
    with pytest.raises(OverLimit, match=r"^the mask: 4096x2048 is 8,388,608 pixels, over the limit"):
        run_node(masks.SolidMask, value=1.0, width=4096, height=2048)
    executor = Executor(registry, OutputCache(1 << 20), services=Services(), events=EventBus())
    with pytest.raises(WorkflowInvalid) as caught:
        executor.validate({"format": FORMAT, "nodes": {
            "solid": {"type": "solid_mask", "inputs": {"width": 4096, "height": 2048}},
            "show": {"type": "mask_to_image", "inputs": {"mask": {"node": "solid", "output": "mask"}}}}},
            outputs=["show"])
    [issue] = caught.value.issues
    assert (issue.node, issue.input, issue.code) == ("solid", "width", "over_limit")
    assert issue.message.startswith("node 'solid' (solid_mask) input 'width': 4096x2048 is 8,388,608 pixels")


# ---- editing masks -----------------------------------------------------------------------------------

def test_invert_threshold_and_crop():
    mask = torch.tensor([[[0.0, 0.25, 0.5], [0.75, 1.0, 0.6]]])
    assert run_node(masks.InvertMask, mask=mask)["mask"].tolist() == [[[1.0, 0.75, 0.5], [0.25, 0.0, pytest.approx(0.4)]]]
    assert run_node(masks.ThresholdMask, mask=mask, value=0.5)["mask"].tolist() == [[[0, 0, 0], [1, 1, 1]]]
    assert run_node(masks.ThresholdMask, mask=mask, value=0.0)["mask"].tolist() == [[[0, 1, 1], [1, 1, 1]]]
    assert run_node(masks.CropMask, mask=mask, x=1, y=0, width=5, height=1)["mask"].tolist() == [[[0.25, 0.5]]]
    with pytest.raises(ValueError, match=r"^input 'y' is 2, outside the 3x2 mask \(at most 1\)$"):
        run_node(masks.CropMask, mask=mask, x=0, y=2, width=1, height=1)
    single = torch.tensor([[0.0, 1.0]])  # a mask without a batch dimension is a batch of one
    assert run_node(masks.InvertMask, mask=single)["mask"].tolist() == [[[1.0, 0.0]]]


def dot(size: int = 9, at: tuple[int, int] = (4, 4), value: float = 1.0) -> torch.Tensor:
    mask = torch.zeros(1, size, size)
    mask[0, at[0], at[1]] = value
    return mask


def test_grow_mask_makes_a_diamond_with_tapered_corners_and_a_square_without():
    diamond = run_node(masks.GrowMask, mask=dot(), expand=2, tapered_corners=True)["mask"][0]
    square = run_node(masks.GrowMask, mask=dot(), expand=2, tapered_corners=False)["mask"][0]
    rows, cols = torch.meshgrid(torch.arange(9), torch.arange(9), indexing="ij")
    assert torch.equal(diamond, ((rows - 4).abs() + (cols - 4).abs() <= 2).float())
    assert torch.equal(square, (torch.maximum((rows - 4).abs(), (cols - 4).abs()) <= 2).float())
    corner = run_node(masks.GrowMask, mask=dot(at=(0, 0)), expand=1, tapered_corners=False)["mask"][0]
    assert corner.sum() == 4 and corner[:2, :2].sum() == 4  # nothing wraps round to the far edges


def test_grow_mask_negative_shrinks_and_grey_levels_take_the_neighbourhood_max_or_min():
    block = torch.zeros(1, 7, 7)
    block[0, 1:6, 1:6] = 1
    shrunk = run_node(masks.GrowMask, mask=block, expand=-2, tapered_corners=False)["mask"][0]
    assert shrunk.sum() == 1 and shrunk[3, 3] == 1
    soft = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, 0.3, 0.0, 0.0], [0.0, 0.0, 0.0, 0.8]]])
    grown = run_node(masks.GrowMask, mask=soft, expand=1, tapered_corners=True)["mask"][0]
    assert torch.equal(grown, torch.tensor([[0.0, 0.3, 0.0, 0.0], [0.3, 0.3, 0.3, 0.8], [0.0, 0.3, 0.8, 0.8]]))
    assert run_node(masks.GrowMask, mask=soft, expand=0, tapered_corners=True)["mask"] is soft


@pytest.mark.parametrize(("expand", "tapered"), [(3, True), (5, False), (-2, True), (-3, False), (40, True)])
def test_grow_mask_equals_comfyuis_repeated_scipy_grey_morphology(expand, tapered):
    from scipy import ndimage

    mask = torch.from_numpy((RNG.random((2, 30, 40)) > 0.8).astype(np.float32) * RNG.random((2, 30, 40)).astype(np.float32))
    got = run_node(masks.GrowMask, mask=mask, expand=expand, tapered_corners=tapered)["mask"]
    c = 0 if tapered else 1
    footprint = np.array([[c, 1, c], [1, 1, 1], [c, 1, c]])
    for plane, result in zip(mask.numpy(), got.numpy()):
        for _ in range(abs(expand)):
            plane = (ndimage.grey_dilation if expand > 0 else ndimage.grey_erosion)(plane, footprint=footprint)
        assert np.array_equal(plane, result)


def test_feather_mask_ramps_each_side_from_one_step_at_the_edge_to_full():
    ones = torch.ones(1, 1, 6)
    got = run_node(masks.FeatherMask, mask=ones, left=3, top=0, right=2, bottom=0)["mask"]
    assert got[0, 0].tolist() == pytest.approx([1 / 3, 2 / 3, 1, 1, 1, 0.5])
    square = torch.ones(1, 4, 4)
    got = run_node(masks.FeatherMask, mask=square, left=2, top=4, right=0, bottom=0)["mask"][0]
    assert torch.equal(got, torch.tensor([[0.125, 0.25, 0.25, 0.25], [0.25, 0.5, 0.5, 0.5],
                                          [0.375, 0.75, 0.75, 0.75], [0.5, 1.0, 1.0, 1.0]]))
    too_wide = run_node(masks.FeatherMask, mask=torch.ones(1, 1, 2), left=10, top=0, right=0, bottom=0)["mask"]
    assert too_wide[0, 0].tolist() == pytest.approx([0.5, 1.0])  # cut to the mask's 2 columns: 1/2 then 1


def gaussian(radius: int, sigma: float) -> np.ndarray:
    weights = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma * sigma))
    return weights / weights.sum()


def test_blur_mask_spreads_a_dot_by_the_gaussian_kernel():
    got = run_node(masks.BlurMask, mask=dot(size=11, at=(5, 5)), blur_radius=3, sigma=1.5)["mask"][0]
    kernel = gaussian(3, 1.5)
    expected = np.zeros((11, 11))
    expected[2:9, 2:9] = np.outer(kernel, kernel)
    assert np.abs(got.numpy() - expected).max() < 1e-6
    auto = run_node(masks.BlurMask, mask=dot(size=11, at=(5, 5)), blur_radius=3, sigma=0.0)["mask"][0]
    kernel = gaussian(3, 0.3 * (3 - 1) + 0.8)  # OpenCV's sigma for a 7-pixel kernel: 1.4
    assert np.abs(auto[5, 2:9].numpy() - kernel * kernel[3]).max() < 1e-6


def test_blur_mask_treats_the_border_as_going_on_and_radius_0_is_no_blur():
    full = torch.ones(2, 6, 9)
    assert torch.allclose(run_node(masks.BlurMask, mask=full, blur_radius=4, sigma=2.0)["mask"], full, atol=1e-6)
    edge = torch.zeros(1, 1, 8)
    edge[0, 0, 0] = 1.0
    got = run_node(masks.BlurMask, mask=edge, blur_radius=2, sigma=1.0)["mask"][0, 0]
    kernel = gaussian(2, 1.0)
    # column 0 sees itself three times (the replicated border: columns -2, -1 and 0), column 1 twice
    assert got[0].item() == pytest.approx(kernel[:3].sum(), abs=1e-6)
    assert got[1].item() == pytest.approx(kernel[:2].sum(), abs=1e-6)
    mask = torch.rand(1, 5, 5)
    assert run_node(masks.BlurMask, mask=mask, blur_radius=0, sigma=3.0)["mask"] is mask


@pytest.mark.parametrize(("operation", "expected"), [
    ("multiply", [[0.6, 0.0, 0.5], [0.4, 0.6, 0.5]]),
    ("add", [[0.6, 0.2, 1.0], [0.4, 1.0, 1.0]]),
    ("subtract", [[0.6, 0.0, 0.0], [0.4, 0.0, 0.5]]),
    ("and", [[0.6, 0.0, 0.0], [0.4, 1.0, 0.0]]),
    ("or", [[0.6, 0.0, 1.0], [0.4, 1.0, 1.0]]),
    ("xor", [[0.6, 0.0, 1.0], [0.4, 0.0, 1.0]]),
])
def test_mask_composite_operations_by_hand(operation, expected):
    # The source at x=1 meets the destination's columns 1-2 ([[0.0, 0.5], [0.6, 1.0]]); the first
    # column stays. and/or/xor round first: the destination's 0.5 to 0 (half to even), 0.6 to 1.
    destination = torch.tensor([[[0.6, 0.0, 0.5], [0.4, 0.6, 1.0]]])
    source = torch.tensor([[[0.2, 1.0], [1.0, 0.5]]])
    got = run_node(masks.MaskComposite, destination=destination, source=source, x=1, y=0, operation=operation)["mask"]
    assert got.shape == (1, 2, 3) and torch.allclose(got[0], torch.tensor(expected), atol=1e-7)


def test_mask_composite_clamps_broadcasts_a_single_mask_and_refuses_other_batches():
    destination = torch.full((3, 2, 2), 0.5)
    source = torch.full((1, 4, 4), 0.75)
    got = run_node(masks.MaskComposite, destination=destination, source=source, x=0, y=0, operation="add")["mask"]
    assert got.shape == (3, 2, 2) and (got == 1.0).all()
    got = run_node(masks.MaskComposite, destination=destination[:1], source=source.expand(2, -1, -1), x=1, y=1,
                   operation="subtract")["mask"]
    assert got.shape == (2, 2, 2) and got[:, 1, 1].tolist() == [0.0, 0.0] and got[:, 0, 0].tolist() == [0.5, 0.5]
    with pytest.raises(ValueError, match=r"^the batches do not fit together \('destination' has 3, 'source' has 2\): "
                                         r"each must hold 1 item or 3$"):
        run_node(masks.MaskComposite, destination=destination, source=source.expand(2, -1, -1), x=0, y=0, operation="or")


# ---- through the executor ----------------------------------------------------------------------------

@pytest.fixture
def folders(tmp_path) -> Folders:
    (tmp_path / "input").mkdir()
    return Folders(models=tmp_path / "models", inputs=tmp_path / "input", outputs=tmp_path / "output",
                   temp=tmp_path / "temp")


@pytest.fixture
def executor(folders) -> Executor:
    return Executor(registry, OutputCache(1 << 28), services=Services(folders=folders), events=EventBus())


def link(node: str, output: str) -> dict:
    return {"node": node, "output": output}


def test_outpaint_pad_and_composite_through_the_executor_from_a_loaded_png(executor, folders):
    pixels = RNG.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folders.inputs / "photo.png")
    workflow = {"format": FORMAT, "nodes": {
        "load": {"type": "load_image", "inputs": {"image": "photo.png"}},
        "pad": {"type": "image_pad", "inputs": {"image": link("load", "image"), "left": 8, "top": 0, "right": 16,
                                                "bottom": 8, "feathering": 4}},
        "flip": {"type": "image_flip", "inputs": {"image": link("pad", "image"), "flip_method": "y-axis: horizontally"}},
        "back": {"type": "image_composite_masked", "inputs": {
            "destination": link("pad", "image"), "source": link("flip", "image"), "mask": link("pad", "mask")}},
        "save": {"type": "save_image", "inputs": {"images": link("back", "image"), "filename_prefix": "outpaint"}},
    }}
    result = executor.run(workflow)
    assert result.ok, result.errors
    saved = np.asarray(Image.open(folders.outputs / "outpaint_00001_.png"))
    assert saved.shape == (24, 48, 3)
    expected_mask = comfyui_pad_mask(16, 24, 8, 0, 16, 8, 4)
    canvas = np.full((24, 48, 3), 0.5, np.float32)
    canvas[:16, 8:32] = pixels / 255
    weight = expected_mask[..., None]
    expected = canvas[:, ::-1] * weight + canvas * (1 - weight)
    assert np.abs(saved.astype(np.float32) - np.round(expected * 255)).max() <= 1
    assert np.array_equal(saved[4:12, 12:28], pixels[4:12, 4:20])  # unmasked: the picture as it was


def test_transparent_pixels_become_the_mask_that_mask_nodes_grow_and_show(executor, folders):
    rgba = np.zeros((12, 12, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 255
    rgba[5:7, 5:7, 3] = 0  # a transparent 2x2 hole: the area to repaint
    Image.fromarray(rgba).save(folders.inputs / "holed.png")
    workflow = {"format": FORMAT, "nodes": {
        "load": {"type": "load_image", "inputs": {"image": "holed.png"}},
        "grow": {"type": "grow_mask", "inputs": {"mask": link("load", "mask"), "expand": 2, "tapered_corners": False}},
        "show": {"type": "mask_to_image", "inputs": {"mask": link("grow", "mask")}},
        "save": {"type": "save_image", "inputs": {"images": link("show", "image"), "filename_prefix": "mask"}},
    }}
    result = executor.run(workflow)
    assert result.ok, result.errors
    saved = np.asarray(Image.open(folders.outputs / "mask_00001_.png"))[..., 0]
    expected = np.zeros((12, 12), np.uint8)
    expected[3:9, 3:9] = 255
    assert np.array_equal(saved, expected)


def test_validation_and_run_errors_name_the_node_and_the_input(executor, folders):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folders.inputs / "photo.png")

    def scaled(**inputs) -> dict:
        return {"format": FORMAT, "nodes": {
            "load": {"type": "load_image", "inputs": {"image": "photo.png"}},
            "scale": {"type": "image_scale", "inputs": {"image": link("load", "image"), **inputs}},
            "save": {"type": "save_image", "inputs": {"images": link("scale", "image")}},
        }}

    with pytest.raises(WorkflowInvalid) as caught:
        executor.validate(scaled(width=100000, height=100000))
    assert {(i.node, i.input, i.code) for i in caught.value.issues} == {("scale", "width", "out_of_bounds"),
                                                                       ("scale", "height", "out_of_bounds")}
    assert any(i.message.startswith("node 'scale' (image_scale) input 'width' must be") for i in caught.value.issues)
    with pytest.raises(WorkflowInvalid) as caught:
        executor.validate(scaled(width=4096, height=3000))
    [issue] = caught.value.issues
    assert (issue.input, issue.code) == ("width", "over_limit")
    assert "4096x3000 is 12,288,000 pixels, over the limit of 4,194,304 (--max-pixels)" in issue.message
    with pytest.raises(WorkflowInvalid) as caught:
        executor.validate(scaled(upscale_method="cubic"))
    [issue] = caught.value.issues
    assert (issue.input, issue.code) == ("upscale_method", "not_in_choices")

    workflow = scaled(width=4096, height=0)  # 8x8 -> 4096x4096: known only when the image is there
    result = executor.run(workflow)
    assert not result.ok and result.skipped == ["save"]
    [failure] = result.errors
    assert (failure.node_id, failure.node_type, failure.error_type) == ("scale", "image_scale", "OverLimit")
    assert str(failure) == ("node 'scale' (image_scale) failed: OverLimit: the scaled image: 4096x4096 is 16,777,216 "
                            "pixels, over the limit of 4,194,304 (--max-pixels)")

    crop = {"format": FORMAT, "nodes": {
        "load": {"type": "load_image", "inputs": {"image": "photo.png"}},
        "crop": {"type": "image_crop", "inputs": {"image": link("load", "image"), "x": 8, "y": 0, "width": 4, "height": 4}},
    }}
    result = executor.run(crop, outputs=["crop"])
    [failure] = result.errors
    assert str(failure) == "node 'crop' (image_crop) failed: ValueError: input 'x' is 8, outside the 8x8 image (at most 7)"


def test_every_image_and_mask_node_is_registered_in_its_category_with_a_description():
    image_nodes = ["image_scale", "image_scale_by", "image_scale_to_total_pixels", "image_crop", "image_flip", "image_rotate",
                   "image_pad", "image_composite_masked", "image_blend", "image_batch"]
    mask_nodes = ["image_to_mask", "mask_from_color", "solid_mask", "mask_to_image", "invert_mask", "crop_mask", "grow_mask",
                  "feather_mask", "blur_mask", "threshold_mask", "mask_composite"]
    for names, category in ((image_nodes, "image"), (mask_nodes, "mask")):
        for name in names:
            info = registry.get(name)
            assert info is not None and info.category == category, name
            assert len(info.description) > 60 and all(i.description for i in info.inputs.values()), name
    pad = registry.get("image_pad")
    assert list(pad.inputs) == ["image", "left", "top", "right", "bottom", "feathering"]
    assert [(o.name, o.port) for o in pad.outputs.values()] == [("image", "IMAGE"), ("mask", "MASK")]
    composite = registry.get("image_composite_masked")
    assert list(composite.inputs) == ["destination", "source", "x", "y", "resize_source", "mask"]
    assert not composite.inputs["mask"].required and composite.inputs["mask"].port == "MASK"
