"""Text -> image + semantic mask + instances (Dataset Diffusion, NeurIPS 2023).

The image is generated from the prompt alone. Labels are read from attention: the
class names are encoded as a separate "class prompt" (the caption, then "; " and the
class words, so their embeddings see the caption); each cross-attention layer scores the
image's queries against the class prompt's keys. Maps are refined with exponentiated
self-attention and thresholded into a semantic mask with an uncertain band (255).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from synthscene.capture import AttentionStore, CaptureConfig, capture_attention, encode_for_store
from synthscene.capture.tokens import attention_word, token_indices
from synthscene.io import write_json, write_jsonl
from synthscene.label.attention_maps import (
    IGNORE_INDEX,
    class_maps,
    min_max_per_class,
    refine_with_self_attention,
    semantic_from_scores,
    upsample_scores,
)
from synthscene.label.instances import instances_from_semantic
from synthscene.models.load import load_pipeline, model_fingerprint
from synthscene.models.schedulers import set_scheduler
from synthscene.plan import SampleTask, plan_dataset, sample_generator
from synthscene.provenance import run_record
from synthscene.records import Sample
from synthscene.report.card import write_dataset_card
from synthscene.spec import DatasetSpec, Text2LabelsSpec, dump_spec
from synthscene.store import shard_is_done, write_shard


def class_prompt(task: SampleTask) -> tuple[str, int]:
    """The text whose keys give the label maps, and where its class part starts."""
    head = f"{task.prompt}; "
    return head + " ".join(attention_word(w) for w in task.words), len(head)


def generate_dataset(spec: DatasetSpec, out: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Make ``spec.num_samples`` labelled samples in ``out`` (see ``synthscene.store``)."""
    # 1. plan, load the model, and check every prompt before writing anything
    out = Path(out)
    tasks = plan_dataset(spec)
    pipe = load_pipeline(spec.model)
    set_scheduler(pipe, spec.sampler.scheduler)
    for task in tasks:
        check_task(pipe.tokenizer, task)

    # 2. the run's hand-off files first: resolved spec, manifest, provenance
    _prepare_run_folder(out, spec, tasks, resume)
    write_json(out / "run.json", run_record(spec.model_dump(mode="json"), model_fingerprint(pipe)), indent=2)

    # 3. shards, skipping finished ones on resume
    shards = [tasks[i : i + spec.shard_size] for i in range(0, len(tasks), spec.shard_size)]
    bar = tqdm(total=len(tasks), desc="text2labels", disable=not progress)
    for number, shard_tasks in enumerate(shards):
        if shard_is_done(out, number):
            bar.update(len(shard_tasks))
            continue
        samples = []
        for start in range(0, len(shard_tasks), spec.batch_size):
            samples += label_batch(pipe, shard_tasks[start : start + spec.batch_size], spec)
            bar.update(min(spec.batch_size, len(shard_tasks) - start))
        write_shard(out, number, samples)
    bar.close()
    write_dataset_card(out)
    return out


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
    """Generated images and the attention maps captured while making them."""

    images: np.ndarray  # uint8 [B, H, W, 3]
    cross: dict  # {(h, w): float [B, T, h, w]} against the class prompts
    self_attention: torch.Tensor | None  # float [B, N, N]


def capture_batch(pipe, tasks: list[SampleTask], spec: DatasetSpec) -> CapturedBatch:
    """Generate one batch with attention capture; each sample has its own generator."""
    params = spec.text2labels
    store = AttentionStore(
        CaptureConfig(cross_resolutions=params.cross_resolutions, self_resolution=params.self_resolution,
                      step_window=params.step_window),
        num_steps=spec.sampler.steps, guidance=spec.sampler.guidance > 1.0,
        class_embeddings=encode_for_store(pipe, [class_prompt(t)[0] for t in tasks]),
    )
    with torch.no_grad(), capture_attention(pipe.unet, store):
        images = pipe([t.prompt for t in tasks], num_inference_steps=spec.sampler.steps,
                      guidance_scale=spec.sampler.guidance, generator=[sample_generator(t.seed) for t in tasks],
                      output_type="np").images
    return CapturedBatch((images * 255).round().astype(np.uint8), store.cross_maps(), store.self_map())


def label_sample(tokenizer, captured: CapturedBatch, b: int, task: SampleTask, params: Text2LabelsSpec,
                 num_classes: int) -> Sample:
    """Semantic mask, instances and scores of sample ``b`` of a captured batch."""
    image = captured.images[b]
    text, start = class_prompt(task)
    groups = [token_indices(tokenizer, text, attention_word(w), start) for w in task.words]
    scores = label_scores({hw: m[b] for hw, m in captured.cross.items()}, groups,
                          None if captured.self_attention is None else captured.self_attention[b], params)
    scores = upsample_scores(scores, image.shape[:2])
    semantic = semantic_for_classes(scores, task.class_ids, params)
    full_scores = np.zeros((num_classes, *image.shape[:2]), np.float32)
    full_scores[list(task.class_ids)] = scores.numpy()
    instances, dropped = instances_from_semantic(semantic, full_scores, params.min_instance_area, num_classes)
    meta = {"index": task.index, "class_ids": list(task.class_ids), "dropped_small": dropped}
    return Sample(image, instances, semantic, task.prompt, task.seed, meta)


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


def _prepare_run_folder(out: Path, spec: DatasetSpec, tasks: list[SampleTask], resume: bool) -> None:
    manifest = out / "manifest.jsonl"
    resolved = dump_spec(spec)
    if resume:
        if not manifest.is_file():
            raise FileNotFoundError(f"cannot resume: {manifest} does not exist")
        if (out / "spec.resolved.yaml").read_text() != resolved:
            raise ValueError(f"cannot resume: the spec differs from the one {out} was started with")
        return
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"output folder {out} already exists and is not empty (use --resume to continue it)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PermissionError(f"cannot write to {out}: {err.strerror}") from err
    (out / "spec.resolved.yaml").write_text(resolved)
    write_jsonl(manifest, [t.to_json() for t in tasks])
