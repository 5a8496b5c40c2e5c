"""``synthscene train-grounding``: teach a grounding head to box what the generator draws.

1. plan: per base and per novel class, prompts naming it alone or with a second class of
   its group (half each), each with its own seed (``prompts.jsonl``);
2. generate them, keeping the input latents of the last denoising step
   (``generated/shard-*.npz``, each written atomically; a resumed run skips made shards);
3. the teacher (a ``synthscene train --task detection`` run on real base-class data) labels
   the base images: boxes of the prompt's classes with score >= ``teacher_threshold``
   (``pseudo_labels.json``); images left without a box are dropped and counted;
4. train the head on the last step's features, computed once per image from its latents
   by one guided denoiser call and kept in memory (float16; the denoiser is frozen, so they
   never change), and with ``head.class_evidence`` on the generator's evidence for each named
   class (``grounding.evidence``), each batch image flipped left-right at random: base batches
   first; from ``self_training_from`` of the schedule an EMA copy of the head (started there
   from the trained weights) labels novel batches (score > ``novel_threshold``, prompt classes
   only, images without a box dropped) and base and novel batches alternate. With
   ``ignore_unboxed_classes`` a class an image's prompt names but its pseudo-labels box
   nowhere is left out of that image's classification loss: its object is there. Checkpoints every
   ``checkpoint_every`` steps; a batch and its flips are drawn from (seed, step), so a
   resumed run trains exactly as an uninterrupted one;
5. save ``head.safetensors`` (the trained weights), ``head_ema.safetensors`` (the EMA) and
   ``head.json`` (what they read).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from synthscene.grounding.head import GroundingHead, HeadConfig, predict_boxes
from synthscene.grounding.matching import LossWeights, set_loss
from synthscene.grounding.text import TEMPLATE
from synthscene.io import make_dir, refuse_nonempty_output, write_json, write_jsonl, write_text
from synthscene.plan import list_objects, sample_seed
from synthscene.provenance import run_record
from synthscene.train.loop import load_latest_checkpoint, save_checkpoint, truncate_log, warmup_cosine

HEAD_FILE, EMA_FILE, HEAD_INFO = "head.safetensors", "head_ema.safetensors", "head.json"


class HeadSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(128, ge=8)
    queries: int = Field(30, ge=1)
    layers: int = Field(3, ge=1)
    heads: int = Field(4, ge=1)
    # the generator's per-class denoising evidence as one more class term (``grounding.evidence``);
    # off by default: it fixed classes in two-class images but did not raise box AP50 (README)
    class_evidence: bool = False
    proposal_strides: float | None = Field(None, gt=0)  # see HeadConfig


class GroundingTrainConfig(BaseModel):
    """Everything that defines a train-grounding run (saved as ``config.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = "embedded"  # the generator (e.g. fine-tuned on the user's data)
    teacher: str  # a synthscene train --task detection run that knows the base classes
    base_classes: tuple[str, ...] = Field(min_length=1)
    novel_classes: tuple[str, ...] = ()
    images_per_base_class: int = Field(200, ge=1)
    images_per_novel_class: int = Field(400, ge=0)
    prompt_template: str = "a photo of {objects}"
    steps_per_image: int = Field(25, ge=2)  # denoising steps
    guidance: float = Field(7.5, ge=0.0)
    generation_batch: int = Field(16, ge=1)
    teacher_threshold: float = Field(0.8, ge=0, le=1)
    novel_threshold: float = Field(0.4, ge=0, le=1)
    # a class the prompt names but the pseudo-labeller boxed nowhere in an image is left out of
    # that image's classification loss, rather than taught as background (its object is there);
    # off by default: measured, it did not raise box AP50 (README)
    ignore_unboxed_classes: bool = False
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(16, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(100, ge=0)
    grad_clip: float = Field(0.1, gt=0)
    ema_momentum: float = Field(0.999, ge=0, lt=1)
    self_training_from: float = Field(0.5, ge=0, le=1)  # share of the schedule
    flip: bool = True  # flip each batch image (features and boxes) left-right with probability 1/2
    head: HeadSettings = HeadSettings()
    loss: LossWeights = LossWeights()
    checkpoint_every: int = Field(200, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _classes(self):
        both = set(self.base_classes) & set(self.novel_classes)
        if both:
            raise ValueError(f"classes cannot be both base and novel: {', '.join(sorted(both))}")
        for group in (self.base_classes, self.novel_classes):
            if len(set(group)) != len(group):
                raise ValueError(f"repeated class name in {list(group)}")
        if "{objects}" not in self.prompt_template:
            raise ValueError("prompt_template must contain {objects}")
        return self

    @property
    def classes(self) -> tuple[str, ...]:
        return self.base_classes + self.novel_classes


@dataclass(frozen=True)
class PromptItem:
    index: int
    group: str  # "base" or "novel"
    seed: int
    prompt: str
    classes: tuple[str, ...]  # named by the prompt, in order

    def to_json(self) -> dict:
        return {"index": self.index, "group": self.group, "seed": self.seed, "prompt": self.prompt,
                "classes": list(self.classes)}

    @classmethod
    def from_json(cls, row: dict) -> PromptItem:
        return cls(row["index"], row["group"], row["seed"], row["prompt"], tuple(row["classes"]))


def plan_prompts(config: GroundingTrainConfig) -> list[PromptItem]:
    """Per class of each group, its images' prompts: the class alone or with a second class
    of the same group (50/50), so base images name only classes the teacher knows."""
    items = []
    groups = (("base", config.base_classes, config.images_per_base_class),
              ("novel", config.novel_classes, config.images_per_novel_class))
    for group, names, count in groups:
        for name in names:
            for _ in range(count):
                seed = sample_seed(config.seed, len(items))
                rng = np.random.default_rng(seed)
                others = [n for n in names if n != name]
                classes = (name,) if not others or rng.random() < 0.5 else (name, str(rng.choice(others)))
                prompt = config.prompt_template.format(objects=list_objects(list(classes)))
                items.append(PromptItem(len(items), group, seed, prompt, classes))
    return items


# ---- checks before anything is written ------------------------------------------------


def load_teacher(config: GroundingTrainConfig):
    """The teacher detector and its class names; refuses one that does not know every base
    class, or that knows a novel class (then the novel classes are not novel)."""
    from synthscene.train.downstream import load_trained

    teacher, teacher_config, names = load_trained(config.teacher)
    if teacher_config.task != "detection":
        raise ValueError(f"teacher {config.teacher} is a {teacher_config.task} run; it must be a detection run")
    missing = [c for c in config.base_classes if c not in names]
    if missing:
        raise ValueError(f"teacher {config.teacher} does not know the base class(es) {', '.join(missing)} "
                         f"(it knows {', '.join(names)})")
    known = [c for c in config.novel_classes if c in names]
    if known:
        raise ValueError(f"teacher {config.teacher} knows the novel class(es) {', '.join(known)}: novel classes "
                         "are the ones the teacher never saw")
    return teacher, names


def check_prompts(tokenizer, config: GroundingTrainConfig, items: list[PromptItem]) -> None:
    from synthscene.models.tokens import attention_word, token_indices

    for name in config.classes:
        token_indices(tokenizer, TEMPLATE.format(name=attention_word(name)), attention_word(name))
    limit = tokenizer.model_max_length
    for item in items:
        if len(tokenizer(item.prompt).input_ids) > limit:
            raise ValueError(f"prompt {item.index} is longer than {limit} tokens: {item.prompt[:80]!r}...")


# ---- the run --------------------------------------------------------------------------


# a run's images (and the teacher's labels) depend on these settings only
GENERATION_FIELDS = ("model", "base_classes", "novel_classes", "images_per_base_class", "images_per_novel_class",
                     "prompt_template", "steps_per_image", "guidance", "generation_batch", "seed")
TEACHER_FIELDS = ("teacher", "teacher_threshold")


def train_grounding(config: GroundingTrainConfig, out: str | Path, resume: bool = False, device: str = "cpu",
                    progress: bool = True, images_from: str | Path | None = None) -> Path:
    """Run (or continue) every stage; see the module docstring. ``images_from``: a new run
    starts from the generated images (and, with the same teacher, its labels) of that
    earlier run, whose generation settings must be the same: to retrain a head with other
    training settings without generating again."""
    from synthscene.grounding.text import class_embeddings
    from synthscene.models.info import load_tokenizer, model_info, require_family
    from synthscene.models.load import load_pipeline

    out = Path(out)
    require_family(model_info(config.model), "train-grounding (UNet features)")
    items = plan_prompts(config)
    check_prompts(load_tokenizer(config.model), config, items)
    teacher, teacher_names = load_teacher(config)
    source = _images_source(images_from, config, resume)
    pipe = load_pipeline(config.model, device=device)
    pipe.set_progress_bar_config(disable=True)
    _prepare(out, config, items, resume)
    if source is not None:
        _reuse_images(source, out, config)

    images, latents, timestep = _generate(pipe, config, items, out, progress)
    labels = _teacher_labels(teacher, teacher_names, config, items, images, out, progress)
    embeddings = class_embeddings(pipe, list(config.classes))
    _train(pipe, config, items, latents, timestep, labels, embeddings, images.shape[1:3], out, device, progress)
    return out


def _images_source(images_from, config: GroundingTrainConfig, resume: bool) -> Path | None:
    if images_from is None:
        return None
    if resume:
        raise ValueError("images_from starts a new run; a resumed run already has its images")
    source = Path(images_from)
    if not (source / "config.json").is_file():
        raise FileNotFoundError(f"cannot reuse images: {source} is not a train-grounding run (no config.json)")
    other = GroundingTrainConfig.model_validate_json((source / "config.json").read_text())
    differs = [f for f in GENERATION_FIELDS if getattr(other, f) != getattr(config, f)]
    if differs:
        raise ValueError(f"cannot reuse the images of {source}: its {', '.join(differs)} differ from this run's")
    return source


def _reuse_images(source: Path, out: Path, config: GroundingTrainConfig) -> None:
    import shutil

    for shard in sorted((source / "generated").glob("shard-*.npz")):
        shutil.copyfile(shard, out / "generated" / shard.name)
    other = GroundingTrainConfig.model_validate_json((source / "config.json").read_text())
    if all(getattr(other, f) == getattr(config, f) for f in TEACHER_FIELDS) and (source / "pseudo_labels.json").is_file():
        shutil.copyfile(source / "pseudo_labels.json", out / "pseudo_labels.json")


def _prepare(out: Path, config: GroundingTrainConfig, items: list[PromptItem], resume: bool) -> None:
    if resume:
        if not (out / "config.json").is_file():
            raise FileNotFoundError(f"cannot resume: {out}/config.json does not exist")
        if GroundingTrainConfig.model_validate_json((out / "config.json").read_text()) != config:
            raise ValueError(f"cannot resume: the configuration differs from the one {out} was started with")
        return
    from synthscene.models.info import model_fingerprint

    refuse_nonempty_output(out, "use --resume to continue it")
    make_dir(out / "generated")
    make_dir(out / "checkpoints")
    write_jsonl(out / "prompts.jsonl", [i.to_json() for i in items])
    config_json = config.model_dump_json(indent=2)
    write_json(out / "run.json", run_record(json.loads(config_json), model_fingerprint(config.model)), indent=2)
    write_text(out / "config.json", config_json)  # last: a folder with a config has its plan


def _generate(pipe, config: GroundingTrainConfig, items: list[PromptItem], out: Path, progress: bool):
    """Images and last-step input latents of every prompt, shard by shard."""
    from synthscene.grounding.generate import generate_with_latents

    batch = config.generation_batch
    bar = tqdm(total=len(items), desc="generate", disable=not progress)
    images, latents, timestep = [], [], None
    for number, start in enumerate(range(0, len(items), batch)):
        path = out / "generated" / f"shard-{number:05d}.npz"
        if not path.is_file():
            chunk = items[start : start + batch]
            made = generate_with_latents(pipe, [i.prompt for i in chunk], [i.seed for i in chunk],
                                         config.steps_per_image, config.guidance)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, images=made.images, latents=made.latents.numpy(), timestep=np.array(made.timestep))
            tmp.replace(path)
        with np.load(path, allow_pickle=False) as shard:
            images.append(shard["images"])
            latents.append(shard["latents"])
            timestep = int(shard["timestep"])
        bar.update(len(images[-1]))
    bar.close()
    return np.concatenate(images), torch.from_numpy(np.concatenate(latents)), timestep


@torch.no_grad()
def _teacher_labels(teacher, teacher_names: list[str], config: GroundingTrainConfig, items: list[PromptItem],
                    images: np.ndarray, out: Path, progress: bool) -> dict[int, dict]:
    """{image index: {"boxes": [[x0, y0, x1, y1]], "classes": [k], "scores": [s]}} for the
    base images the teacher boxed (``k`` indexes the prompt's classes)."""
    path = out / "pseudo_labels.json"
    if not path.is_file():
        labels, dropped = {}, 0
        base = [i for i in items if i.group == "base"]
        for item in tqdm(base, desc="teacher labels", disable=not progress):
            image = torch.from_numpy(images[item.index]).permute(2, 0, 1).float() / 255.0
            output = teacher([image])[0]
            boxes, classes, scores = [], [], []
            for box, label, score in zip(output["boxes"].tolist(), output["labels"].tolist(),
                                         output["scores"].tolist()):
                name = teacher_names[label - 1]
                if score >= config.teacher_threshold and name in item.classes:
                    boxes.append([round(v, 3) for v in box])
                    classes.append(item.classes.index(name))
                    scores.append(round(score, 4))
            if boxes:
                labels[str(item.index)] = {"boxes": boxes, "classes": classes, "scores": scores}
            else:
                dropped += 1
        write_json(path, {"images": len(base), "dropped_without_box": dropped, "labels": labels})
    data = json.loads(path.read_text())
    if not data["labels"]:
        raise ValueError(f"the teacher boxed none of the {data['images']} base images with score >= "
                         f"{config.teacher_threshold}: lower teacher_threshold or train the teacher longer")
    return {int(k): v for k, v in data["labels"].items()}


def _class_inputs(embeddings: torch.Tensor, config: GroundingTrainConfig, batch: list[PromptItem]):
    """Per image its prompt's class embeddings [B, 2, D] and which are real [B, 2]."""
    index = {name: k for k, name in enumerate(config.classes)}
    width = max(len(i.classes) for i in batch)
    classes = torch.zeros(len(batch), width, embeddings.shape[1])
    mask = torch.zeros(len(batch), width, dtype=torch.bool)
    for b, item in enumerate(batch):
        for k, name in enumerate(item.classes):
            classes[b, k] = embeddings[index[name]]
            mask[b, k] = True
    return classes, mask


def _targets(boxes_xyxy: list, classes: list, size: tuple[int, int], flip: bool = False,
             named: int | None = None) -> dict:
    """Normalised cxcywh targets of pixel xyxy boxes (mirrored when the image is flipped).
    ``named``: how many classes the image's prompt names; those without a box are marked
    ``"unlabelled"`` (left out of the classification loss, see ``set_loss``)."""
    from torchvision.ops import box_convert

    height, width = size
    boxes = torch.tensor(boxes_xyxy, dtype=torch.float32).reshape(-1, 4) / torch.tensor([width, height] * 2)
    boxes = box_convert(boxes, "xyxy", "cxcywh")
    if flip:
        boxes[:, 0] = 1 - boxes[:, 0]
    target = {"classes": torch.tensor(classes, dtype=torch.long), "boxes": boxes}
    if named is not None:
        target["unlabelled"] = torch.tensor([k for k in range(named) if k not in set(classes)], dtype=torch.long)
    return target


class FeatureCache:
    """The last step's features of the training images, computed once (the denoiser is
    frozen) and kept as float16: 0.8 MB an image for the embedded model; optionally their
    class evidence maps (``grounding.evidence``, float32, 8 KB an image)."""

    def __init__(self, indices: list[int], features: list[torch.Tensor], evidence: torch.Tensor | None = None):
        """``features``: one [N, C, h, w] per level, row r belonging to image ``indices[r]``;
        ``evidence``: [N, K, h, w] or None."""
        self.row = {index: row for row, index in enumerate(indices)}
        self.features = [f.half() for f in features]
        self.evidence = evidence
        self.levels = tuple((int(f.shape[2]), int(f.shape[3]), int(f.shape[1])) for f in features)

    @classmethod
    def compute(cls, pipe, items: list[PromptItem], latents: torch.Tensor, timestep: int,
                config: GroundingTrainConfig, progress: bool) -> FeatureCache:
        from synthscene.grounding.evidence import class_evidence
        from synthscene.grounding.generate import last_step_features
        from synthscene.models.tokens import attention_word

        levels, evidence = None, None
        if config.head.class_evidence:
            evidence = torch.zeros(len(items), max(len(i.classes) for i in items), *latents.shape[-2:])
        chunk = config.generation_batch
        for start in tqdm(range(0, len(items), chunk), desc="features", disable=not progress):
            part = items[start : start + chunk]
            part_latents = latents[[i.index for i in part]]
            made = last_step_features(pipe, part_latents, timestep, [i.prompt for i in part], config.guidance)
            if levels is None:
                levels = [torch.empty((len(items), *f.shape[1:]), dtype=torch.float16) for f in made]
            for stored, feature in zip(levels, made):
                stored[start : start + len(part)] = feature.half()
            if evidence is not None:
                maps = class_evidence(pipe, part_latents, [[attention_word(c) for c in i.classes] for i in part],
                                      [i.seed for i in part])
                evidence[start : start + len(part), : maps.shape[1]] = maps
        return cls([i.index for i in items], levels, evidence)

    def batch(self, indices: list[int], flips: torch.Tensor) -> list[torch.Tensor]:
        """float32 [B, C, h, w] per level; images where ``flips`` is True mirrored left-right."""
        rows = [self.row[i] for i in indices]
        out = []
        for stored in self.features:
            feature = stored[rows].float()
            feature[flips] = feature[flips].flip(-1)
            out.append(feature)
        return out

    def evidence_batch(self, indices: list[int], flips: torch.Tensor, width: int) -> torch.Tensor | None:
        """[B, width, h, w] evidence of the images' first ``width`` classes (mirrored as
        ``batch`` mirrors), or None."""
        if self.evidence is None:
            return None
        evidence = self.evidence[[self.row[i] for i in indices], :width]
        evidence[flips] = evidence[flips].flip(-1)
        return evidence


def _pseudo_targets(ema, features, classes, mask, evidence, threshold: float, size,
                    ignore_unboxed: bool) -> list[dict | None]:
    """The EMA head's boxes above ``threshold`` (class-wise NMS at IoU 0.5); None where an
    image has none."""
    from torchvision.ops import batched_nms

    predictions = predict_boxes(ema(features, classes, mask, evidence), mask, size, threshold)
    targets = []
    for p, named in zip(predictions, mask.sum(1).tolist()):
        keep = batched_nms(p["boxes"], p["scores"], p["classes"], 0.5)
        targets.append(_targets(p["boxes"][keep].tolist(), p["classes"][keep].tolist(), size,
                                named=named if ignore_unboxed else None) if len(keep) else None)
    return targets


def _train(pipe, config: GroundingTrainConfig, items, latents, timestep, labels, embeddings, size, out: Path,
           device: str, progress: bool) -> None:
    from safetensors.torch import save_file
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from synthscene.models.info import model_fingerprint

    size = tuple(int(s) for s in size)
    base = [i for i in items if i.group == "base" and i.index in labels]
    novel = [i for i in items if i.group == "novel"]
    cache = FeatureCache.compute(pipe, base + novel, latents, timestep, config, progress)
    head_config = HeadConfig(levels=cache.levels, text_dim=embeddings.shape[1], **config.head.model_dump())
    torch.manual_seed(config.seed)
    head = GroundingHead(head_config).to(device)
    ema = AveragedModel(head, multi_avg_fn=get_ema_multi_avg_fn(config.ema_momentum))
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    start = _load_checkpoint(out, head, ema, optimizer)
    self_training = round(config.self_training_from * config.steps)
    # the EMA starts from the trained weights where self-training starts: averaged from the
    # random init, 0.999 ** 1000 = 37 % of it was still the init after 1,000 steps
    ema_from = min(self_training, config.steps - 1)
    log = open(out / "train_log.jsonl", "a")
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="train grounding head",
               disable=not progress)
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(config.learning_rate, step, config.warmup_steps, config.steps)
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        use_novel = bool(novel) and step >= self_training and (step - self_training) % 2 == 1
        pool = novel if use_novel else base
        batch = [pool[i] for i in torch.randint(len(pool), (config.batch_size,), generator=generator).tolist()]
        flips = (torch.rand(len(batch), generator=generator) < 0.5) & config.flip
        features = [f.to(device) for f in cache.batch([i.index for i in batch], flips)]
        classes, mask = _class_inputs(embeddings, config, batch)
        classes, mask = classes.to(device), mask.to(device)
        evidence = cache.evidence_batch([i.index for i in batch], flips, mask.shape[1])
        evidence = None if evidence is None else evidence.to(device)
        if use_novel:
            with torch.no_grad():
                targets = _pseudo_targets(ema.module, features, classes, mask, evidence, config.novel_threshold, size,
                                          config.ignore_unboxed_classes)
            kept = [b for b, t in enumerate(targets) if t is not None]
            targets = [targets[b] for b in kept]
            features, classes, mask = [f[kept] for f in features], classes[kept], mask[kept]
            evidence = None if evidence is None else evidence[kept]
        else:
            targets = [_targets(labels[i.index]["boxes"], labels[i.index]["classes"], size, flip,
                                named=len(i.classes) if config.ignore_unboxed_classes else None)
                       for i, flip in zip(batch, flips.tolist())]
        row = {"step": step, "group": "novel" if use_novel else "base", "images": len(targets)}
        if targets:
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            losses = set_loss(head(features, classes, mask, evidence), mask, targets, config.loss)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), config.grad_clip)
            optimizer.step()
            if not math.isfinite(losses["loss"].item()):
                raise FloatingPointError(f"loss became {losses['loss'].item()} at step {step}; lower the learning rate")
            row.update({k: round(v.item(), 5) for k, v in losses.items()})
            bar.set_postfix(loss=f"{losses['loss'].item():.3f}", group=row["group"])
        if step >= ema_from:
            ema.update_parameters(head)  # the first update copies the weights
        log.write(json.dumps(row) + "\n")
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            log.flush()
            _save_checkpoint(out, step + 1, head, ema, optimizer)
    log.close()
    # the trained weights are the head; the EMA (the self-training teacher) is kept beside them
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, out / HEAD_FILE)
    save_file({k: v.contiguous() for k, v in ema.module.state_dict().items()}, out / EMA_FILE)
    write_json(out / HEAD_INFO, {
        "head": head_config.model_dump(mode="json"), "model": config.model,
        "model_fingerprint": model_fingerprint(config.model), "base_classes": list(config.base_classes),
        "novel_classes": list(config.novel_classes), "timestep": timestep, "guidance": config.guidance,
        "steps_per_image": config.steps_per_image, "image_size": list(size),
    }, indent=2)


def _load_checkpoint(out: Path, head, ema, optimizer) -> int:
    state = load_latest_checkpoint(out / "checkpoints")
    if state is None:  # killed before the first checkpoint: start over, and so does the log
        truncate_log(out / "train_log.jsonl", 0)
        return 0
    head.load_state_dict(state["head"])
    ema.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    truncate_log(out / "train_log.jsonl", state["step"])
    return int(state["step"])


def _save_checkpoint(out: Path, step: int, head, ema, optimizer) -> None:
    save_checkpoint(out / "checkpoints", step, {"head": head.state_dict(), "ema": ema.state_dict(),
                                                "optimizer": optimizer.state_dict()})
