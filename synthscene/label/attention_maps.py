"""From captured attention to per-class score maps and a semantic mask.

The faithful Dataset Diffusion recipe (NeurIPS 2023, Sec. 3): class maps from
cross-attention (mean over each class's tokens), refined by the exponentiated
self-attention (A^4 @ map), min-max normalised per class, upsampled bicubically, then
label = argmax where the best score >= 0.6, ignore (255) in [0.5, 0.6), background below.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from synthscene.codecs import IGNORE_INDEX  # noqa: F401  (re-exported for the recipes)


def class_maps(cross_maps: dict[tuple[int, int], torch.Tensor], token_groups: list[list[int]],
               size: tuple[int, int]) -> torch.Tensor:
    """Per-class maps of one sample, averaged over resolutions.

    Args:
        cross_maps: {(h, w): float [T, h, w]} mean cross-attention per resolution.
        token_groups: for each class, the token positions of its name (empty: class absent,
            its map is all zeros).
        size: (H, W) of the output grid; each resolution is resized bilinearly to it.
    Returns:
        float32 [C, H, W].
    """
    if not cross_maps:
        raise ValueError("no cross-attention maps were captured (check the capture resolutions)")
    per_resolution = []
    for maps in cross_maps.values():
        stacked = torch.stack([
            maps[group].mean(dim=0) if group else torch.zeros_like(maps[0]) for group in token_groups
        ])
        per_resolution.append(F.interpolate(stacked[None], size=size, mode="bilinear", align_corners=False)[0])
    return torch.stack(per_resolution).mean(dim=0)


def objectness_map(cross_maps: dict[tuple[int, int], torch.Tensor], object_tokens: list[int],
                   size: tuple[int, int] | None = None) -> torch.Tensor:
    """Where the prompt's objects are: attention to the ``object_tokens`` (by default every token
    from the first class word on: the class words, end-of-text and padding, not BOS and the words
    before the first class; or the class words alone: ``models.text_layout.TextLayout.object_tokens``
    and the spec's ``objectness_tokens``), summed, averaged
    over resolutions on one grid (default: the finest) and min-max normalised.

    Args:
        cross_maps: {(h, w): float [T, h, w]} mean cross-attention of one sample.
    Returns:
        float32 [h, w] in [0, 1].
    """
    if not cross_maps:
        raise ValueError("no cross-attention maps were captured (check the capture resolutions)")
    size = size or max(cross_maps)
    total = torch.stack([
        F.interpolate(maps[list(object_tokens)].sum(dim=0)[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
        for maps in cross_maps.values()
    ]).mean(dim=0)
    return min_max_per_class(total[None])[0]


def refine_with_self_attention(maps: torch.Tensor, self_attention: torch.Tensor, power: int = 4) -> torch.Tensor:
    """Self-attention exponentiation: propagate each class map along (A^power).

    Args:
        maps: float [C, h, w] on the self-attention grid (h * w = N).
        self_attention: float [N, N], rows sum to 1.
        power: exponent (Dataset Diffusion: 4); 0 returns the maps unchanged.
    """
    c, h, w = maps.shape
    if self_attention.shape != (h * w, h * w):
        raise ValueError(f"self-attention {tuple(self_attention.shape)} does not match maps of {h}x{w}")
    if power < 0:
        raise ValueError(f"power must be >= 0, got {power}")
    propagator = torch.linalg.matrix_power(self_attention.double(), power).float()
    return (propagator @ maps.reshape(c, h * w).T).T.reshape(c, h, w)


def min_max_per_class(maps: torch.Tensor) -> torch.Tensor:
    """Each class map scaled to [0, 1] on its own (a flat map becomes all zeros)."""
    flat = maps.reshape(maps.shape[0], -1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    return ((flat - low) / (high - low).clamp_min(1e-12)).reshape(maps.shape)


def upsample_scores(scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """float [C, h, w] -> [C, H, W], bicubic (as Dataset Diffusion), clipped to [0, 1]
    (bicubic overshoots at sharp edges)."""
    return F.interpolate(scores[None], size=size, mode="bicubic", align_corners=False)[0].clamp(0.0, 1.0)


def semantic_from_scores(scores: torch.Tensor, foreground: float = 0.6, background: float = 0.5) -> np.ndarray:
    """Semantic mask from class scores in [0, 1] at image resolution.

    Args:
        scores: float [C, H, W].
        foreground: a pixel takes its best class when that score >= foreground.
        background: below it, background; between the two, IGNORE_INDEX (uncertain).
    Returns:
        uint8 [H, W]: 0 background, 1..C classes, 255 uncertain.
    """
    if not 0.0 <= background <= foreground <= 1.0:
        raise ValueError(f"need 0 <= background <= foreground <= 1, got {background}, {foreground}")
    best, label = scores.max(dim=0)
    semantic = (label + 1).to(torch.uint8)
    semantic[best < foreground] = IGNORE_INDEX
    semantic[best < background] = 0
    return semantic.numpy()
