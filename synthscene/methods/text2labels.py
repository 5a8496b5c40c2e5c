"""Text -> image + semantic mask + instances (after Dataset Diffusion, NeurIPS 2023).

The image is generated from the prompt alone; labels are read while it is made.

- ``faithful`` (Dataset Diffusion): the class names are encoded as a separate "class
  prompt" (the caption, then "; " and the class words, so their embeddings see the
  caption); each cross-attention layer scores the image's queries against its keys. Maps
  are refined with exponentiated self-attention, min-max normalised per class and
  thresholded into a semantic mask with an uncertain band (255).
- ``ours``: objectness is the prompt's own cross-attention to everything from the first
  class word on (on the embedded UNet model the end-of-text and padding tokens carry the
  objects, on SD the words do), or to the class words alone (``objectness_tokens:
  class_words``, for token states without context such as the embedded MMDiT's), over the later steps, spread once along the self-attention
  (which fills objects out to their edges and drops stray hot spots); GrabCut and a colour
  matte cut it against the image (``synthscene.label.refine``); the foreground splits into
  one segment per object by colour, and each segment takes the named class with the
  lowest denoising error (``synthscene.label.classify``). Per-class min-max is gone, so a
  named class that was not drawn claims no pixels. Edge pixels that are a near-even blend
  of object and background colour are uncertain (255) in the semantic mask, as VOC marks
  object borders; instance masks keep them (cut at half and half).

On SD3 and FLUX (joint attention: the text tokens change from block to block, so a separate
class prompt has no keys inside the model), ``faithful`` reads the class words of the prompt
itself. ``ours`` runs on every family: its classifier asks each family's denoiser through
its adapter (``synthscene.models.families``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthscene.models.info import model_info, model_text_layout
from synthscene.models.text_layout import TextLayout
from synthscene.models.tokens import attention_word, replace_phrase, without_phrase
from synthscene.plan import Stream, list_objects, sample_generator, sample_seed, stream_seed
from synthscene.records import Sample
from synthscene.spec import Text2LabelsDatasetSpec, Text2LabelsSpec


@dataclass(frozen=True)
class Task:
    """One row of a text2labels manifest: everything needed to make sample ``index`` alone."""

    index: int
    seed: int
    prompt: str
    class_ids: tuple[int, ...]  # 0-based into the spec's classes, in prompt order
    words: tuple[str, ...]  # the name or synonym of each class (the prompt says its ``attention_word``)

    def to_json(self) -> dict:
        return {"index": self.index, "seed": self.seed, "prompt": self.prompt, "class_ids": list(self.class_ids),
                "words": list(self.words)}

    @classmethod
    def from_json(cls, row: dict) -> Task:
        return cls(row["index"], row["seed"], row["prompt"], tuple(row["class_ids"]), tuple(row["words"]))


# ---- 1. plan and check --------------------------------------------------------------------


def plan(spec: Text2LabelsDatasetSpec) -> list[Task]:
    """A prompt naming 1..k classes per sample.

    Each task's choices come from its own seed, so the manifest of the first N samples
    does not change when ``num_samples`` grows.
    """
    tasks = []
    low, high = spec.objects_per_prompt
    for index in range(spec.num_samples):
        seed = sample_seed(spec.seed, index)
        rng = np.random.default_rng(seed)
        count = int(rng.integers(low, high + 1))
        class_ids = tuple(int(c) for c in rng.choice(len(spec.classes), size=count, replace=False))
        words = []
        for class_id in class_ids:
            cls = spec.classes[class_id]
            words.append(str(rng.choice([cls.name, *cls.synonyms])))
        # the prompt reads "ball" for the LVIS name "ball_(toy)" and "hair dryer" for "hair_dryer"
        spoken = [attention_word(w) for w in words]
        if count == 1 and spec.classes[class_ids[0]].prompts:
            prompt = str(rng.choice(spec.classes[class_ids[0]].prompts)).format(name=spoken[0])
        else:
            template = str(rng.choice(spec.prompt_templates))
            prompt = template.format(objects=list_objects(spoken))
        tasks.append(Task(index, seed, prompt, class_ids, tuple(words)))
    return tasks


def check(spec: Text2LabelsDatasetSpec, tasks: list[Task]) -> None:
    """Refuse a recipe the model cannot run and prompts it cannot read, from its configs."""
    info = model_info(spec.model)
    spec.sampler.check_model(info)
    check_recipe(info, spec.text2labels, spec.sampler.size)
    layout = model_text_layout(spec.model).reading(spec.text2labels.word_encoders, "text2labels.word_encoders")
    for task in tasks:
        check_task(layout, task, class_prompt_keys=not info.joint_attention)


def check_recipe(info, params: Text2LabelsSpec, size: tuple[int, int] | None = None) -> None:
    """The ``ours`` recipe's diffusion classifier needs a text-only UNet and a training
    schedule that reaches its timesteps. On a transformer (one token grid) the self-attention
    the recipe reads must be captured at that grid."""
    if params.recipe == "ours":
        params.check_model(info, "recipe 'ours'", "use recipe 'faithful'")
    needs_self = params.recipe == "faithful" or params.objectness_self_attention_power > 0
    if info.joint_attention and needs_self and params.self_resolution is not None:
        grid = min(size) // info.vae_factor // info.latent_multiple if size else info.latent_size // info.latent_multiple
        if params.self_resolution != grid:
            raise ValueError(f"self_resolution {params.self_resolution}: this {info.family} model's layers all work on "
                             f"its {grid}x{grid} token grid; set self_resolution: {grid}"
                             + (" (or null: no self-attention refinement)" if grid > 32 else ""))


def check_task(layout: TextLayout, task: Task, class_prompt_keys: bool = True) -> None:
    """The prompt fits every text encoder, and every class word is in it (and, for class-prompt
    keys, in the class prompt) inside the encoders' windows."""
    layout.check(task.prompt, f"prompt of sample {task.index}")
    text, start = class_prompt(task)
    for word in task.words:
        try:
            layout.positions(task.prompt, attention_word(word))
            if class_prompt_keys:
                layout.positions(text, attention_word(word), start)
        except ValueError as error:
            if word == attention_word(word):
                raise
            raise ValueError(f"{error} (for the class {word!r})") from None


def class_prompt(task: Task) -> tuple[str, int]:
    """The text whose keys give the label maps (faithful), and where its class part starts."""
    head = f"{task.prompt}; "
    return head + " ".join(attention_word(w) for w in task.words), len(head)


# ---- 2. generate with capture, 3. label ---------------------------------------------------


class Worker:
    """Loads the model once; maps a batch of tasks to labelled samples."""

    def __init__(self, spec: Text2LabelsDatasetSpec, device: str = "cpu"):
        from synthscene.models.families import family_of
        from synthscene.models.load import load_pipeline
        from synthscene.models.schedulers import set_scheduler

        self.spec = spec
        self.pipe = load_pipeline(spec.model, device=device)
        set_scheduler(self.pipe, spec.sampler.scheduler)
        check_recipe(model_info(spec.model), spec.text2labels, spec.sampler.size)
        self.text_layout = family_of(self.pipe).text_layout()

    def __call__(self, tasks: list[Task]) -> list[Sample]:
        captured = capture_batch(self.pipe, tasks, self.spec)
        return [label_sample(self.text_layout, captured, b, task, self.spec.text2labels, len(self.spec.classes))
                for b, task in enumerate(tasks)]


@dataclass(frozen=True)
class ClassErrors:
    """A sample's diffusion-classifier errors on the latent grid (torch): [K, h, w] under its
    K named classes (None: one named class, no check) and, for the not-drawn check, the
    rows it compares (``label.classify.PresenceErrors``; None when the check is off)."""

    named: object | None
    presence: object | None = None


@dataclass
class CapturedBatch:
    """Generated images and what was captured while making them."""

    images: np.ndarray  # uint8 [B, H, W, 3]
    cross: dict  # {(h, w): float [B, T, h, w]}; T: class-prompt tokens (faithful) or prompt tokens (ours)
    self_attention: object | None  # torch float [B, N, N]
    class_errors: list | None = None  # per sample ClassErrors or None (ours)
    class_prompt_keys: bool = True  # faithful: maps over the class prompt's tokens (False: the prompt's)


def capture_batch(pipe, tasks: list[Task], spec: Text2LabelsDatasetSpec) -> CapturedBatch:
    """Generate one batch with attention capture; each sample has its own generator."""
    import torch

    from synthscene.capture import AttentionStore, CaptureConfig, capture_attention, encode_for_store
    from synthscene.models.families import family_of

    params = spec.text2labels
    faithful = params.recipe == "faithful"
    family = family_of(pipe)
    store = AttentionStore(
        CaptureConfig(cross_resolutions=params.cross_resolutions,
                      self_resolution=params.self_resolution if faithful or params.objectness_self_attention_power
                      else None,
                      step_window=params.step_window),
        num_steps=spec.sampler.steps, guidance=family.guides(spec.sampler.guidance),
        class_embeddings=(encode_for_store(pipe, [class_prompt(t)[0] for t in tasks])
                          if faithful and not family.joint_attention else None),
    )
    final = {}

    def keep_latents(pipeline, step, timestep, tensors):
        final["latents"] = tensors["latents"]
        return tensors

    with torch.no_grad(), capture_attention(family.denoiser, store):
        size = dict(zip(("height", "width"), spec.sampler.size)) if spec.sampler.size else {}
        images = pipe([t.prompt for t in tasks], num_inference_steps=spec.sampler.steps, **size,
                      **family.pipeline_kwargs(),
                      guidance_scale=spec.sampler.guidance, generator=[sample_generator(t.seed) for t in tasks],
                      output_type="np", callback_on_step_end=keep_latents).images
    if faithful:
        class_errors = None
    else:
        latents = family.spatial_latents(final["latents"], images.shape[1:3])
        class_errors = [_class_errors(family, latents[b], task, params, rival_words(spec, task))
                        for b, task in enumerate(tasks)]
    return CapturedBatch((images * 255).round().astype(np.uint8), store.cross_maps(), store.self_map(), class_errors,
                         class_prompt_keys=store.class_embeddings is not None)


def rival_words(spec: Text2LabelsDatasetSpec, task: Task) -> list[str]:
    """The words of the spec's classes that the task's prompt does not name. A class said
    with a named class's word ("bow_(decoration)" beside "bow_(weapon)") is no rival: the
    text cannot tell them apart."""
    named = {attention_word(w).lower() for w in task.words}
    return [word for k, c in enumerate(spec.classes)
            if k not in task.class_ids and (word := attention_word(c.name)).lower() not in named]


def _class_errors(family, latents, task: Task, params: Text2LabelsSpec, rivals: list[str]) -> ClassErrors | None:
    """Denoising errors of one sample under each named class and, for the not-drawn check,
    under its prompt, under its prompt without each class, (``min_context_margin``) under
    its prompt with each class's word replaced by each rival's, (``min_rival_margin``) under
    each rival word alone and (with those or ``min_word_gain``) under the empty prompt. None:
    one named class and no check (nothing to compare)."""
    check = params.min_class_gain is not None
    alone = rivals if check and params.min_rival_margin is not None else []
    in_context = rivals if check and params.min_context_margin is not None else []
    empty_row = check and (params.min_rival_margin is not None or params.min_word_gain is not None)
    count = len(task.words)
    if count == 1 and not check:
        return None
    import torch

    from synthscene.label.classify import PresenceErrors, denoising_errors

    # its own noise stream, so labels do not depend on the batch the sample ran in; every
    # condition sees the same noise, so the check's rows change none of the class rows
    generator = sample_generator(stream_seed(task.seed, Stream.CLASSIFIER_NOISE))
    words = [attention_word(w) for w in task.words]
    texts = list(words)
    if check:
        texts += [task.prompt] + [without_phrase(task.prompt, w) for w in words]
        texts += [replace_phrase(task.prompt, w, rival) for w in words for rival in in_context]
        texts += alone + [""] if empty_row else []
    errors = denoising_errors(family, latents, family.encode_texts(texts), params.classifier_timesteps,
                              params.classifier_repeats, generator)
    if not check:
        return ClassErrors(errors)
    rows = iter(errors[count:])

    def take(n: int):
        return torch.stack([next(rows) for _ in range(n)]) if n else errors.new_zeros(0, *errors.shape[-2:])

    prompt, without = next(rows), take(count)
    contexts = take(count * len(in_context)).reshape(count, len(in_context), *errors.shape[-2:])
    presence = PresenceErrors(prompt, without, rivals=take(len(alone)) if empty_row else None,
                              empty=next(rows) if empty_row else None,
                              in_context=contexts if params.min_context_margin is not None else None)
    return ClassErrors(errors[:count], presence)


def label_sample(text_layout: TextLayout, captured: CapturedBatch, b: int, task: Task, params: Text2LabelsSpec,
                 num_classes: int) -> Sample:
    """Semantic mask, instances and scores of sample ``b`` of a captured batch; ``text_layout``:
    where the words sit in its maps' token axis (``family_of(pipe).text_layout()``)."""
    from synthscene.label.text2labels import faithful_labels, ours_labels

    text_layout = text_layout.reading(params.word_encoders)
    image = captured.images[b]
    cross = {hw: m[b] for hw, m in captured.cross.items()}
    self_attention = None if captured.self_attention is None else captured.self_attention[b]
    if params.recipe == "faithful":
        if captured.class_prompt_keys:
            text, start = class_prompt(task)
            groups = [text_layout.positions(text, attention_word(w), start) for w in task.words]
        else:  # joint attention: the prompt's own class words
            groups = [text_layout.positions(task.prompt, attention_word(w)) for w in task.words]
        labels = faithful_labels(image, cross, groups, self_attention, task.class_ids, params, num_classes)
    else:
        objects = text_layout.object_tokens(task.prompt, [attention_word(w) for w in task.words],
                                            class_words_only=params.class_words_only)
        errors = captured.class_errors[b] or ClassErrors(None)
        labels = ours_labels(image, cross, objects, self_attention, errors.named, task.class_ids, params, num_classes,
                             errors.presence)
    drawn = {int(c) for c in labels.instances.class_id}
    # what the labeller found no trace of, although the caption named it
    not_drawn = [c for c in task.class_ids if c not in drawn]
    extra = {"not_drawn": not_drawn}
    if labels.evidence:  # what the not-drawn check measured, so a user can see why
        extra["class_evidence"] = [{"class_id": int(c), **e.to_json()} for c, e in sorted(labels.evidence.items())]
    return Sample(task.index, task.seed, task.prompt, image, labels.instances, labels.semantic, task.class_ids,
                  labels.dropped, extra)
