"""GrabCut refinement and the diffusion classifier used by the ``ours`` recipe."""

import cv2
import numpy as np
import pytest
import torch

from synthscene.capture import encode_for_store
from synthscene.label.attention_maps import objectness_map
from synthscene.label.classify import denoising_errors
from synthscene.label.refine import grabcut_foreground
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


def test_objectness_skips_tokens_before_the_first_class_word():
    maps = torch.zeros(77, 4, 4)
    maps[0] = 1.0  # BOS everywhere
    maps[5, 1, 1] = 0.8  # the class word
    maps[9:, 2, 2] = 0.01  # padding, on another pixel
    objectness = objectness_map({(4, 4): maps}, first_token=5)
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
    embeddings = encode_for_store(embedded, names)
    errors = denoising_errors(embedded.unet, embedded.scheduler, latents, embeddings, (850, 950), 3,
                              torch.Generator().manual_seed(0))
    assert errors.shape == (2, 32, 32)
    for k, class_id in enumerate(present):
        region = torch.tensor(truth == class_id + 1)
        assert errors[k][region].mean() < errors[1 - k][region].mean(), names
    again = denoising_errors(embedded.unet, embedded.scheduler, latents, embeddings, (850, 950), 3,
                             torch.Generator().manual_seed(0))
    assert torch.equal(errors, again)


def test_diffusion_classifier_rejects_bad_timesteps(embedded):
    latents = torch.zeros(4, 32, 32)
    embeddings = encode_for_store(embedded, ["ball", "leaf"])
    with pytest.raises(ValueError, match="timesteps"):
        denoising_errors(embedded.unet, embedded.scheduler, latents, embeddings, (1000,), 1, torch.Generator())
