"""Text -> image + semantic mask + instances (after Dataset Diffusion, NeurIPS 2023).

The image is generated from the prompt alone; labels are read while it is made.

- ``faithful`` (Dataset Diffusion): the class names are encoded as a separate "class
  prompt" (the caption, then "; " and the class words, so their embeddings see the
  caption); each cross-attention layer scores the image's queries against its keys. Maps
  are refined with exponentiated self-attention, min-max normalised per class and
  thresholded into a semantic mask with an uncertain band (255).
- ``ours``: objectness is the prompt's own cross-attention to everything from the first
  class word on (on the embedded model the end-of-text and padding tokens carry the
  objects, on SD the words do), over the later steps, spread once along the self-attention
  (which fills objects out to their edges and drops stray hot spots); GrabCut and a colour
  matte cut it against the image (``synthscene.label.refine``); the foreground splits into
  one segment per object by colour, and each segment takes the named class with the
  lowest denoising error (``synthscene.label.classify``). Per-class min-max is gone, so a
  named class that was not drawn claims no pixels. Edge pixels that are a near-even blend
  of object and background colour are uncertain (255) in the semantic mask, as VOC marks
  object borders; instance masks keep them (cut at half and half).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synthscene.capture import AttentionStore, CaptureConfig, capture_attention, encode_for_store
from synthscene.capture.tokens import attention_word, token_indices
from synthscene.label.attention_maps import (
    IGNORE_INDEX,
    class_maps,
    min_max_per_class,
    objectness_map,
    refine_with_self_attention,
    semantic_from_scores,
    upsample_scores,
)
from synthscene.label.classify import assign_segments, denoising_errors
from synthscene.label.instances import instances_from_semantic
from synthscene.label.refine import blend_alpha, colour_segments, grabcut_foreground
from synthscene.methods.runner import run_shards
from synthscene.models.load import load_pipeline
from synthscene.models.schedulers import set_scheduler
from synthscene.plan import SampleTask, plan_dataset, sample_generator, sample_seed
from synthscene.records import Sample
from synthscene.spec import DatasetSpec, Text2LabelsSpec


def class_prompt(task: SampleTask) -> tuple[str, int]:
    """The text whose keys give the label maps, and where its class part starts."""
    head = f"{task.prompt}; "
    return head + " ".join(attention_word(w) for w in task.words), len(head)


def generate_dataset(spec: DatasetSpec, out: str | Path, resume: bool = False, progress: bool = True,
                     device: str = "cpu") -> Path:
    """Make ``spec.num_samples`` labelled samples in ``out`` (see ``synthscene.store``), running
    the model on ``device`` (recorded in ``run.json``)."""
    # plan, load the model, and check every prompt before writing anything
    tasks = plan_dataset(spec)
    pipe = load_pipeline(spec.model, device=device)
    set_scheduler(pipe, spec.sampler.scheduler)
    check_recipe(pipe, spec.text2labels)
    for task in tasks:
        check_task(pipe.tokenizer, task)
    return run_shards(spec, Path(out), tasks, pipe, lambda batch: label_batch(pipe, batch, spec), resume, progress,
                      "text2labels")


def check_recipe(pipe, params: Text2LabelsSpec) -> None:
    """The ``ours`` recipe's diffusion classifier needs a text-only UNet and a training
    schedule that reaches its timesteps."""
    if params.recipe != "ours":
        return
    if pipe.unet.config.addition_embed_type is not None:
        raise ValueError("recipe 'ours' classifies regions with a text-conditioned UNet (SD 1.x / 2.x); "
                         "this model needs extra conditioning (SDXL): use recipe 'faithful'")
    steps = len(pipe.scheduler.alphas_cumprod)
    if max(params.classifier_timesteps) >= steps:
        raise ValueError(f"classifier_timesteps {params.classifier_timesteps} must be below the model's "
                         f"{steps} training timesteps")


def check_task(tokenizer, task: SampleTask) -> None:
    """Every class word must be in the prompt, inside the 77-token window."""
    limit = tokenizer.model_max_length
    if len(tokenizer(task.prompt).input_ids) > limit:
        raise ValueError(f"prompt of sample {task.index} is longer than {limit} tokens: {task.prompt[:80]!r}...")
    for word in task.words:
        token_indices(tokenizer, task.prompt, attention_word(word))
    text, start = class_prompt(task)
    for word in task.words:
        token_indices(tokenizer, text, attention_word(word), start)


@dataclass
class CapturedBatch:
    """Generated images and what was captured while making them."""

    images: np.ndarray  # uint8 [B, H, W, 3]
    cross: dict  # {(h, w): float [B, T, h, w]}; T: class-prompt tokens (faithful) or prompt tokens (ours)
    self_attention: torch.Tensor | None  # float [B, N, N] (faithful)
    class_errors: list[torch.Tensor | None] | None = None  # per sample [K, h, w] denoising errors (ours)


def capture_batch(pipe, tasks: list[SampleTask], spec: DatasetSpec) -> CapturedBatch:
    """Generate one batch with attention capture; each sample has its own generator."""
    params = spec.text2labels
    faithful = params.recipe == "faithful"
    store = AttentionStore(
        CaptureConfig(cross_resolutions=params.cross_resolutions,
                      self_resolution=params.self_resolution if faithful or params.objectness_self_attention_power
                      else None,
                      step_window=params.step_window),
        num_steps=spec.sampler.steps, guidance=spec.sampler.guidance > 1.0,
        class_embeddings=encode_for_store(pipe, [class_prompt(t)[0] for t in tasks]) if faithful else None,
    )
    final = {}

    def keep_latents(pipeline, step, timestep, tensors):
        final["latents"] = tensors["latents"]
        return tensors

    with torch.no_grad(), capture_attention(pipe.unet, store):
        images = pipe([t.prompt for t in tasks], num_inference_steps=spec.sampler.steps,
                      guidance_scale=spec.sampler.guidance, generator=[sample_generator(t.seed) for t in tasks],
                      output_type="np", callback_on_step_end=keep_latents).images
    class_errors = None if faithful else [_class_errors(pipe, final["latents"][b], task, params)
                                          for b, task in enumerate(tasks)]
    return CapturedBatch((images * 255).round().astype(np.uint8), store.cross_maps(), store.self_map(), class_errors)


def _class_errors(pipe, latents: torch.Tensor, task: SampleTask, params: Text2LabelsSpec) -> torch.Tensor | None:
    """Denoising errors [K, h, w] of one sample under each named class (None for one class)."""
    if len(task.words) == 1:
        return None
    # its own noise stream, so labels do not depend on the batch the sample ran in
    generator = sample_generator(sample_seed(task.seed, 1))
    embeddings = encode_for_store(pipe, [attention_word(w) for w in task.words])
    return denoising_errors(pipe.unet, pipe.scheduler, latents, embeddings, params.classifier_timesteps,
                            params.classifier_repeats, generator)


def label_sample(tokenizer, captured: CapturedBatch, b: int, task: SampleTask, params: Text2LabelsSpec,
                 num_classes: int) -> Sample:
    """Semantic mask, instances and scores of sample ``b`` of a captured batch."""
    image = captured.images[b]
    cross = {hw: m[b] for hw, m in captured.cross.items()}
    if params.recipe == "faithful":
        text, start = class_prompt(task)
        groups = [token_indices(tokenizer, text, attention_word(w), start) for w in task.words]
        scores = label_scores(cross, groups, None if captured.self_attention is None else captured.self_attention[b],
                              params)
        scores = upsample_scores(scores, image.shape[:2])
        semantic = semantic_for_classes(scores, task.class_ids, params)
        full_scores = np.zeros((num_classes, *image.shape[:2]), np.float32)
        full_scores[list(task.class_ids)] = scores.numpy()
    else:
        self_attention = None if captured.self_attention is None else captured.self_attention[b]
        decided, uncertain, full_scores = _label_ours(tokenizer, image, cross, self_attention,
                                                      captured.class_errors[b], task, params, num_classes)
        # instances keep every object pixel; the semantic mask abstains on near-even blends
        instances, dropped = instances_from_semantic(decided, full_scores, params.min_instance_area, num_classes)
        semantic = np.where(uncertain, np.uint8(IGNORE_INDEX), decided)
        meta = {"index": task.index, "class_ids": list(task.class_ids), "dropped_small": dropped}
        return Sample(image, instances, semantic, task.prompt, task.seed, meta)
    instances, dropped = instances_from_semantic(semantic, full_scores, params.min_instance_area, num_classes)
    meta = {"index": task.index, "class_ids": list(task.class_ids), "dropped_small": dropped}
    return Sample(image, instances, semantic, task.prompt, task.seed, meta)


def _label_ours(tokenizer, image: np.ndarray, cross: dict, self_attention: torch.Tensor | None,
                class_errors: torch.Tensor | None, task: SampleTask, params: Text2LabelsSpec,
                num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(semantic uint8 [H, W] with every pixel decided, uncertain bool [H, W], scores float
    [C, H, W]) by the ``ours`` recipe."""
    size = image.shape[:2]
    first = min(token_indices(tokenizer, task.prompt, attention_word(w))[0] for w in task.words)
    spread = self_attention is not None and params.objectness_self_attention_power > 0
    side = round(self_attention.shape[-1] ** 0.5) if spread else None
    objectness = objectness_map(cross, first, (side, side) if spread else None)
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
    errors = None
    if class_errors is not None:
        errors = torch.nn.functional.interpolate(class_errors[None], size=size, mode="bilinear",
                                                 align_corners=False)[0].numpy()
    lookup = np.zeros(segments.max() + 1, np.uint8)
    for segment, best in assign_segments(segments, errors, image, params.colour_group_distance).items():
        lookup[segment] = task.class_ids[best] + 1
    semantic = lookup[segments]
    # an instance's score: its mean objectness
    scores = np.repeat(objectness[None].astype(np.float32), num_classes, axis=0)
    uncertain = np.zeros(size, bool)
    if params.uncertain_blend is not None:
        low, high = params.uncertain_blend
        uncertain = (alpha >= low) & (alpha < high)
    return semantic, uncertain, scores


def label_batch(pipe, tasks: list[SampleTask], spec: DatasetSpec) -> list[Sample]:
    """Generate and label one batch of tasks."""
    captured = capture_batch(pipe, tasks, spec)
    return [label_sample(pipe.tokenizer, captured, b, task, spec.text2labels, len(spec.classes))
            for b, task in enumerate(tasks)]


def label_scores(cross: dict, groups: list[list[int]], self_attention: torch.Tensor | None,
                 params: Text2LabelsSpec) -> torch.Tensor:
    """float [K, h, w] scores in [0, 1] for the K classes named in one prompt."""
    grid = max(cross)
    if self_attention is not None:
        side = round(self_attention.shape[-1] ** 0.5)
        grid = (side, side)
    maps = class_maps(cross, groups, grid)
    if self_attention is not None and params.self_attention_power > 0:
        maps = refine_with_self_attention(maps, self_attention, params.self_attention_power)
    return min_max_per_class(maps)


def semantic_for_classes(scores: torch.Tensor, class_ids, params: Text2LabelsSpec) -> np.ndarray:
    """Semantic mask in the dataset's class numbering (0 background, class id + 1) from the
    scores [K, H, W] of the K classes a prompt names, in prompt order."""
    local = semantic_from_scores(scores, params.foreground, params.background)
    lookup = np.zeros(256, np.uint8)
    lookup[1 : len(class_ids) + 1] = [c + 1 for c in class_ids]
    lookup[IGNORE_INDEX] = IGNORE_INDEX
    return lookup[local]
