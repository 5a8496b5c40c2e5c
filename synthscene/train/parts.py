"""``synthscene train-parts``: teach the part network on a part-annotated dataset.

1. read every instance of a part-aware class of the dataset's train split, cropped
   (``data.read_part_shapes``);
2. per step, a batch of query shapes; each gets as supports the ``k`` shapes of its class
   most like it among ``candidates`` drawn at random (as inference picks the k most like it
   in the whole support bank); query and supports are flipped / turned together at random;
   the loss is the cross-entropy of the query's parts inside its shape. A batch is drawn
   from (seed, step), so a resumed run trains exactly as an uninterrupted one;
3. save ``parts.safetensors`` (weights), ``parts.json`` (the network's settings and part
   list) and ``supports.npz`` (the support bank inference compares new shapes with).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from synthscene.io import make_dir, write_json
from synthscene.parts.data import PartShape, SupportBank, read_part_shapes, shape_iou
from synthscene.parts.infer import save_part_model
from synthscene.parts.net import PartNet, PartNetConfig, part_loss
from synthscene.provenance import run_record
from synthscene.train.loop import open_run_folder, optimizer_step, resume_state, save_checkpoint, warmup_cosine


class PartsTrainConfig(BaseModel):
    """Everything that defines a train-parts run (saved as ``config.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: str  # a part-annotated dataset folder (``synthscene world`` writes one)
    max_images: int | None = Field(None, ge=1)  # of the train split
    supports: int = Field(3, ge=1)  # k
    candidates: int = Field(32, ge=1)  # random shapes the k supports are picked from in training
    bank_per_class: int = Field(1024, ge=1)  # support shapes kept for inference
    steps: int = Field(1500, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(50, ge=0)
    width: int = Field(64, ge=8)
    layers: int = Field(3, ge=1)
    heads: int = Field(4, ge=1)
    checkpoint_every: int = Field(250, ge=1)
    seed: int = 0


def train_parts(config: PartsTrainConfig, out: str | Path, resume: bool = False, device: str = "cpu",
                progress: bool = True) -> Path:
    """Train a part network; returns the run folder (``out``)."""
    out = Path(out)
    open_run_folder(out, config.model_dump(mode="json"), resume)
    schema, shapes = read_part_shapes(config.data, "train", config.max_images, progress)
    too_few = [c for c in schema.classes if sum(s.class_name == c for s in shapes) <= config.supports]
    if too_few:
        raise ValueError(f"{config.data}: need more than {config.supports} annotated shapes of each part-aware "
                         f"class to train with {config.supports} supports; too few of {', '.join(too_few)}")
    make_dir(out / "checkpoints")
    if not resume:
        write_json(out / "config.json", config.model_dump(mode="json"), indent=2)
        write_json(out / "run.json", run_record(config.model_dump(mode="json")), indent=2)

    net_config = PartNetConfig(max_parts=schema.max_parts, width=config.width, layers=config.layers,
                               heads=config.heads)
    torch.manual_seed(config.seed)
    net = PartNet(net_config).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    start = resume_state(out, {"net": net, "optimizer": optimizer})
    by_class = {c: np.array([i for i, s in enumerate(shapes) if s.class_name == c]) for c in schema.classes}
    part_count = {c: len(schema.part_names(c)) for c in schema.classes}
    log = open(out / "train_log.jsonl", "a")
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="train parts", disable=not progress)
    net.train()
    for step in bar:
        rng = np.random.default_rng([config.seed, step])
        batch = training_batch(shapes, by_class, part_count, config, rng)
        query, support_shapes, support_parts, target, counts = (torch.from_numpy(a).to(device) for a in batch)
        loss = part_loss(net(query, support_shapes, support_parts), target, query, counts)
        optimizer_step(optimizer, loss, net.parameters(),
                       warmup_cosine(config.learning_rate, step, config.warmup_steps, config.steps), clip=None)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower the learning rate")
        log.write(json.dumps({"step": step, "loss": round(loss.item(), 5)}) + "\n")
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            log.flush()
            save_checkpoint(out / "checkpoints", step + 1, {"net": net.state_dict(), "optimizer": optimizer.state_dict()})
    log.close()
    save_part_model(out, net, schema, SupportBank.build(shapes, config.bank_per_class, np.random.default_rng(config.seed)),
                    config.supports)
    return out


def training_batch(shapes: list[PartShape], by_class: dict[str, np.ndarray], part_count: dict[str, int],
                   config: PartsTrainConfig, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(query [B, S, S], support shapes [B, k, S, S], support parts [B, k, S, S], target parts
    [B, S, S], part counts [B]) for one step, all numpy."""
    classes = list(by_class)
    queries, support_shapes, support_parts, targets, counts = [], [], [], [], []
    for _ in range(config.batch_size):
        members = by_class[classes[int(rng.integers(len(classes)))]]
        query_index = int(members[rng.integers(len(members))])
        pool = members[members != query_index]
        pool = pool[rng.choice(len(pool), min(config.candidates, len(pool)), replace=False)]
        pool_shapes = np.stack([shapes[i].shape for i in pool])
        best = pool[np.argsort(-shape_iou(shapes[query_index].shape, pool_shapes), kind="stable")[:config.supports]]
        turn, flip = int(rng.integers(4)), bool(rng.integers(2))  # the same for the query and its supports
        query = shapes[query_index]
        queries.append(_view(query.shape, turn, flip))
        targets.append(_view(query.parts, turn, flip))
        support_shapes.append(_view(np.stack([shapes[i].shape for i in best]), turn, flip))
        support_parts.append(_view(np.stack([shapes[i].parts for i in best]), turn, flip))
        counts.append(part_count[query.class_name])
    return (np.stack(queries), np.stack(support_shapes), np.stack(support_parts).astype(np.int64),
            np.stack(targets).astype(np.int64), np.array(counts, np.int64))


def _view(a: np.ndarray, turn: int, flip: bool) -> np.ndarray:
    """``a`` turned by ``turn`` quarter turns and optionally mirrored (last two axes)."""
    a = np.rot90(a, turn, axes=(-2, -1))
    return np.ascontiguousarray(a[..., ::-1] if flip else a)
