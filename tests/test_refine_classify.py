"""GrabCut refinement and the diffusion classifier used by the ``ours`` recipe."""

import cv2
import numpy as np
import pytest
import torch

from synthscene.label.attention_maps import objectness_map
from synthscene.label.classify import PresenceErrors, assign_segments, class_evidence, denoising_errors
from synthscene.label.refine import blend_alpha, colour_segments, grabcut_foreground, matte_regions
from synthscene.models.families import family_of
from synthscene.world.classes import CLASS_NAMES
from synthscene.world.oracle import oracle_semantic
from synthscene.world.render import render_scene


def _disk_scene(size=48):
    rng = np.random.default_rng(0)
    image = (120 + rng.integers(-20, 20, (size, size, 3))).astype(np.uint8)  # textured grey
    truth = np.zeros((size, size), np.uint8)
    cv2.circle(truth, (20, 24), 9, 1, -1)
    image[truth == 1] = (220, 30, 30)
    return image, truth.astype(bool)


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_grabcut_snaps_a_coarse_map_to_the_object_edges():
    image, truth = _disk_scene()
    # a blurred, shifted blob, as coarse attention looks after upsampling
    coarse = cv2.GaussianBlur(np.roll(truth, 1, axis=1).astype(np.float32), (0, 0), 3)
    coarse = coarse / coarse.max()
    refined = grabcut_foreground(image, coarse)
    assert _iou(refined, truth) > 0.9 > _iou(coarse >= 0.5, truth)


def test_grabcut_on_small_images_cuts_upscaled_and_returns_the_image_size():
    rng = np.random.default_rng(0)
    big = (120 + rng.integers(-20, 20, (96, 96, 3))).astype(np.uint8)
    ring = np.zeros((96, 96), np.uint8)
    cv2.circle(ring, (40, 50), 22, 1, -1)
    cv2.circle(ring, (40, 50), 10, 0, -1)
    big[ring == 1] = (220, 120, 30)
    image = cv2.resize(big, (32, 32), interpolation=cv2.INTER_AREA)  # edges become colour blends
    truth = cv2.resize(ring.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA) >= 0.5
    coarse = cv2.GaussianBlur(truth.astype(np.float32), (0, 0), 2)
    coarse /= coarse.max()
    upscaled = grabcut_foreground(image, coarse, min_side=96)
    assert upscaled.shape == truth.shape and _iou(upscaled, truth) > 0.8 > _iou(coarse >= 0.5, truth)
    assert not np.array_equal(upscaled, grabcut_foreground(image, coarse))
    assert np.array_equal(grabcut_foreground(image, coarse, min_side=32), grabcut_foreground(image, coarse))


def test_grabcut_does_not_depend_on_what_ran_before():
    # cluttered images where GrabCut's k-means start matters (6 of 30 differed before the fix)
    for k in range(30):
        rng = np.random.default_rng(k)
        image = cv2.resize(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), (32, 32), interpolation=cv2.INTER_CUBIC)
        image = np.clip(image.astype(int) + rng.integers(-30, 30, image.shape), 0, 255).astype(np.uint8)
        objectness = cv2.resize(rng.random((4, 4)).astype(np.float32), (32, 32), interpolation=cv2.INTER_CUBIC)
        results = set()
        for state in range(3):
            cv2.setRNGSeed(state)  # stands for however many cuts another sample made first
            results.add(grabcut_foreground(image, objectness.clip(0, 1)).tobytes())
        assert len(results) == 1, f"image {k}"


def test_grabcut_without_both_sides_is_the_threshold_and_bad_input_errors():
    image, _ = _disk_scene()
    flat = np.full(image.shape[:2], 0.7, np.float32)
    assert grabcut_foreground(image, flat).all()
    assert not grabcut_foreground(image, np.zeros(image.shape[:2], np.float32)).any()
    with pytest.raises(ValueError, match="same size"):
        grabcut_foreground(image, flat[:10])
    with pytest.raises(ValueError, match="background_below"):
        grabcut_foreground(image, flat, threshold=0.3, background_below=0.4)


def _blended(shapes, size=32, factor=4):
    """A small image whose object edges are colour blends: drawn at ``factor`` x, area-averaged down.
    shapes: [(draw(mask), rgb)]; returns the image and each shape's mask at the small size."""
    rng = np.random.default_rng(0)
    big = (np.array([150, 145, 160]) + rng.integers(-12, 12, (size * factor, size * factor, 3))).astype(np.uint8)
    masks = []
    for draw, colour in shapes:
        mask = np.zeros(big.shape[:2], np.uint8)
        draw(mask)
        big[mask == 1] = colour
        masks.append(cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA) >= 0.5)
    return cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA), masks


def test_matte_moves_a_rounded_cut_onto_the_colour_edge_and_empties_holes():
    def ring(mask):
        cv2.circle(mask, (60, 64), 40, 1, -1)
        cv2.circle(mask, (60, 64), 18, 0, -1)

    image, (truth,) = _blended([(ring, (220, 120, 30))])
    filled = cv2.dilate(cv2.resize(cv2.circle(np.zeros((128, 128), np.uint8), (60, 64), 40, 1, -1), (32, 32),
                                   interpolation=cv2.INTER_AREA), np.ones((3, 3), np.uint8)).astype(bool)
    matted = matte_regions(image, filled)
    assert _iou(matted, truth) > 0.9 > 0.7 > _iou(filled, truth)
    assert not matted[16, 15]  # the ring's inside is background again
    assert np.array_equal(matte_regions(image, np.zeros_like(truth)), np.zeros_like(truth))
    with pytest.raises(ValueError, match="differ in size"):
        matte_regions(image, truth[:10])


def test_blend_alpha_is_the_object_share_of_edge_pixels():
    def square(mask):
        cv2.rectangle(mask, (32, 32), (81, 81), 1, -1)  # 50 px at 4x: edges at 8 and 20.5 px

    image, (truth,) = _blended([(square, (220, 40, 40))])
    start = cv2.resize(truth.astype(np.uint8), (32, 32)).astype(bool)
    alpha = blend_alpha(image, start)
    assert np.array_equal(alpha >= 0.5, matte_regions(image, start))
    assert alpha[14, 14] == pytest.approx(1.0, abs=0.15) and abs(alpha[2, 2]) < 0.15  # inside; far outside
    # column 20 is half covered (x in [80, 82) of [80, 84) at 4x): a near-even blend
    assert 0.3 < alpha[14, 20] < 0.7
    assert alpha[14, 19] > 0.85 and alpha[14, 21] < 0.15


def test_colour_segments_split_touching_objects_of_different_colours_only():
    def left(mask):
        cv2.rectangle(mask, (20, 40), (63, 90), 1, -1)

    def right(mask):
        cv2.rectangle(mask, (64, 40), (100, 90), 1, -1)

    two, (a, b) = _blended([(left, (220, 30, 30)), (right, (40, 60, 220))])
    segments = colour_segments(two, a | b)
    assert segments.max() == 2
    assert len(np.unique(segments[a & ~cv2.dilate(b.astype(np.uint8), np.ones((3, 3))).astype(bool)])) == 1
    same, (c, d) = _blended([(left, (220, 30, 30)), (right, (225, 35, 25))])
    assert colour_segments(same, c | d).max() == 1
    assert colour_segments(two, a | b, split_distance=0).max() == 1


def test_look_alike_segments_are_classified_together():
    image = np.full((8, 8, 3), 128, np.uint8)
    segments = np.zeros((8, 8), np.int32)
    segments[1:4, 1:4], segments[5:7, 5:7], segments[1:3, 5:7] = 1, 2, 3
    image[segments == 1] = image[segments == 2] = (200, 20, 20)
    image[segments == 3] = (20, 20, 200)
    errors = np.ones((2, 8, 8), np.float32)
    errors[1][segments == 1] = 0.5  # the big red segment looks like class 1
    errors[0][segments == 2] = 0.9  # the small red one alone would say class 0
    errors[1][segments == 3] = 2.0  # the blue one is class 0
    assert assign_segments(segments, errors, image) == {1: 1, 2: 1, 3: 0}
    assert assign_segments(segments, errors, image, group_distance=0) == {1: 1, 2: 0, 3: 0}
    assert assign_segments(segments, None, image) == {1: 0, 2: 0, 3: 0}


def test_a_class_whose_word_changes_nothing_was_not_drawn():
    image = np.full((8, 8, 3), 128, np.uint8)
    segments = np.zeros((8, 8), np.int32)
    segments[1:4, 1:4], segments[5:7, 5:7], segments[1:3, 5:7] = 1, 2, 3
    image[segments == 1], image[segments == 2], image[segments == 3] = (200, 20, 20), (20, 20, 200), (20, 200, 20)
    errors = np.ones((2, 8, 8), np.float32)
    errors[0][segments == 1] = 0.5  # segment 1 is class 0, segments 2 and 3 class 1
    errors[0][segments > 1] = 1.5
    with_prompt = np.ones((8, 8), np.float32)
    without = np.ones((2, 8, 8), np.float32)
    without[0][segments == 1] = 2.0  # cutting class 0 out of the prompt doubles the error on its pixels
    without[1][segments == 2] = 1.06  # cutting class 1 out hardly matters on segment 2...
    without[1][segments == 3] = 1.02  # ...or on 3: over both (gain ~0.04) it was not drawn
    presence = PresenceErrors(with_prompt, without)
    assert assign_segments(segments, errors, image, 0, presence, min_gain=0.1) == {1: 0, 2: None, 3: None}
    # asked once per class over all its pixels, not per segment: both go, or both stay
    assert assign_segments(segments, errors, image, 0, presence, min_gain=0.03) == {1: 0, 2: 1, 3: 1}
    # one named class: the check alone decides
    assert assign_segments(segments, errors[1:], image, 0, PresenceErrors(with_prompt, without[1:]), min_gain=0.1) == \
        {1: None, 2: None, 3: None}


def _two_segments():
    """An 8x8 image with a red segment 1 and a blue segment 2, and unit errors for two classes."""
    image = np.full((8, 8, 3), 128, np.uint8)
    segments = np.zeros((8, 8), np.int32)
    segments[1:4, 1:4], segments[5:7, 5:7] = 1, 2
    image[segments == 1], image[segments == 2] = (200, 20, 20), (20, 20, 200)
    errors = np.ones((2, 8, 8), np.float32)
    return image, segments, errors


def test_a_class_that_loses_to_a_rival_word_was_not_drawn():
    image, segments, errors = _two_segments()
    errors[0][segments == 1], errors[1][segments == 2] = 0.5, 0.8  # each segment is its class's
    errors[0][segments == 2], errors[1][segments == 1] = 1.5, 1.5
    with_prompt = np.ones((8, 8), np.float32)
    without = np.full((2, 8, 8), 2.0, np.float32)  # both words pass the leave-one-out check
    rivals = np.ones((1, 8, 8), np.float32)
    rivals[0][segments == 2] = 0.6  # an unnamed class explains segment 2 better than its word
    empty = np.ones((8, 8), np.float32)
    presence = PresenceErrors(with_prompt, without, rivals, empty)
    assert assign_segments(segments, errors, image, 0, presence, min_gain=0.05, min_rival_margin=0.0) == \
        {1: 0, 2: None}
    # a margin below zero lets a word lose narrowly; no margin: the rivals are not asked
    assert assign_segments(segments, errors, image, 0, presence, 0.05, min_rival_margin=-0.5) == {1: 0, 2: 1}
    assert assign_segments(segments, errors, image, 0, presence, 0.05, min_rival_margin=None) == {1: 0, 2: 1}
    # a rival whose own word does not beat the empty prompt (a name the model cannot draw) is no rival
    assert assign_segments(segments, errors, image, 0, PresenceErrors(with_prompt, without, rivals, np.full((8, 8), 0.61)), 0.05,
                           min_rival_margin=0.0, rival_word_gain=0.04) == {1: 0, 2: 1}


def test_objectness_skips_tokens_before_the_first_class_word():
    maps = torch.zeros(77, 4, 4)
    maps[0] = 1.0  # BOS everywhere
    maps[5, 1, 1] = 0.8  # the class word
    maps[9:, 2, 2] = 0.01  # padding, on another pixel
    objectness = objectness_map({(4, 4): maps}, list(range(5, maps.shape[0])))
    assert objectness[1, 1] == 1.0 and 0 < objectness[2, 2] < 1.0 and objectness[0, 0] == 0.0


@pytest.fixture(scope="module")
def embedded():
    from synthscene.models.load import load_pipeline

    return load_pipeline("embedded")


def test_diffusion_classifier_names_the_classes_of_a_world_image(embedded):
    # a real shapes-world image with two classes: each region's error is lowest for its class
    for index in range(40):
        sample = render_scene(seed=7, index=index, size=32)
        present = sorted(set(sample.instances.class_id.tolist()))
        if len(present) == 2:
            break
    truth = oracle_semantic(sample.image)
    image = torch.tensor(sample.image).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        latents = embedded.vae.encode(image).latent_dist.mean[0] * embedded.vae.config.scaling_factor
    names = [CLASS_NAMES[c] for c in present]
    family = family_of(embedded)
    conditioning = family.encode_texts(names)
    errors = denoising_errors(family, latents, conditioning, (850, 950), 3, torch.Generator().manual_seed(0))
    assert errors.shape == (2, 32, 32)
    for k, class_id in enumerate(present):
        region = torch.tensor(truth == class_id + 1)
        assert errors[k][region].mean() < errors[1 - k][region].mean(), names
    again = denoising_errors(family, latents, conditioning, (850, 950), 3, torch.Generator().manual_seed(0))
    assert torch.equal(errors, again)


def test_diffusion_classifier_rejects_bad_timesteps(embedded):
    latents = torch.zeros(4, 32, 32)
    family = family_of(embedded)
    with pytest.raises(ValueError, match="timesteps"):
        denoising_errors(family, latents, family.encode_texts(["ball", "leaf"]), (1000,), 1, torch.Generator())


def test_a_class_whose_word_alone_explains_no_more_than_no_text_was_not_drawn():
    image, segments, errors = _two_segments()
    errors[0][segments == 1], errors[1][segments == 2] = 0.5, 0.97  # class 1's word barely beats no text
    errors[0][segments == 2], errors[1][segments == 1] = 1.5, 1.5
    with_prompt = np.ones((8, 8), np.float32)
    without = np.full((2, 8, 8), 2.0, np.float32)  # both words pass the leave-one-out check
    presence = PresenceErrors(with_prompt, without, np.zeros((0, 8, 8), np.float32), np.ones((8, 8), np.float32))
    choice = assign_segments(segments, errors, image, 0)
    evidence = class_evidence(segments, choice, errors, presence)
    assert evidence[0].word_gain == pytest.approx(0.5) and evidence[1].word_gain == pytest.approx(0.03)
    assert evidence[0].rival_margin is None  # no rival rows: nothing to lose to
    assert evidence[1].gain == pytest.approx(0.5) and evidence[1].caption_gain == pytest.approx(0.0)
    assert assign_segments(segments, errors, image, 0, presence, 0.05, min_word_gain=0.05) == {1: 0, 2: None}
    assert assign_segments(segments, errors, image, 0, presence, 0.05, min_word_gain=0.02) == {1: 0, 2: 1}
    assert assign_segments(segments, errors, image, 0, presence, 0.05) == {1: 0, 2: 1}  # not asked


def test_a_class_whose_word_a_rival_word_replaces_as_well_was_not_drawn():
    # "a photo of a bottle and a ring": the stray shape the model drew for "bottle" is
    # explained as well by "box" in its place; the ring is explained by its own word only
    image, segments, errors = _two_segments()
    errors[0][segments == 1], errors[1][segments == 2] = 0.5, 0.5
    errors[0][segments == 2], errors[1][segments == 1] = 1.5, 1.5
    with_prompt = np.ones((8, 8), np.float32)
    without = np.full((2, 8, 8), 2.0, np.float32)  # both words pass the leave-one-out check
    in_context = np.full((2, 2, 8, 8), 1.5, np.float32)  # [named class, rival, H, W]
    in_context[0, 1][segments == 1] = 1.01  # rival 1 in the first class's place: 1 % worse only
    presence = PresenceErrors(with_prompt, without, in_context=in_context)
    choice = assign_segments(segments, errors, image, 0)
    evidence = class_evidence(segments, choice, errors, presence)
    assert evidence[0].context_margin == pytest.approx(1 - 1 / 1.01, abs=1e-6)
    assert evidence[1].context_margin == pytest.approx(1 - 1 / 1.5, abs=1e-6)
    assert evidence[0].rival_margin is None and evidence[0].word_gain is None  # rows not computed
    assert assign_segments(segments, errors, image, 0, presence, 0.05, min_context_margin=0.02) == {1: None, 2: 1}
    assert assign_segments(segments, errors, image, 0, presence, 0.05, min_context_margin=-0.05) == {1: 0, 2: 1}
    assert assign_segments(segments, errors, image, 0, presence, 0.05) == {1: 0, 2: 1}  # not asked
    # no rival (the prompt named every class of the spec): nothing to lose to
    alone = PresenceErrors(with_prompt, without, in_context=np.zeros((2, 0, 8, 8), np.float32))
    assert assign_segments(segments, errors, image, 0, alone, 0.05, min_context_margin=0.02) == {1: 0, 2: 1}
