"""The grounding head: multi-scale denoiser features + class-name embeddings -> boxes.

A small DETR-style decoder (plain torch). Each feature level goes through a 1x1 conv and
GroupNorm to a common width and is flattened into one memory with sine positions and a
level embedding. Every memory token proposes a box around its own position (scored against
the image's classes); the best-scoring ones become the queries' reference boxes (the
language-guided query selection of Grounding DINO, Deformable DETR's two-stage scheme), so
queries start on the objects rather than at learned places. Learned query contents pass
through decoder layers of self-attention, cross-attention to the class embeddings,
cross-attention to the memory and an MLP; every layer refines the boxes and is supervised
(auxiliary losses), and so are the selected proposals.

A query's logit for class k is its objectness plus how much more it resembles k than the
image's other classes: the dot product between its projection and k's embedding, minus the
mean of those over the classes the image is given (its prompt's). Classes are open (a name
is just an embedding) and an image's classes compete only with each other. Why the split:
with a handful of base classes no map from queries to text embeddings can be learnt that
also places a never-seen class's embedding; an image that names one class needs none
(its relative term is zero and objectness, learnt on every class, decides alone), and
self-training on such images teaches the new classes the rest.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class HeadConfig(BaseModel):
    """What a head is built from (saved beside its weights; a checkpoint refuses features of
    another layout)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    levels: tuple[tuple[int, int, int], ...] = Field(min_length=1)  # (h, w, channels), finest first
    text_dim: int = Field(ge=1)
    width: int = Field(128, ge=8)
    queries: int = Field(30, ge=1)
    layers: int = Field(3, ge=1)
    heads: int = Field(4, ge=1)
    groups: int = Field(8, ge=1)  # GroupNorm groups of the input projections
    # read the generator's per-class evidence maps (``grounding.evidence``) as one more class term
    class_evidence: bool = False
    # proposal boxes' side in strides of their level's grid (Deformable DETR's 0.05 x 2^level is
    # about 5 strides on 800 px COCO images); None: 0.05 x 2^level, as heads trained before
    proposal_strides: float | None = Field(None, gt=0)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


def sine_embedding(coords: torch.Tensor, width: int) -> torch.Tensor:
    """[..., n] coordinates in [0, 1] -> [..., width] sine / cosine features (width / n each)."""
    per = width // coords.shape[-1]
    frequencies = 10000 ** (2 * (torch.arange(per // 2, device=coords.device) / per))
    angles = coords[..., None] * 2 * math.pi / frequencies  # [..., n, per/2]
    return torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)


class MLP(nn.Sequential):
    def __init__(self, dims: list[int]):
        layers = []
        for i, (a, b) in enumerate(zip(dims, dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers.append(nn.ReLU())
        super().__init__(*layers)


class DecoderLayer(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.self_attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.text_attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.image_attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.mlp = MLP([width, 4 * width, width])
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(4))

    def forward(self, queries, query_pos, text, text_padding, memory, memory_pos):
        q = queries + query_pos
        queries = self.norms[0](queries + self.self_attention(q, q, queries)[0])
        queries = self.norms[1](queries + self.text_attention(queries + query_pos, text, text,
                                                               key_padding_mask=text_padding)[0])
        queries = self.norms[2](queries + self.image_attention(queries + query_pos, memory + memory_pos, memory)[0])
        return self.norms[3](queries + self.mlp(queries))


class GroundingHead(nn.Module):
    def __init__(self, config: HeadConfig):
        super().__init__()
        self.config = config
        width = config.width
        self.inputs = nn.ModuleList(nn.Sequential(nn.Conv2d(c, width, 1), nn.GroupNorm(config.groups, width))
                                    for _, _, c in config.levels)
        self.level_embedding = nn.Parameter(torch.zeros(len(config.levels), width))
        self.text_projection = nn.Linear(config.text_dim, width)
        self.query_content = nn.Embedding(config.queries, width)
        self.proposal = nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width))
        self.proposal_delta = MLP([width, width, width, 4])
        self.query_position = MLP([2 * width, width, width])
        self.layers = nn.ModuleList(DecoderLayer(width, config.heads) for _ in range(config.layers))
        self.box_delta = MLP([width, width, width, 4])
        self.class_projection = nn.Linear(width, width)
        # objectness is the similarity to one learned "object" embedding, read through the same
        # projections as the class names: a plain linear score learned where the objects are
        # about twice slower (the toy task of the tests: mean IoU 0.26 against 0.55 at 300 steps)
        self.object_embedding = nn.Parameter(torch.randn(config.text_dim))
        # focal-loss prior: every query starts at probability 0.01 (RetinaNet)
        self.object_bias = nn.Parameter(torch.tensor(-math.log(99.0)))
        if config.class_evidence:
            # how much a unit of the generator's class evidence moves a logit, at memory tokens
            # and at the queries' boxes
            self.evidence_weight = nn.Parameter(torch.ones(2))
        for delta in (self.box_delta, self.proposal_delta):
            nn.init.zeros_(delta[-1].weight)
            nn.init.zeros_(delta[-1].bias)

    def memory(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, N, width] tokens of every level, their positions and [N, 4] logit-space anchor
        boxes (the token's centre, ``proposal_strides`` strides wide; see ``HeadConfig``)."""
        tokens, positions, anchors = [], [], []
        for level, (projection, feature) in enumerate(zip(self.inputs, features)):
            x = projection(feature)
            h, w = x.shape[-2:]
            ys, xs = torch.meshgrid((torch.arange(h, device=x.device) + 0.5) / h,
                                    (torch.arange(w, device=x.device) + 0.5) / w, indexing="ij")
            centres = torch.stack([xs, ys], -1).flatten(0, 1)
            position = sine_embedding(centres, self.config.width)
            tokens.append(x.flatten(2).transpose(1, 2))
            positions.append(position[None] + self.level_embedding[level])
            strides = self.config.proposal_strides
            side = torch.tensor([strides / w, strides / h]) if strides else torch.full((2,), 0.05 * 2**level)
            anchors.append(inverse_sigmoid(torch.cat([centres, side.to(centres).expand_as(centres)], -1)))
        memory = torch.cat(tokens, 1)
        return memory, torch.cat(positions, 1).expand(memory.shape[0], -1, -1), torch.cat(anchors)

    def forward(self, features: list[torch.Tensor], classes: torch.Tensor, class_mask: torch.Tensor,
                evidence: torch.Tensor | None = None) -> dict:
        """
        Args:
            features: one [B, C_l, h_l, w_l] per level of ``config.levels``.
            classes: float [B, K, text_dim] class embeddings given to each image.
            class_mask: bool [B, K], True where the image has that class (padding False).
            evidence: float [B, K, h, w] (``grounding.evidence.class_evidence``); required
                by a head built with ``class_evidence``, refused by one without.
        Returns:
            {"logits": [L + 1, B, Q, K] (-inf where the class is not given), "boxes":
            [L + 1, B, Q, 4] normalised (cx, cy, w, h)}: the selected proposals, then one
            entry per decoder layer; the last is the output.
        """
        self.check(features)
        if (evidence is not None) != self.config.class_evidence:
            raise ValueError("this grounding head was built " + ("with" if self.config.class_evidence else "without")
                             + " class evidence; give it " + ("" if self.config.class_evidence else "no ")
                             + "evidence maps")
        memory, memory_pos, anchors = self.memory(features)
        text = self.text_projection(classes)
        batch, queries_count = memory.shape[0], self.config.queries
        # every token proposes a box; the queries start from the best-scoring ones
        proposed = self.proposal(memory)
        token_logits = self.class_logits(proposed, text, class_mask)
        if evidence is not None:
            token_logits = token_logits + self.evidence_weight[0] * self.token_evidence(evidence, features)
        top = token_logits.max(-1).values.topk(min(queries_count, memory.shape[1]), dim=1).indices  # [B, Q]
        chosen = proposed.gather(1, top[..., None].expand(-1, -1, proposed.shape[-1]))
        reference = anchors[top] + self.proposal_delta(chosen)  # logit space
        logits = [token_logits.gather(1, top[..., None].expand(-1, -1, token_logits.shape[-1]))]
        boxes = [reference.sigmoid()]
        queries = self.query_content.weight[None, : top.shape[1]].expand(batch, -1, -1)
        padding = ~class_mask
        padding[padding.all(1), 0] = False  # an image given no class: attention must see one key
        for layer in self.layers:
            query_pos = self.query_position(sine_embedding(reference.sigmoid()[..., :2].detach(), 2 * self.config.width))
            queries = layer(queries, query_pos, text, padding, memory, memory_pos)
            reference = reference.detach() + self.box_delta(queries)
            boxes.append(reference.sigmoid())
            layer_logits = self.class_logits(queries, text, class_mask)
            if evidence is not None:
                layer_logits = layer_logits + self.evidence_weight[1] * box_evidence(evidence, boxes[-1].detach())
            logits.append(layer_logits)
        return {"logits": torch.stack(logits), "boxes": torch.stack(boxes)}

    def class_logits(self, queries: torch.Tensor, text: torch.Tensor, class_mask: torch.Tensor) -> torch.Tensor:
        """[B, Q, K]: objectness + similarity relative to the image's given classes."""
        # a plain dot product, as Grounding DINO's: scaled by 1 / sqrt(width) it learned which
        # query holds the object several times slower (a toy task: 600 steps instead of 300)
        projected = self.class_projection(queries)
        similarity = torch.einsum("bqd,bkd->bqk", projected, text)
        given = class_mask[:, None, :].float()
        mean = (similarity * given).sum(-1, keepdim=True) / given.sum(-1, keepdim=True).clamp(min=1)
        objectness = projected @ self.text_projection(self.object_embedding) + self.object_bias
        score = objectness[..., None] + similarity - mean
        return score.masked_fill(~class_mask[:, None, :], float("-inf"))

    @staticmethod
    def token_evidence(evidence: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        """[B, N, K]: the evidence at every memory token (resampled to each level's grid)."""
        import torch.nn.functional as F

        return torch.cat([F.adaptive_avg_pool2d(evidence, f.shape[-2:]).flatten(2).transpose(1, 2)
                          for f in features], 1)

    def check(self, features: list[torch.Tensor]) -> None:
        got = tuple((int(f.shape[-2]), int(f.shape[-1]), int(f.shape[1])) for f in features)
        if got != tuple(self.config.levels):
            raise ValueError(f"the grounding head was built for features {list(self.config.levels)} (h, w, "
                             f"channels), got {list(got)}: it belongs to another model or feature layout")


def box_evidence(evidence: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """[B, Q, K]: the mean evidence [B, K, h, w] inside each normalised cxcywh box [B, Q, 4]."""
    from torchvision.ops import box_convert, roi_align

    height, width = evidence.shape[-2:]
    scale = torch.tensor([width, height, width, height], dtype=evidence.dtype, device=evidence.device)
    corners = box_convert(boxes, "cxcywh", "xyxy") * scale
    pooled = roi_align(evidence, list(corners), output_size=2, sampling_ratio=2, aligned=True)  # [B*Q, K, 2, 2]
    return pooled.mean((-2, -1)).unflatten(0, boxes.shape[:2])


@torch.no_grad()
def predict_boxes(output: dict, class_mask: torch.Tensor, image_size: tuple[int, int],
                  score_threshold: float = 0.05) -> list[dict]:
    """Per image {"boxes": float [N, 4] xyxy pixels, "scores": [N], "classes": int [N]
    (index into that image's classes)}: each query's best given class, above the threshold."""
    from torchvision.ops import box_convert

    probabilities = output["logits"][-1].sigmoid()  # -inf -> 0
    scores, classes = probabilities.max(-1)
    height, width = image_size
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    results = []
    for b in range(probabilities.shape[0]):
        keep = scores[b] > score_threshold
        boxes = box_convert(output["boxes"][-1][b][keep], "cxcywh", "xyxy").clamp(0, 1) * scale
        order = scores[b][keep].argsort(descending=True)
        results.append({"boxes": boxes[order], "scores": scores[b][keep][order], "classes": classes[b][keep][order]})
    return results
