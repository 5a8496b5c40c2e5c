"""MosaicFusion's labels as pure functions: instances per region and what each filter dropped."""

import numpy as np
import pytest

from synthscene.label.mosaic import mosaic_labels, region_instances
from synthscene.methods.mosaic import MosaicLayout
from synthscene.spec import MosaicSpec


def _scene():
    """Two 16x16 regions side by side; region 0 holds a big square and a speck over uneven low
    attention, region 1 attends to nothing (flat zero: its whole cell passes Otsu and is too large)."""
    layout = MosaicLayout(canvas=(16, 32), cells=((0, 16, 0, 16), (0, 16, 16, 32)), windows=((0, 0), (0, 16)),
                          window=(16, 16), vae_factor=1)
    image = np.full((16, 32, 3), 30, np.uint8)
    image[3:11, 3:11] = (220, 40, 40)
    image[14, 14] = (220, 40, 40)
    rng = np.random.default_rng(0)  # low, uneven background attention; Otsu splits it from the objects
    objectness = [rng.uniform(0.0, 0.2, (16, 16)).astype(np.float32), np.zeros((16, 16), np.float32)]
    objectness[0][3:11, 3:11] = 1.0
    objectness[0][14, 14] = 1.0
    return layout, image, objectness


def test_regions_give_instances_and_count_what_they_drop():
    layout, image, objectness = _scene()
    params = MosaicSpec(area_range=(0.02, 0.95), grabcut_iterations=0)
    dropped = {}
    regions = region_instances(image, objectness, layout, params, dropped)
    (square,) = regions[0]
    assert square.mask[3:11, 3:11].all() and 64 <= square.mask.sum() <= 66 and square.score > 0.9
    assert square.attention_agreement > 0.9 and np.isnan(square.class_gain)  # no check asked
    assert regions[1] == [] and dropped["large"] == 1  # region 1: one component, its whole cell
    assert dropped["small"] >= 1 and dropped["strict_regions"] == 0  # the speck (and stray noise pixels)
    labels, kept = mosaic_labels(image, objectness, layout, (4, 1), params)
    assert kept == [True, False]
    assert labels.instances.class_id.tolist() == [4] and labels.dropped == dropped
    assert (labels.semantic[3:11, 3:11] == 5).all() and (labels.semantic[:, 16:] == 255).all()


def test_strict_mode_drops_the_image_and_counts_the_region():
    layout, image, objectness = _scene()
    labels, kept = mosaic_labels(image, objectness, layout, (4, 1),
                                 MosaicSpec(area_range=(0.02, 0.95), grabcut_iterations=0, strict=True))
    assert labels is None and kept == [True, False]
    dropped = {}
    region_instances(image, objectness, layout, MosaicSpec(strict=True, grabcut_iterations=0), dropped)
    assert dropped["strict_regions"] == 1


def test_an_instance_its_class_does_not_explain_is_not_drawn():
    layout, image, objectness = _scene()
    image[3:11, 19:27] = (40, 200, 40)  # region 1 now holds an object too
    objectness[1] = objectness[0].copy()  # window coordinates: its square is at columns 19-26 of the canvas
    errors = [np.ones((2, 16, 16), np.float32) for _ in range(2)]
    errors[0][0][3:11, 3:11] = 0.5  # region 0's prompt explains its square far better with the class: gain 0.5
    errors[1][0][3:11, 3:11] = 0.98  # region 1's barely: gain 0.02
    params = MosaicSpec(area_range=(0.02, 0.95), grabcut_iterations=0, min_class_gain=0.1)
    dropped = {}
    regions = region_instances(image, objectness, layout, params, dropped, errors)
    assert len(regions[0]) == 1 and regions[1] == [] and dropped["not_drawn"] == 1
    assert len(region_instances(image, objectness, layout, params.model_copy(update={"min_class_gain": 0.01}),
                                {}, errors)[1]) == 1
    labels, kept = mosaic_labels(image, objectness, layout, (4, 1), params, class_errors=errors)
    assert kept == [True, False] and labels.instances.class_id.tolist() == [4]
    assert labels.instances.data["class_gain"][0] == pytest.approx(0.5, abs=0.02)  # stored per instance
    assert (labels.semantic[:, 16:] == 255).all()  # a region that gave nothing is unknown, not background


def test_an_instance_a_rival_word_in_its_place_explains_as_well_is_not_drawn():
    layout, image, objectness = _scene()
    # per region [prompt, prompt without its class, prompt with a rival word in its place]
    errors = [np.ones((3, 16, 16), np.float32) for _ in range(2)]
    errors[0][0][3:11, 3:11] = 0.5  # its class explains its square far better than no class (gain 0.5)...
    errors[0][2][3:11, 3:11] = 0.505  # ...but the rival's word in its place explains it nearly as well
    params = MosaicSpec(area_range=(0.02, 0.95), grabcut_iterations=0, min_class_gain=0.1, min_context_margin=0.02)
    dropped = {}
    assert region_instances(image, objectness, layout, params, dropped, errors)[0] == []
    assert dropped["not_drawn"] == 1
    errors[0][2][3:11, 3:11] = 0.8  # the rival explains it worse: drawn, and the margin is stored
    labels, kept = mosaic_labels(image, objectness, layout, (4, 1), params, class_errors=errors)
    assert kept[0] and labels.instances.data["context_margin"][0] == pytest.approx(1 - 0.5 / 0.8, abs=0.02)
    unasked = params.model_copy(update={"min_context_margin": None})
    errors[0][2][3:11, 3:11] = 0.505
    assert len(region_instances(image, objectness, layout, unasked, {}, errors)[0]) == 1


def test_small_cells_are_cut_upscaled_when_asked():
    """``grabcut_min_side`` reaches the cut: the region's mask is GrabCut's on the cell upscaled."""
    import cv2

    from synthscene.label.refine import grabcut_foreground

    layout = MosaicLayout(canvas=(16, 32), cells=((0, 16, 0, 16), (0, 16, 16, 32)), windows=((0, 0), (0, 16)),
                          window=(16, 16), vae_factor=1)
    big = np.random.default_rng(0).uniform(90, 160, (64, 128, 3)).astype(np.uint8)  # a star drawn at 4x
    cv2.circle(big, (32, 32), 12, (150, 40, 200), -1)
    for k in range(5):
        angle = k * 2 * np.pi / 5
        cv2.line(big, (32, 32), (int(32 + 26 * np.cos(angle)), int(32 + 26 * np.sin(angle))), (150, 40, 200), 5)
    image = cv2.resize(big, (32, 16), interpolation=cv2.INTER_AREA)  # soft 1-2 px edges, as a generation's
    yy, xx = np.mgrid[:16, :16]
    objectness = [np.clip(1.2 - np.hypot(yy - 7.5, xx - 7.5) / 6, 0, 1).astype(np.float32),
                  np.zeros((16, 16), np.float32)]
    masks = {}
    for min_side in (0, 64):
        params = MosaicSpec(area_range=(0.02, 0.95), grabcut_min_side=min_side, matting_colours=0)
        (instance,) = region_instances(image, objectness, layout, params)[0]
        masks[min_side] = instance.mask[:, :16]
    assert not np.array_equal(masks[0], masks[64])
    threshold = cv2.threshold((objectness[0] * 255).astype(np.uint8), 0, 255,
                              cv2.THRESH_BINARY + cv2.THRESH_OTSU)[0] / 255.0
    upscaled = grabcut_foreground(image[:, :16], objectness[0], threshold, min(0.4, threshold), max(0.95, threshold),
                                  3, min_side=64)
    assert np.array_equal(masks[64], upscaled)


def test_the_colour_matte_redecides_each_cells_edges():
    """``matting_colours`` reaches the cut: a ring the attention covers whole loses its hole
    (refine.matte_regions on the cell), and 0 keeps the cut as it was."""
    import cv2

    from synthscene.label.refine import matte_regions

    layout = MosaicLayout(canvas=(32, 64), cells=((0, 32, 0, 32), (0, 32, 32, 64)), windows=((0, 0), (0, 32)),
                          window=(32, 32), vae_factor=1)
    image = np.full((32, 64, 3), 200, np.uint8)
    cv2.circle(image, (16, 16), 9, (240, 130, 20), 4)  # an orange ring, grey inside and out
    yy, xx = np.mgrid[:32, :32]
    objectness = [np.clip((14 - np.hypot(yy - 16, xx - 16)) / 4, 0, 1).astype(np.float32),
                  np.zeros((32, 32), np.float32)]
    plain = MosaicSpec(area_range=(0.02, 0.95), grabcut_iterations=0, matting_colours=0)
    (disc,) = region_instances(image, objectness, layout, plain)[0]
    assert disc.mask[16, 16]  # the threshold alone keeps the hole
    (ring,) = region_instances(image, objectness, layout, plain.model_copy(update={"matting_colours": 2}))[0]
    assert not ring.mask[16, 16] and ring.mask[16, 7]  # hole out, the ring itself in
    threshold = cv2.threshold((objectness[0] * 255).astype(np.uint8), 0, 255,
                              cv2.THRESH_BINARY + cv2.THRESH_OTSU)[0] / 255.0
    assert np.array_equal(ring.mask[:, :32], matte_regions(image[:, :32], objectness[0] >= threshold, 2))


def test_grabcut_bands_out_of_order_are_refused():
    with pytest.raises(ValueError, match="grabcut_background_below <= grabcut_foreground_above"):
        MosaicSpec(grabcut_background_below=0.9, grabcut_foreground_above=0.5)
