"""Which named class a region shows, asked of the diffusion model itself.

A diffusion classifier (Li et al., "Your Diffusion Model is Secretly a Zero-Shot
Classifier", ICCV 2023), per pixel: noise the generated latents to a few high timesteps
and compare how well the UNet predicts that noise when told each class name. Where the
class explains the pixels, its prediction error is lower. All classes see the same noise,
so their errors differ only by the condition. High noise levels matter: there the
model must take an object's appearance from the text rather than from the image.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.cluster.hierarchy import fcluster, linkage


@torch.no_grad()
def denoising_errors(unet, scheduler, latents: torch.Tensor, class_embeddings: torch.Tensor,
                     timesteps: tuple[int, ...], repeats: int, generator: torch.Generator) -> torch.Tensor:
    """Per-pixel noise-prediction error of one sample under each class condition.

    Args:
        unet: a ``UNet2DConditionModel`` taking ``encoder_hidden_states`` only (SD 1.x / 2.x).
        scheduler: its training schedule's ``alphas_cumprod`` is used to add noise.
        latents: [C, h, w] clean latents of the generated image.
        class_embeddings: [K, T, D] text-encoder states, one per class.
        timesteps: training timesteps to noise to (e.g. (850, 950) of 1000).
        repeats: noise draws per timestep.
        generator: the noise source (seed it from the sample's seed for reproducible labels).
    Returns:
        float32 [K, h, w], mean squared error over channels, draws and timesteps.
    """
    if not timesteps or repeats < 1:
        raise ValueError("need at least one timestep and one repeat")
    alphas = scheduler.alphas_cumprod.to(torch.float32)
    if max(timesteps) >= len(alphas) or min(timesteps) < 0:
        raise ValueError(f"classifier timesteps {timesteps} must lie in [0, {len(alphas)}) (the training schedule)")
    if unet.config.addition_embed_type is not None:
        raise ValueError("the diffusion classifier conditions on text only (SD 1.x / 2.x UNets); "
                         "use recipe 'faithful' for this model")
    num_classes = class_embeddings.shape[0]
    errors = torch.zeros(num_classes, *latents.shape[-2:])
    latents = latents.to(torch.float32)
    for timestep in timesteps:
        alpha = alphas[timestep]
        for _ in range(repeats):
            # drawn on the generator's device, so labels match across the UNet's devices
            noise = torch.randn(latents.shape, generator=generator, device=generator.device).to(latents.device)
            noisy = alpha.sqrt() * latents + (1 - alpha).sqrt() * noise
            batch = noisy[None].expand(num_classes, -1, -1, -1).to(unet.device, unet.dtype)
            t = torch.full((num_classes,), timestep, device=unet.device)
            prediction = unet(batch, t, encoder_hidden_states=class_embeddings.to(unet.device, unet.dtype)).sample
            errors += F.mse_loss(prediction.float().cpu(), noise.cpu()[None].expand_as(prediction), reduction="none").mean(1)
    return errors / (len(timesteps) * repeats)


def assign_segments(segments, errors, image, group_distance: float = 15.0, presence=None,
                    min_gain: float = 0.0, min_rival_margin: float | None = None,
                    rival_word_gain: float = 0.0) -> dict[int, int | None]:
    """Which of K named classes each segment shows, from per-pixel denoising errors.

    Segments whose mean Lab colours lie within ``group_distance`` of each other (directly or
    through a chain) look alike and are decided together, so a small piece borrows the
    evidence of its larger look-alikes. A group takes the class with the lowest mean error
    over its pixels. With ``presence`` (the errors under the image's prompt, and under the
    prompt with each class cut out), each class must also explain its pixels (all its
    segments together): the prompt's error there must be lower than without the class by
    ``min_gain`` (``1 - error(prompt) / error(prompt without it)``), or its segments show none
    of the named classes (None). A name the model never learnt to draw changes nothing. With
    rival errors in ``presence`` and ``min_rival_margin``, the class's own word must also beat
    every rival (a class of the taxonomy the prompt did not name) on those pixels:
    ``1 - error(word) / lowest rival error >= min_rival_margin``; a name the model cannot draw
    loses to the class whose look the model gave it. A rival counts only where its word beats
    the empty prompt by ``rival_word_gain`` (a name the model cannot draw is no rival).

    Args:
        segments: int [H, W], 0 background, 1..S segments (``refine.colour_segments``).
        errors: float [K, H, W] denoising errors at image resolution (None: one class, no check).
        image: uint8 [H, W, 3] RGB.
        presence: (float [H, W], float [K, H, W]), optionally followed by float [R, H, W] rival
            and float [H, W] empty-prompt errors; or None.
    Returns:
        {segment id: class index in 0..K-1, or None}.
    """
    ids = [int(i) for i in np.unique(segments) if i != 0]
    if errors is None or not ids:
        return dict.fromkeys(ids, 0)
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    groups = np.arange(len(ids))
    if len(ids) > 1 and group_distance > 0:
        colours = np.stack([lab[segments == i].mean(axis=0) for i in ids])
        # single linkage = the chains of the union of pairs closer than group_distance
        groups = fcluster(linkage(colours, method="single"), t=group_distance, criterion="distance")
    choice = {}
    for group in np.unique(groups):
        members = [i for i, g in zip(ids, groups) if g == group]
        best = int(errors[:, np.isin(segments, members)].mean(axis=1).argmin())
        choice.update(dict.fromkeys(members, best))
    if presence is not None:
        with_all, without, *rest = presence
        rivals, empty = rest if len(rest) == 2 and min_rival_margin is not None else (None, None)
        # drawn or not is asked of a class once per image, over all its pixels
        for k in set(choice.values()):
            members = [i for i, c in choice.items() if c == k]
            pixels = np.isin(segments, members)
            drawn = 1.0 - with_all[pixels].mean() / without[k][pixels].mean() >= min_gain
            if drawn and rivals is not None and len(rivals):
                rival_errors = rivals[:, pixels].mean(axis=1)
                counted = rival_errors[1.0 - rival_errors / empty[pixels].mean() >= rival_word_gain]
                if len(counted):
                    drawn = 1.0 - errors[k][pixels].mean() / counted.min() >= min_rival_margin
            if not drawn:
                choice.update(dict.fromkeys(members, None))
    return choice
