"""The text -> labels recipes as pure functions: captured maps + image -> ``Labels``.

``faithful`` is Dataset Diffusion's; ``ours`` is described in
``synthscene.methods.text2labels``. Both take one sample's captured attention (already
sliced out of its batch) and return the semantic mask, the instances and what each
filter dropped.
"""

from __future__ import annotations

import numpy as np
import torch

from synthscene.codecs import IGNORE_INDEX
from synthscene.label.attention_maps import (
    class_maps,
    min_max_per_class,
    objectness_map,
    refine_with_self_attention,
    semantic_from_scores,
    upsample_scores,
)
from synthscene.label.classify import PresenceErrors, assign_segments, class_evidence, drop_not_drawn
from synthscene.label.instances import Labels, instances_from_semantic
from synthscene.label.refine import blend_alpha, colour_segments, grabcut_foreground
from synthscene.records import Instances


def faithful_labels(image: np.ndarray, cross: dict, token_groups: list[list[int]],
                    self_attention: torch.Tensor | None, class_ids, params, num_classes: int) -> Labels:
    """Dataset Diffusion: per-class maps from the class prompt's tokens (``token_groups``,
    one list per named class in prompt order), self-attention refinement, min-max, the
    foreground / background thresholds with 255 between."""
    scores = label_scores(cross, token_groups, self_attention, params)
    scores = upsample_scores(scores, image.shape[:2])
    semantic = semantic_for_classes(scores, class_ids, params)
    full_scores = np.zeros((num_classes, *image.shape[:2]), np.float32)
    full_scores[list(class_ids)] = scores.numpy()
    instances, dropped = instances_from_semantic(semantic, full_scores, params.min_instance_area, num_classes)
    return Labels(semantic, instances, {"small": dropped})


def ours_labels(image: np.ndarray, cross: dict, object_tokens: list[int], self_attention: torch.Tensor | None,
                class_errors: torch.Tensor | None, class_ids, params, num_classes: int,
                presence_errors: PresenceErrors | None = None) -> Labels:
    """Our recipe: objectness from the prompt's ``object_tokens`` (``objectness_tokens``), spread along
    the self-attention, cut by GrabCut and a colour matte, split into colour segments,
    each segment classified by the denoising errors ``class_errors`` [K, h, w] (None: one
    named class, no check). With ``presence_errors`` (``PresenceErrors`` on the latent grid),
    a class whose word does not lower the error on its segments by ``params.min_class_gain``
    (or loses to a rival's word in its place, ``params.min_context_margin``, or to a rival's
    word alone, ``params.min_rival_margin``, or its word alone does not beat the empty prompt,
    ``params.min_word_gain``) was not drawn: 255, no instance
    (counted as ``dropped["not_drawn"]``). Instances keep every object pixel; the semantic
    mask abstains (255) on near-even edge blends."""
    size = image.shape[:2]
    spread = self_attention is not None and params.objectness_self_attention_power > 0
    side = round(self_attention.shape[-1] ** 0.5) if spread else None
    objectness = objectness_map(cross, object_tokens, (side, side) if spread else None)
    if spread:
        objectness = min_max_per_class(refine_with_self_attention(
            objectness[None], self_attention, params.objectness_self_attention_power))[0]
    objectness = upsample_scores(objectness[None], size)[0].numpy()
    foreground = grabcut_foreground(image, objectness, params.objectness_threshold, params.grabcut_background_below,
                                    params.grabcut_foreground_above, params.grabcut_iterations,
                                    params.grabcut_min_side)
    alpha = (blend_alpha(image, foreground, params.matting_colours) if params.matting_colours > 0
             else foreground.astype(np.float32))
    foreground = alpha >= 0.5
    segments = colour_segments(image, foreground, params.colour_split_distance)
    errors = presence = None
    if class_errors is not None:
        errors = _to_image_size(class_errors, size)
    if presence_errors is not None and params.min_class_gain is not None:
        presence = presence_errors.map(lambda rows: _to_image_size(rows, size))
    choice = assign_segments(segments, errors, image, params.colour_group_distance)
    evidence = {}
    if presence is not None:
        evidence = class_evidence(segments, choice, errors, presence, params.rival_word_gain)
        choice = drop_not_drawn(choice, evidence, params.min_class_gain, params.min_rival_margin,
                                params.min_word_gain, params.min_context_margin)
    lookup = np.zeros(segments.max() + 1, np.uint8)
    not_drawn = 0
    for segment, best in choice.items():
        not_drawn += best is None
        lookup[segment] = IGNORE_INDEX if best is None else class_ids[best] + 1
    decided = lookup[segments]
    # an instance's score: its mean objectness
    scores = np.repeat(objectness[None].astype(np.float32), num_classes, axis=0)
    instances, dropped = instances_from_semantic(decided, scores, params.min_instance_area, num_classes)
    instances = with_check_scores(instances, objectness >= params.objectness_threshold, alpha, errors, presence,
                                  list(class_ids))
    semantic = decided
    if params.uncertain_blend is not None:
        low, high = params.uncertain_blend
        semantic = np.where((alpha >= low) & (alpha < high), np.uint8(IGNORE_INDEX), decided)
    return Labels(semantic, instances, {"small": dropped, "not_drawn": not_drawn},
                  {class_ids[k]: e for k, e in evidence.items()})


def with_check_scores(instances: Instances, attention_foreground: np.ndarray, alpha: np.ndarray,
                      errors: np.ndarray | None, presence: PresenceErrors | None, class_ids: list[int]) -> Instances:
    """``instances`` with the scores of the checks that made them in ``data`` (one value each):

    - ``attention_agreement``: fraction of its pixels that attention alone calls object
      (objectness above its threshold), i.e. how much GrabCut / the matte added;
    - ``matte_confidence``: mean ``|2 alpha - 1|`` over its pixels (1: the colour matte is sure);
    - ``class_margin``: ``1 - best / second`` mean denoising error of the named classes on its
      pixels (1.0 when the prompt named one class: nothing competes);
    - ``class_gain``: ``1 - error(prompt) / error(prompt without its class)`` on its pixels,
      the not-drawn statistic (NaN when that check is off);
    - ``context_margin``: ``1 - error(prompt) / lowest error(prompt with a rival word in its
      place)`` on its pixels (NaN when not asked or no rival).
    """
    n = len(instances)
    agreement, confidence = np.zeros(n, np.float32), np.zeros(n, np.float32)
    margin, gain = np.ones(n, np.float32), np.full(n, np.nan, np.float32)
    context = np.full(n, np.nan, np.float32)
    for i in range(n):
        pixels = instances.masks[i]
        agreement[i] = attention_foreground[pixels].mean()
        confidence[i] = np.abs(2 * alpha[pixels] - 1).mean()
        k = class_ids.index(int(instances.class_id[i]))
        if errors is not None and len(errors) > 1:
            second, best = np.sort(errors[:, pixels].mean(axis=1))[[1, 0]]
            margin[i] = 1.0 - best / second
        if presence is not None:
            caption = presence.prompt[pixels].mean()
            gain[i] = 1.0 - caption / presence.without[k][pixels].mean()
            if presence.in_context is not None and presence.in_context.shape[1]:
                context[i] = 1.0 - caption / presence.in_context[k][:, pixels].mean(axis=1).min()
    return Instances(instances.xyxy, instances.class_id, instances.score, instances.masks,
                     {**instances.data, "attention_agreement": agreement, "matte_confidence": confidence,
                      "class_margin": margin, "class_gain": gain, "context_margin": context})


def _to_image_size(maps: torch.Tensor, size) -> np.ndarray:
    """float [..., h, w] latent-grid maps -> [..., H, W] at image resolution (bilinear)."""
    lead = maps.shape[:-2]
    flat = maps.reshape(1, -1, *maps.shape[-2:]).float()
    if flat.shape[1] == 0:
        return np.zeros((*lead, *size), np.float32)
    resized = torch.nn.functional.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return resized.reshape(*lead, *size).numpy()


def label_scores(cross: dict, groups: list[list[int]], self_attention: torch.Tensor | None,
                 params) -> torch.Tensor:
    """float [K, h, w] scores in [0, 1] for the K classes named in one prompt."""
    grid = max(cross)
    if self_attention is not None:
        side = round(self_attention.shape[-1] ** 0.5)
        grid = (side, side)
    maps = class_maps(cross, groups, grid)
    if self_attention is not None and params.self_attention_power > 0:
        maps = refine_with_self_attention(maps, self_attention, params.self_attention_power)
    return min_max_per_class(maps)


def semantic_for_classes(scores: torch.Tensor, class_ids, params) -> np.ndarray:
    """Semantic mask in the dataset's class numbering (0 background, class id + 1) from the
    scores [K, H, W] of the K classes a prompt names, in prompt order."""
    local = semantic_from_scores(scores, params.foreground, params.background)
    lookup = np.zeros(256, np.uint8)
    lookup[1 : len(class_ids) + 1] = [c + 1 for c in class_ids]
    lookup[IGNORE_INDEX] = IGNORE_INDEX
    return lookup[local]
