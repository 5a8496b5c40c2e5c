"""Train a detector or a semantic segmenter on mixed sources (a plain loop, as torchvision's
references): SGD with momentum, linear warm-up, gradient clipping, checkpoints, exact resume.

Each step's batch is drawn from a generator seeded by (seed, step), so a resumed run
draws the same batches as an uninterrupted one. Semantic loss is cross-entropy with 255
ignored, averaged over labelled pixels; a batch whose masks are all 255 contributes zero
loss (and is counted in ``train_log.jsonl`` as ``labelled_pixels: 0``).

Detection targets leave out crowd annotations and degenerate boxes; what each source held
and what was left out is logged once and saved in the run's ``data.json``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from synthscene.codecs import IGNORE_INDEX
from synthscene.io import make_dir, naming_write_errors, refuse_nonempty_output, write_bytes, write_json, write_text
from synthscene.provenance import run_record
from synthscene.train.data import DatasetError, Source, open_sources
from synthscene.train.loop import load_latest_checkpoint, save_checkpoint, step_seed, truncate_log, warmup_cosine
from synthscene.train.models import DETECTORS, SEGMENTERS, build_model, load_weights

logger = logging.getLogger(__name__)


class DownstreamConfig(BaseModel):
    """Everything that defines a downstream training run (saved as ``config.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Literal["detection", "semantic"]
    model: str
    sources: tuple[Source, ...] = Field(min_length=1)
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(0.02, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(100, ge=0)
    image_size: int = Field(128, ge=16)  # detectors: resize min side; segmenters: input side
    checkpoint_every: int = Field(200, ge=1)
    seed: int = 0
    init: str | None = None  # local weights (safetensors or torch file)
    # detection: train on these categories only (e.g. an open-vocabulary split's base classes)
    classes: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _model_fits_task(self):
        known = DETECTORS if self.task == "detection" else SEGMENTERS
        if self.model not in known:
            raise ValueError(f"model {self.model!r} is not a {self.task} model; choose one of {', '.join(known)}")
        if self.task != "detection" and any(s.image_roots for s in self.sources):
            raise ValueError("image roots apply to COCO (detection) sources only")
        if self.task != "detection" and self.classes:
            raise ValueError("classes apply to COCO (detection) sources only")
        if self.model.startswith("deeplabv3") and self.batch_size < 2:
            raise ValueError(f"{self.model} needs --batch-size >= 2: the BatchNorm after its image-level pooling "
                             "sees one value per channel in a batch of one image")
        return self


def train_downstream(config: DownstreamConfig, out: str | Path, resume: bool = False, progress: bool = True,
                     device: str = "cpu", workers: int = 0) -> Path:
    """Train and save ``out/model.safetensors`` (+ ``config.json``, ``classes.json``).

    ``device``: where the model trains (batches are drawn and decoded on the CPU either
    way, so the draws do not depend on it). ``workers``: ``DataLoader`` processes that
    decode the next batches while the model trains on this one (0: in this process);
    the batches are the same with any number."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    device = torch.device(device)
    out = Path(out)
    data = open_sources(config.task, list(config.sources), list(config.classes) if config.classes else None,
                        progress=progress)
    _check_masks(config, data)
    _log_left_out(data.reports)
    torch.manual_seed(config.seed)
    model = build_model(config.model, len(data.class_names) + 1, config.image_size, 2 * config.image_size)
    if config.init:
        load_weights(model, config.init, config.model)
    model.to(device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=config.learning_rate, momentum=0.9, weight_decay=config.weight_decay)
    start = _prepare(out, config, data.class_names, model, optimizer, resume)
    if not (out / "data.json").is_file():
        write_json(out / "data.json", data.reports, indent=2)
    log_path = out / "train_log.jsonl"
    log = open(log_path, "a")
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc=f"train {config.model}",
               disable=not progress)
    model.train()
    loader = torch.utils.data.DataLoader(data.dataset, batch_sampler=StepBatches(data, config, start),
                                         num_workers=workers, collate_fn=list, persistent_workers=False)
    for step, batch in zip(bar, loader):
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(config.learning_rate, step, config.warmup_steps, config.steps)
        # torchvision's RPN / RoI samplers and dropout draw from the global generator: seeded
        # per step, a resumed run draws what an uninterrupted one does
        torch.manual_seed(step_seed(config.seed, step))
        loss, parts = _loss(model, [_to(item, device) for item in batch], config)
        optimizer.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 10.0)
            optimizer.step()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower the learning rate")
        with naming_write_errors(log_path):
            log.write(json.dumps({"step": step, "loss": round(loss.item(), 5), **parts}) + "\n")
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            with naming_write_errors(log_path):
                log.flush()
            _save_checkpoint(out, step + 1, model, optimizer)
    log.close()
    from safetensors.torch import save

    write_bytes(out / "model.safetensors", save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}))
    return out


class StepBatches:
    """The batch sampler of a run from step ``start``: step n's indices are drawn by a
    generator seeded with (seed, n), so a resumed run draws what an uninterrupted one does,
    with or without loader workers."""

    def __init__(self, data, config: DownstreamConfig, start: int):
        self.data, self.config, self.start = data, config, start

    def __len__(self) -> int:
        return self.config.steps - self.start

    def __iter__(self):
        for step in range(self.start, self.config.steps):
            generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
            yield self.data.draw(self.config.batch_size, generator)


def _to(item, device: torch.device):
    """An (image, target) pair on ``device``."""
    image, target = item
    if isinstance(target, dict):
        target = {k: v.to(device) if torch.is_tensor(v) else v for k, v in target.items()}
    else:
        target = target.to(device)
    return image.to(device), target


def _check_masks(config: DownstreamConfig, data) -> None:
    """A Mask R-CNN needs masks: refuse box-only COCO sources before anything is written."""
    if config.task != "detection" or not config.model.startswith("maskrcnn"):
        return
    for source, dataset in zip(config.sources, data.dataset.datasets):
        if not dataset.has_masks:
            raise DatasetError(f"{source.path} has box-only annotations (no segmentation): {config.model} needs "
                               "masks; train a fasterrcnn_* model on it")


def _log_left_out(reports: list[dict]) -> None:
    """Say once per source what training leaves out (also saved in the run's data.json)."""
    for report in reports:
        parts = [f"{count} annotation(s) for {reason.replace('_', ' ')}" for reason, count in
                 report.get("dropped", {}).items()]
        if report.get("crowd_ignored"):
            parts.append(f"{report['crowd_ignored']} crowd annotation(s)")
        if parts:
            logger.warning("%s: training leaves out %s", report["source"], ", ".join(parts))
        if report.get("mask_from_box"):
            logger.warning("%s: %d box-only annotation(s) among masked ones train with their box as the mask",
                           report["source"], report["mask_from_box"])


def _loss(model, batch, config: DownstreamConfig) -> tuple[torch.Tensor, dict]:
    images = [image for image, _ in batch]
    if config.task == "detection":
        losses = model(images, [target for _, target in batch])
        return sum(losses.values()), {k: round(v.item(), 5) for k, v in losses.items()}
    size = (config.image_size, config.image_size)
    inputs = torch.stack([_resize(i, size) for i in images])
    targets = torch.stack([F.interpolate(m[None, None].float(), size=size, mode="nearest")[0, 0].long()
                           for _, m in batch])
    logits = model(_normalise(inputs))["out"]
    labelled = int((targets != IGNORE_INDEX).sum())
    loss = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum") / max(1, labelled)
    return loss, {"labelled_pixels": labelled}


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]


def _normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor([0.485, 0.456, 0.406], device=images.device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def _prepare(out: Path, config: DownstreamConfig, class_names, model, optimizer, resume: bool) -> int:
    """Write the run's config on a new run; on resume, load the latest checkpoint."""
    config_json = config.model_dump_json(indent=2)
    if resume:
        if not (out / "config.json").is_file():
            raise FileNotFoundError(f"cannot resume: {out}/config.json does not exist")
        if DownstreamConfig.model_validate_json((out / "config.json").read_text()) != config:
            raise ValueError(f"cannot resume: the configuration differs from the one {out} was started with")
        state = load_latest_checkpoint(out / "checkpoints")
        if state is None:  # killed before the first checkpoint: start over, and so does the log
            truncate_log(out / "train_log.jsonl", 0)
            return 0
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        truncate_log(out / "train_log.jsonl", state["step"])
        return int(state["step"])
    refuse_nonempty_output(out, "use --resume to continue it")
    make_dir(out / "checkpoints")
    write_text(out / "config.json", config_json)
    write_json(out / "classes.json", ["background", *class_names])
    write_json(out / "run.json", run_record(json.loads(config_json)), indent=2)
    return 0


def _save_checkpoint(out: Path, step: int, model, optimizer) -> None:
    save_checkpoint(out / "checkpoints", step, {"model": model.state_dict(), "optimizer": optimizer.state_dict()})


@torch.no_grad()
def predict_semantic(model, images: list[np.ndarray], image_size: int) -> list[np.ndarray]:
    """uint8 masks at each image's size."""
    model.eval()
    device = next(model.parameters()).device
    masks = []
    for image in images:
        tensor = torch.from_numpy(image).permute(2, 0, 1).float()[None].to(device) / 255.0
        logits = model(_normalise(F.interpolate(tensor, size=(image_size, image_size), mode="bilinear",
                                                align_corners=False)))["out"]
        logits = F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)
        masks.append(logits.argmax(1)[0].byte().cpu().numpy())
    return masks


@torch.no_grad()
def predict_instances(model, dataset, class_names: list[str], categories: list[dict],
                      score_threshold: float = 0.05) -> list[dict]:
    """COCO results of ``model`` on every image of an ``InstanceDataset``; labels map to the
    ground truth's category ids by name."""
    from synthscene.codecs import mask_to_rle

    by_name = {c["name"]: c["id"] for c in categories}
    model.eval()
    device = next(model.parameters()).device
    results = []
    for index in range(len(dataset)):
        image, target = dataset[index]
        output = {k: v.cpu() for k, v in model([image.to(device)])[0].items()}
        keep = output["scores"] >= score_threshold
        masks = output.get("masks")
        for k in torch.nonzero(keep).flatten().tolist():
            name = class_names[int(output["labels"][k]) - 1]
            if name not in by_name:
                continue
            x1, y1, x2, y2 = output["boxes"][k].tolist()
            result = {"image_id": target["image_id"], "category_id": by_name[name], "score": float(output["scores"][k]),
                      "bbox": [x1, y1, x2 - x1, y2 - y1]}
            if masks is not None:
                result["segmentation"] = mask_to_rle((masks[k, 0] > 0.5).numpy())
            results.append(result)
    return results


def _evaluable_truth(truth: dict) -> dict:
    """Ground truth both evaluators accept: a missing ``area`` is the box's; an annotation
    without ``segmentation`` (box-only among masked ones) gets its box as its mask, as in
    training."""
    annotations = []
    for annotation in truth["annotations"]:
        if "bbox" in annotation and ("area" not in annotation or not annotation.get("segmentation")):
            x, y, w, h = annotation["bbox"]
            annotation = {"area": max(0.0, w) * max(0.0, h), **annotation}
            if not annotation.get("segmentation"):
                annotation["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
        annotations.append(annotation)
    return {**truth, "annotations": annotations}


def load_trained(run: str | Path):
    """(model in eval mode, its config, its class names without background) of a finished
    ``synthscene train`` run."""
    run = Path(run)
    for name in ("config.json", "classes.json", "model.safetensors"):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run} has no {name}: not a finished synthscene train run")
    config = DownstreamConfig.model_validate_json((run / "config.json").read_text())
    class_names = json.loads((run / "classes.json").read_text())[1:]
    model = build_model(config.model, len(class_names) + 1, config.image_size, 2 * config.image_size)
    load_weights(model, run / "model.safetensors", config.model)
    return model.eval(), config, class_names


def evaluate_trained(run: str | Path, data: str | Path, backend: str = "auto", image_roots=None,
                     device: str = "cpu") -> dict:
    """Scores of a trained run on a held-out source of its task: box (and mask) AP for a
    detector on a COCO / LVIS file (any file ``read_coco`` opens; ``image_roots``: its image
    folders, tried in order), mIoU (255 ignored) for a segmenter on a semantic folder. A
    Mask R-CNN on a box-only file gets box AP only."""
    from synthscene.evaluation.detection import evaluate_detections, load_ground_truth
    from synthscene.evaluation.semantic import confusion_matrix, miou_from_confusion
    from synthscene.train.data import InstanceDataset, SemanticDataset, is_yolo, load_instances_file

    model, config, class_names = load_trained(run)
    model.to(torch.device(device))
    if config.task == "detection":
        dataset = InstanceDataset(data, class_names, image_roots, split="val")
        truth = load_ground_truth(load_instances_file(data, "val")[0] if is_yolo(data) else data)
        detections = predict_instances(model, dataset, class_names, truth["categories"])
        kinds = ("bbox", "segm") if config.model.startswith("maskrcnn") and dataset.has_masks else ("bbox",)
        truth = _evaluable_truth(truth)
        return {kind: evaluate_detections(truth, detections, kind, backend) for kind in kinds}
    if image_roots:
        raise ValueError("image roots apply to COCO (detection) sources only")
    dataset = SemanticDataset(data, class_names, split="val")
    confusion = np.zeros((len(class_names) + 1,) * 2, np.int64)
    for index in range(len(dataset)):
        image, mask = dataset[index]
        prediction = predict_semantic(model, [(image.permute(1, 2, 0) * 255).round().byte().numpy()],
                                      config.image_size)[0]
        confusion += confusion_matrix(prediction, mask.numpy(), len(class_names) + 1, IGNORE_INDEX)
    miou, per_class = miou_from_confusion(confusion)
    return {"miou": miou, "per_class": {n: (None if np.isnan(v) else float(v))
                                        for n, v in zip(["background", *class_names], per_class)}}
