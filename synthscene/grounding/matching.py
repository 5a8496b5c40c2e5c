"""Set losses of the grounding head: Hungarian matching, focal + L1 + GIoU (DETR's recipe
with InstaGen's weights), from scipy and torchvision rather than by hand."""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, generalized_box_iou, generalized_box_iou_loss, sigmoid_focal_loss


class LossWeights(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    focal: float = Field(1.0, ge=0)
    l1: float = Field(5.0, ge=0)
    giou: float = Field(2.0, ge=0)
    alpha: float = Field(0.25, ge=0, le=1)
    gamma: float = Field(2.0, ge=0)


@torch.no_grad()
def match(logits: torch.Tensor, boxes: torch.Tensor, targets: list[dict], weights: LossWeights) -> list[tuple]:
    """Per image (query indices, target indices) of the cheapest one-to-one assignment.

    Args:
        logits: [B, Q, K]; boxes: [B, Q, 4] normalised cxcywh.
        targets: per image {"classes": int [N] (index into its K), "boxes": [N, 4] cxcywh}.
    """
    assignments = []
    for b, target in enumerate(targets):
        if len(target["classes"]) == 0:
            assignments.append((torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)))
            continue
        p = logits[b][:, target["classes"]].sigmoid()  # [Q, N]
        # focal-style class cost (Deformable DETR): the loss of calling it positive minus negative
        positive = weights.alpha * (1 - p) ** weights.gamma * -(p + 1e-8).log()
        negative = (1 - weights.alpha) * p ** weights.gamma * -(1 - p + 1e-8).log()
        cost = (weights.focal * (positive - negative) + weights.l1 * torch.cdist(boxes[b], target["boxes"], p=1)
                - weights.giou * generalized_box_iou(box_convert(boxes[b], "cxcywh", "xyxy"),
                                                     box_convert(target["boxes"], "cxcywh", "xyxy")))
        rows, columns = linear_sum_assignment(cost.nan_to_num(1e6).numpy())
        assignments.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(columns, dtype=torch.long)))
    return assignments


def set_loss(output: dict, class_mask: torch.Tensor, targets: list[dict], weights: LossWeights) -> dict:
    """Losses summed over the decoder layers (each matched on its own), normalised by the
    number of target boxes; the terms are returned separately and as "loss".

    A target may name ``"unlabelled"`` classes (indices into its image's K): classes the image
    has but its pseudo-labeller boxed nowhere. They are left out of that image's focal loss,
    neither positive nor negative: a teacher's miss must not teach the head that the object
    is background."""
    count = max(1, sum(len(t["classes"]) for t in targets))
    supervised = class_mask.clone()
    for b, target in enumerate(targets):
        supervised[b, target.get("unlabelled", torch.empty(0, dtype=torch.long))] = False
    total = {"focal": 0.0, "l1": 0.0, "giou": 0.0}
    for logits, boxes in zip(output["logits"], output["boxes"]):
        assignments = match(logits.detach(), boxes.detach(), targets, weights)
        labels = torch.zeros_like(logits)
        for b, (queries, columns) in enumerate(assignments):
            labels[b, queries, targets[b]["classes"][columns]] = 1.0
        valid = supervised[:, None, :].expand_as(logits)
        focal = sigmoid_focal_loss(logits[valid], labels[valid], weights.alpha, weights.gamma, reduction="sum")
        matched = torch.cat([boxes[b, q] for b, (q, _) in enumerate(assignments)])
        wanted = torch.cat([targets[b]["boxes"][c] for b, (_, c) in enumerate(assignments)])
        total["focal"] = total["focal"] + focal / count
        if len(matched):
            total["l1"] = total["l1"] + (matched - wanted).abs().sum() / count
            total["giou"] = total["giou"] + generalized_box_iou_loss(
                box_convert(matched, "cxcywh", "xyxy"), box_convert(wanted, "cxcywh", "xyxy"), reduction="sum") / count
    total = {k: v if torch.is_tensor(v) else torch.zeros(()) for k, v in total.items()}
    total["loss"] = weights.focal * total["focal"] + weights.l1 * total["l1"] + weights.giou * total["giou"]
    return total
