"""Running sums of attention probabilities, kept only where they will be used.

One ``AttentionStore`` serves one pipeline call. It holds, per captured resolution, the
sum over layers and denoising steps of head-averaged cross-attention probabilities of the
conditional half of the batch, and optionally the same for self-attention at one
resolution. Everything is fp32 whatever the model's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class CaptureConfig:
    """What to keep.

    Attributes:
        cross_resolutions: latent-grid sides (e.g. 16 for SD 1.5's 16x16 layers at 512 px)
            whose cross-attention is summed; empty = every resolution. A transformer's layers
            all work on one token grid, so SD3 and FLUX keep every layer whatever this says.
        self_resolution: the side whose self-attention is summed (None: no self-attention).
            At most 32: SD's 64x64 self-attention (4096 x 4096 per head) is never built.
        step_window: (first, last) fraction of the denoising steps to keep, end exclusive;
            Dataset Diffusion keeps all steps, (0.5, 1.0) keeps the later, sharper half.
    """

    cross_resolutions: tuple[int, ...] = (16,)
    self_resolution: int | None = None
    step_window: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self):
        if self.self_resolution is not None and not 1 <= self.self_resolution <= 32:
            raise ValueError(f"self_resolution must be in [1, 32] (a 64x64 map is 4096 x 4096), got {self.self_resolution}")
        first, last = self.step_window
        if not 0.0 <= first < last <= 1.0:
            raise ValueError(f"step_window must satisfy 0 <= first < last <= 1, got {self.step_window}")


@dataclass
class AttentionStore:
    """Accumulates maps during one pipeline call; read them with ``cross_maps`` / ``self_map``.

    The caller sets ``num_steps`` and ``guidance`` (CFG doubles the batch; the conditional
    half is the second, as in every diffusers pipeline) before the call, and optionally
    ``class_embeddings``: encoder states whose keys are read for the labels instead of the
    prompt's (Dataset Diffusion's class-prompt cross-attention; they never reach the image).
    """

    config: CaptureConfig
    num_steps: int = 1
    guidance: bool = True
    class_embeddings: torch.Tensor | None = None
    step: int = -1  # advanced by the denoiser's pre-hook, once per call
    latent_hw: tuple[int, int] = (0, 0)  # the call's latent grid (FLUX: its token grid)
    text_tokens: int = 0  # the call's text length (FLUX single-stream layers split on it)
    every_resolution: bool = False  # set for transformers: one token grid, nothing to choose
    cross_sums: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    cross_counts: dict[tuple[int, int], int] = field(default_factory=dict)
    self_sum: torch.Tensor | None = None
    self_count: int = 0

    def reset(self) -> None:
        self.step = -1
        self.cross_sums.clear()
        self.cross_counts.clear()
        self.self_sum = None
        self.self_count = 0

    def step_is_kept(self) -> bool:
        first, last = self.config.step_window
        fraction = self.step / max(1, self.num_steps)
        return first <= fraction < last

    def layer_hw(self, tokens: int) -> tuple[int, int]:
        """The (h, w) grid of a layer with ``tokens`` spatial positions."""
        height, width = self.latent_hw
        factor = round((height * width / tokens) ** 0.5)
        return height // factor, width // factor

    def wants_cross(self, hw: tuple[int, int]) -> bool:
        sizes = self.config.cross_resolutions
        return self.step_is_kept() and (not sizes or self.every_resolution or hw[0] in sizes or min(hw) in sizes)

    def wants_self(self, hw: tuple[int, int]) -> bool:
        side = self.config.self_resolution
        return side is not None and self.step_is_kept() and min(hw) == side

    def add_cross(self, hw: tuple[int, int], probs: torch.Tensor) -> None:
        """probs: [B, h*w, T] head-averaged probabilities of the conditional half."""
        probs = probs.float()
        if hw in self.cross_sums:
            self.cross_sums[hw] += probs
        else:
            self.cross_sums[hw] = probs.clone()
        self.cross_counts[hw] = self.cross_counts.get(hw, 0) + 1

    def add_self(self, probs: torch.Tensor) -> None:
        """probs: [B, N, N] head-averaged self-attention of the conditional half."""
        probs = probs.float()
        self.self_sum = probs.clone() if self.self_sum is None else self.self_sum.add_(probs)
        self.self_count += 1

    def cross_maps(self) -> dict[tuple[int, int], torch.Tensor]:
        """Mean cross-attention per resolution: {(h, w): float32 [B, T, h, w]}."""
        maps = {}
        for (h, w), total in self.cross_sums.items():
            mean = total / self.cross_counts[(h, w)]
            maps[(h, w)] = mean.transpose(1, 2).reshape(mean.shape[0], mean.shape[2], h, w).cpu()
        return maps

    def self_map(self) -> torch.Tensor | None:
        """Mean self-attention at ``self_resolution``: float32 [B, N, N] (rows sum to 1)."""
        return None if self.self_sum is None else (self.self_sum / self.self_count).cpu()

    def nbytes(self) -> int:
        """Bytes held by the running sums."""
        total = sum(t.numel() * t.element_size() for t in self.cross_sums.values())
        return total + (0 if self.self_sum is None else self.self_sum.numel() * self.self_sum.element_size())
