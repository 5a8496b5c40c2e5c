"""The part inference network (iPOSE's idea, in plain torch): a shape's parts from the
parts of similar shapes.

The query is an instance's binary shape with two coordinate channels; each of k supports
is a shape of the same class with its part map (one-hot). Both are encoded by small conv
encoders to a 16 x 16 grid of tokens; the query's tokens attend to all supports' tokens
(cross-attention layers, so a query pixel can look up "what part is at the matching place
of a similar shape"); a decoder with skips from the query encoder brings the result back
to the crop's resolution as one score per part.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F


class PartNetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_parts: int = Field(2, ge=1)  # parts of the class with the most
    width: int = Field(64, ge=32)  # multiple of 32 (group norms of 8 at width / 4)
    layers: int = Field(3, ge=1)  # cross-attention layers
    heads: int = Field(4, ge=1)
    crop: int = Field(64, ge=16)


def _conv(channels_in: int, channels_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, stride, 1), nn.GroupNorm(8, channels_out), nn.GELU())


class _QueryEncoder(nn.Module):
    """query crop -> features at 1, 1/2 and 1/4 of its size (the decoder's skips)."""

    def __init__(self, width: int):
        super().__init__()
        self.at_full = _conv(3, width // 4)
        self.at_half = nn.Sequential(_conv(width // 4, width // 2, 2), _conv(width // 2, width // 2))
        self.at_quarter = nn.Sequential(_conv(width // 2, width, 2), _conv(width, width))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        full = self.at_full(x)
        half = self.at_half(full)
        return [full, half, self.at_quarter(half)]


def _support_encoder(channels_in: int, width: int) -> nn.Sequential:
    """support crop -> features at 1/4 of its size: k supports per query, so it starts with
    a 4 x 4 patch embedding rather than full-resolution convolutions."""
    return nn.Sequential(nn.Conv2d(channels_in, width, 4, 4), nn.GroupNorm(8, width), nn.GELU(),
                         _conv(width, width), _conv(width, width))


class _CrossAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm_query, self.norm_support = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm_ff = nn.LayerNorm(width)
        self.feed_forward = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        support = self.norm_support(support)
        query = query + self.attention(self.norm_query(query), support, support, need_weights=False)[0]
        return query + self.feed_forward(self.norm_ff(query))


def coordinates(batch: int, size: int, device=None) -> torch.Tensor:
    """float [batch, 2, size, size]: x and y in [-1, 1]."""
    line = torch.linspace(-1, 1, size, device=device)
    y, x = torch.meshgrid(line, line, indexing="ij")
    return torch.stack([x, y]).expand(batch, 2, size, size)


class PartNet(nn.Module):
    def __init__(self, config: PartNetConfig):
        super().__init__()
        self.config = config
        width = config.width
        self.query_encoder = _QueryEncoder(width)
        self.support_encoder = _support_encoder(3 + 1 + config.max_parts, width)
        tokens = (config.crop // 4) ** 2
        self.position = nn.Parameter(torch.randn(1, tokens, width) * 0.02)
        self.layers = nn.ModuleList(_CrossAttention(width, config.heads) for _ in range(config.layers))
        self.up_half = _conv(width + width // 2, width // 2)
        self.up_full = _conv(width // 2 + width // 4, width // 4)
        self.out = nn.Conv2d(width // 4, config.max_parts, 1)

    def forward(self, query: torch.Tensor, support_shapes: torch.Tensor, support_parts: torch.Tensor) -> torch.Tensor:
        """Part scores of the query shapes.

        Args:
            query: bool or float [B, crop, crop], the shapes whose parts are wanted.
            support_shapes: [B, k, crop, crop], shapes of the same class.
            support_parts: long [B, k, crop, crop], their parts: 0 outside, 1..n.
        Returns:
            float [B, max_parts, crop, crop]: a score per part (part p at channel p - 1).
        """
        batch, k, size, _ = support_shapes.shape
        coords = coordinates(batch, size, query.device)
        full, half, quarter = self.query_encoder(torch.cat([query.float()[:, None], coords], 1))
        one_hot = F.one_hot(support_parts.long(), self.config.max_parts + 1).permute(0, 1, 4, 2, 3).float()
        supports = torch.cat([support_shapes.float()[:, :, None], coords[:, None].expand(batch, k, 2, size, size),
                              one_hot], 2).flatten(0, 1)
        support_tokens = self.support_encoder(supports).flatten(2).transpose(1, 2)  # [B k, T, C]
        support_tokens = (support_tokens + self.position).reshape(batch, -1, self.config.width)
        tokens = quarter.flatten(2).transpose(1, 2) + self.position
        for layer in self.layers:
            tokens = layer(tokens, support_tokens)
        x = tokens.transpose(1, 2).reshape(quarter.shape)
        x = self.up_half(torch.cat([F.interpolate(x, scale_factor=2, mode="bilinear"), half], 1))
        x = self.up_full(torch.cat([F.interpolate(x, scale_factor=2, mode="bilinear"), full], 1))
        return self.out(x)


def part_loss(scores: torch.Tensor, target: torch.Tensor, shape: torch.Tensor, part_counts: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over each query's own parts, inside its shape only.

    Args:
        scores: [B, max_parts, H, W]; target: long [B, H, W] (0 outside, 1..n);
        shape: bool [B, H, W]; part_counts: long [B], parts of each query's class.
    """
    scores = mask_missing_parts(scores, part_counts)
    inside = shape & (target > 0)
    if not inside.any():
        return scores.sum() * 0
    return F.cross_entropy(scores.permute(0, 2, 3, 1)[inside], target[inside] - 1)


def mask_missing_parts(scores: torch.Tensor, part_counts: torch.Tensor) -> torch.Tensor:
    """``scores`` with the channels beyond each query's class's part count set very low."""
    channel = torch.arange(scores.shape[1], device=scores.device)
    missing = channel[None] >= part_counts[:, None]  # [B, max_parts]
    return scores.masked_fill(missing[:, :, None, None], -1e4)
