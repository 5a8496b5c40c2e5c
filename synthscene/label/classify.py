"""Which named class a region shows, asked of the diffusion model itself.

A diffusion classifier (Li et al., "Your Diffusion Model is Secretly a Zero-Shot
Classifier", ICCV 2023), per pixel: noise the generated latents to a few high timesteps
and compare how well the denoiser predicts that noise when told each class name. Where the
class explains the pixels, its prediction error is lower. Any family runs it through its
adapter (``synthscene.models.families``): SD / SDXL predict the noise (or v), SD3 / FLUX the
flow-matching velocity; the error is against what the model was trained to predict. All classes see the same noise,
so their errors differ only by the condition. High noise levels matter: there the
model must take an object's appearance from the text rather than from the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.cluster.hierarchy import fcluster, linkage


@torch.no_grad()
def denoising_errors(family, latents: torch.Tensor, conditioning, timesteps: tuple[int, ...], repeats: int,
                     generator: torch.Generator) -> torch.Tensor:
    """Per-pixel prediction error of one sample under each class condition.

    Args:
        family: the pipeline's ``models.families.Family`` (its denoiser, schedule, conditioning).
        latents: [C, h, w] clean latents of the generated image (spatial, FLUX's unpacked).
        conditioning: ``Conditioning`` of K texts (``family.encode_texts``), one per class.
        timesteps: training timesteps to noise to (e.g. (850, 950) of 1000; flow matching:
            sigma = t / 1000).
        repeats: noise draws per timestep.
        generator: the noise source (seed it from the sample's seed for reproducible labels).
    Returns:
        float32 [K, h, w], mean squared error over channels, draws and timesteps.
    """
    if not timesteps or repeats < 1:
        raise ValueError("need at least one timestep and one repeat")
    limit = family.train_timesteps
    if max(timesteps) >= limit or min(timesteps) < 0:
        raise ValueError(f"classifier timesteps {timesteps} must lie in [0, {limit}) (the training schedule)")
    num_classes = conditioning.states.shape[0]
    errors = torch.zeros(num_classes, *latents.shape[-2:])
    latents = latents.to(torch.float32)
    for timestep in timesteps:
        for _ in range(repeats):
            # drawn on the generator's device, so labels match across the denoiser's devices
            noise = torch.randn(latents.shape, generator=generator, device=generator.device).to(latents.device)
            noisy, target = family.noised(latents, noise, timestep)
            batch = noisy[None].expand(num_classes, -1, -1, -1).to(family.device, family.dtype)
            t = torch.full((num_classes,), timestep, device=family.device)
            prediction = family.denoise(batch, t, conditioning)
            errors += F.mse_loss(prediction.float().cpu(), target.cpu()[None].expand_as(prediction),
                                 reduction="none").mean(1)
    return errors / (len(timesteps) * repeats)


def assign_segments(segments, errors, image, group_distance: float = 15.0, presence: PresenceErrors | None = None,
                    min_gain: float = 0.0, min_rival_margin: float | None = None,
                    rival_word_gain: float = 0.0, min_word_gain: float | None = None,
                    min_context_margin: float | None = None) -> dict[int, int | None]:
    """Which of K named classes each segment shows, from per-pixel denoising errors.

    Segments whose mean Lab colours lie within ``group_distance`` of each other (directly or
    through a chain) look alike and are decided together, so a small piece borrows the
    evidence of its larger look-alikes. A group takes the class with the lowest mean error
    over its pixels. With ``presence`` each class must also pass the not-drawn check
    (``class_evidence``, ``ClassEvidence.drawn``) over all its segments together, or its
    segments show none of the named classes (None).

    Args:
        segments: int [H, W], 0 background, 1..S segments (``refine.colour_segments``).
        errors: float [K, H, W] denoising errors at image resolution (None: one class, no check).
        image: uint8 [H, W, 3] RGB.
        presence: the check's errors at image resolution (``PresenceErrors``), or None.
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
    if presence is None:
        return choice
    evidence = class_evidence(segments, choice, errors, presence, rival_word_gain)
    return drop_not_drawn(choice, evidence, min_gain, min_rival_margin, min_word_gain, min_context_margin)


@dataclass(frozen=True)
class PresenceErrors:
    """The denoising errors the not-drawn check compares, all over the same pixels: under
    the sample's prompt [H, W]; under the prompt without each named class [K, H, W]; under
    each rival's word alone [R, H, W] (rivals: the spec's classes the prompt did not name)
    and the empty prompt [H, W]; under the prompt with each named class's word replaced by
    each rival's [K, R, H, W]. The optional rows are None when no asked question needs them."""

    prompt: object
    without: object
    rivals: object | None = None
    empty: object | None = None
    in_context: object | None = None

    def map(self, function) -> PresenceErrors:
        """The same rows with ``function`` applied to each array (e.g. a resize)."""
        return PresenceErrors(*(None if rows is None else function(rows) for rows in
                                (self.prompt, self.without, self.rivals, self.empty, self.in_context)))


@dataclass(frozen=True)
class ClassEvidence:
    """What the diffusion classifier says about one named class on the pixels it was given.

    - ``gain``: ``1 - error(prompt) / error(prompt without the class)``: does its word in the
      caption explain its pixels? A name the model never learnt to draw changes nothing.
    - ``rival_margin``: ``1 - error(word) / lowest rival error``: does its own word beat every
      class of the taxonomy the prompt did not name? A name the model cannot draw loses to the
      class whose look the model gave it. Only rivals whose word beats the empty prompt by
      ``rival_word_gain`` count (a name the model cannot draw is no rival); None when none
      counts or the rival rows were not computed.
    - ``word_gain``: ``1 - error(word) / error(empty prompt)``: does its word alone explain
      the pixels better than no text at all? None without the empty-prompt row.
    - ``caption_gain``: ``1 - error(prompt) / error(empty prompt)``, what the whole caption
      explains there (the scale ``word_gain`` can be read against). None likewise.
    - ``rival_gain``: the best rival's ``1 - error(rival) / error(empty prompt)``, counted or
      not. None without rival rows.
    - ``context_margin``: ``1 - error(prompt) / lowest error(prompt with its word replaced by a
      rival's)``: in its own caption, does its word explain its pixels better than every class
      of the spec the prompt did not name would in its place? A word the model never learnt
      draws some stray shape, and a word the model knows explains that shape as well. None
      without those rows (or with no rival).
    """

    gain: float
    rival_margin: float | None = None
    word_gain: float | None = None
    caption_gain: float | None = None
    rival_gain: float | None = None
    context_margin: float | None = None

    def drawn(self, min_gain: float, min_rival_margin: float | None = None,
              min_word_gain: float | None = None, min_context_margin: float | None = None) -> bool:
        """The check: each asked question (threshold not None, its evidence measured) must pass."""
        asked = ((self.rival_margin, min_rival_margin), (self.word_gain, min_word_gain),
                 (self.context_margin, min_context_margin))
        return self.gain >= min_gain and all(value is None or threshold is None or value >= threshold
                                             for value, threshold in asked)

    def to_json(self) -> dict:
        return {"class_gain": self.gain, "rival_margin": self.rival_margin, "word_gain": self.word_gain,
                "caption_gain": self.caption_gain, "rival_gain": self.rival_gain,
                "context_margin": self.context_margin}


def class_evidence(segments, choice: dict[int, int], errors, presence: PresenceErrors,
                   rival_word_gain: float = 0.0) -> dict[int, ClassEvidence]:
    """``ClassEvidence`` of every class in ``choice`` ({segment: class index}), each asked once
    per image over all its segments together; ``errors`` and ``presence`` as in
    ``assign_segments``."""
    evidence = {}
    for k in sorted(set(choice.values())):
        pixels = np.isin(segments, [i for i, c in choice.items() if c == k])
        word, caption = float(errors[k][pixels].mean()), float(presence.prompt[pixels].mean())
        margin = word_gain = caption_gain = best_rival = context = None
        if presence.empty is not None:
            floor = float(presence.empty[pixels].mean())
            word_gain, caption_gain = 1.0 - word / floor, 1.0 - caption / floor
            rivals = presence.rivals
            rival_errors = rivals[:, pixels].mean(axis=1) if rivals is not None and len(rivals) else np.zeros(0)
            counted = rival_errors[1.0 - rival_errors / floor >= rival_word_gain]
            margin = float(1.0 - word / counted.min()) if len(counted) else None
            best_rival = float(1.0 - rival_errors.min() / floor) if len(rival_errors) else None
        if presence.in_context is not None and presence.in_context.shape[1]:
            context = float(1.0 - caption / presence.in_context[k][:, pixels].mean(axis=1).min())
        gain = float(1.0 - caption / presence.without[k][pixels].mean())
        evidence[k] = ClassEvidence(gain, margin, word_gain, caption_gain, best_rival, context)
    return evidence


def drop_not_drawn(choice: dict[int, int], evidence: dict[int, ClassEvidence], min_gain: float,
                   min_rival_margin: float | None = None, min_word_gain: float | None = None,
                   min_context_margin: float | None = None) -> dict[int, int | None]:
    """``choice`` with the segments of every class that fails the check set to None."""
    return {segment: k if evidence[k].drawn(min_gain, min_rival_margin, min_word_gain, min_context_margin) else None
            for segment, k in choice.items()}
