"""MosaicFusion (IJCV 2024): one prompt per region of a canvas, one instance per region.

One noise tensor covers the canvas. At every step each region's window of the latents is
denoised with its own prompt (classifier-free guidance per region), the predictions are
merged with Gaussian weights centred on the regions (sigma 0.1 x region size, zero
outside a region, normalised by their sum) and the scheduler takes one step on the canvas.
Unlike the released code, all windows share one size so a step is one batched UNet call
(``batched=False`` runs them one after another, for low memory). The layout is stored in
each record rather than re-derived from a random generator.

Labels: each region's objectness from its prompt's cross-attention (to the tokens from the
class word on, or the class word alone: ``objectness_tokens``; finest resolution, later
steps), Otsu threshold, GrabCut against the image (the
fast bilateral solver MosaicFusion uses needs an opencv built with Eigen, which the PyPI
wheels are not), connected components with area bounds. Every pixel belongs to the region
whose weight is largest there, so instances never overlap in the bands between regions.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from synthscene.models.info import ModelInfo, model_info, model_text_layout
from synthscene.models.tokens import attention_word, replace_phrase, without_phrase
from synthscene.plan import Stream, sample_generator, sample_seed, stream_rng, stream_seed
from synthscene.records import Sample
from synthscene.spec import MosaicDatasetSpec, MosaicSpec

if TYPE_CHECKING:  # torch loads in the worker only: planning a run does not need it
    import torch

    from synthscene.capture import CaptureConfig

# MosaicFusion's overlap between neighbouring regions: 48 x 64 px for 512 px regions
REFERENCE_OVERLAP = (48 / 512, 64 / 512)


@dataclass(frozen=True)
class MosaicLayout:
    """Where regions are, in latent pixels. ``cells``: (y0, y1, x0, x1) of each region
    (its share of the canvas plus half the overlap on inner sides); ``windows``: (y0, x0)
    of the window the UNet sees for it, all ``window`` = (h, w) in size."""

    canvas: tuple[int, int]
    cells: tuple[tuple[int, int, int, int], ...]
    windows: tuple[tuple[int, int], ...]
    window: tuple[int, int]
    vae_factor: int

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> MosaicLayout:
        return cls(tuple(data["canvas"]), tuple(tuple(c) for c in data["cells"]),
                   tuple(tuple(w) for w in data["windows"]), tuple(data["window"]), data["vae_factor"])

    def weights(self) -> torch.Tensor:
        """float [N, H, W]: each region's Gaussian weight, zero outside its cell,
        normalised to sum to 1 at every pixel."""
        import torch

        height, width = self.canvas
        ys, xs = torch.arange(height).float()[:, None], torch.arange(width).float()[None, :]
        weights = []
        for y0, y1, x0, x1 in self.cells:
            cy, cx = (y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2
            sy, sx = 0.1 * (y1 - y0), 0.1 * (x1 - x0)
            gauss = torch.exp(-((ys - cy) ** 2) / (2 * sy**2) - ((xs - cx) ** 2) / (2 * sx**2)).double()
            inside = torch.zeros(height, width, dtype=torch.bool)
            inside[y0:y1, x0:x1] = True
            weights.append(torch.where(inside, gauss.clamp_min(1e-300), 0.0))
        stacked = torch.stack(weights)
        return (stacked / stacked.sum(0, keepdim=True)).float()

    def owners(self) -> np.ndarray:
        """int [H*f, W*f] at image resolution: the region each pixel belongs to."""
        owner = self.weights().argmax(0).numpy()
        return np.kron(owner, np.ones((self.vae_factor, self.vae_factor), np.int64))


def plan_layout(params: MosaicSpec, info: ModelInfo, rng: np.random.Generator) -> MosaicLayout:
    """A jittered grid of regions on the canvas, in latent pixels, for a model with the
    geometry ``info`` (``synthscene.models.info``). Raises ValueError for a canvas the model
    cannot take (not a multiple of its VAE factor x patch, or past its position embedding)."""
    vae_factor, native, multiple = info.vae_factor, info.latent_size, info.vae_factor * max(8, info.latent_multiple)
    rows, cols = params.grid
    region = params.region_size or (native * vae_factor, native * vae_factor)
    overlap = params.overlap or tuple(round(r * f / vae_factor) * vae_factor for r, f in zip(region, REFERENCE_OVERLAP))
    canvas = params.canvas or tuple(-(-(n * r - (n - 1) * o) // multiple) * multiple
                                    for n, r, o in zip((rows, cols), region, overlap))
    if any(side % multiple for side in canvas):
        patch = (f"; its {info.family} denoiser needs latent sides divisible by {info.latent_multiple}"
                 if info.patch_size > 1 else "")
        raise ValueError(f"canvas {canvas[0]}x{canvas[1]} px is not a multiple of {multiple} px "
                         f"(the model's VAE factor {vae_factor} x {multiple // vae_factor}{patch})")
    height, width = canvas[0] // vae_factor, canvas[1] // vae_factor
    half_y, half_x = overlap[0] // vae_factor // 2, overlap[1] // vae_factor // 2
    step = info.latent_multiple
    if info.max_latent_size:  # checked for the widest cell any jitter may draw, so every sample fits
        widest = [min(side, -(-_widest_cell(side, parts, params.jitter, half) // step) * step)
                  for side, parts, half in ((height, rows, half_y), (width, cols, half_x))]
        if max(widest) > info.max_latent_size:
            raise ValueError(f"mosaic windows of up to {widest[0] * vae_factor}x{widest[1] * vae_factor} px (a region "
                             f"with its jitter and overlap) exceed the {info.max_latent_size * vae_factor} px this "
                             f"{info.family} model's position embedding covers: use a smaller region_size, jitter or "
                             "overlap")
    ys = _jittered_splits(height, rows, params.jitter, rng)
    xs = _jittered_splits(width, cols, params.jitter, rng)
    cells = tuple((max(0, ys[r] - half_y), min(height, ys[r + 1] + half_y),
                   max(0, xs[c] - half_x), min(width, xs[c + 1] + half_x))
                  for r in range(rows) for c in range(cols))
    window = tuple(min(side, -(-max(extent) // step) * step) for side, extent in
                   ((height, [c[1] - c[0] for c in cells]), (width, [c[3] - c[2] for c in cells])))
    windows = tuple((min(max(0, (y0 + y1 - window[0]) // 2), height - window[0]),
                     min(max(0, (x0 + x1 - window[1]) // 2), width - window[1])) for y0, y1, x0, x1 in cells)
    return MosaicLayout((height, width), cells, windows, window, vae_factor)


def _widest_cell(length: int, parts: int, jitter: tuple[float, float], half_overlap: int) -> int:
    """The most latent pixels one cell of ``_jittered_splits`` can span, with its overlap."""
    if parts == 1:
        return length
    size, (low, high) = length / parts, jitter
    # the first or the last cell: one rounded split point away from the canvas edge
    edge = math.floor(max(high, 2.0 - low) * size + 0.5) + half_overlap
    # a middle cell: between two rounded split points
    inner = math.floor((1.0 + high - low) * size) + 1 + 2 * half_overlap if parts > 2 else 0
    return min(length, max(edge, inner))


def _jittered_splits(length: int, parts: int, jitter: tuple[float, float], rng) -> list[int]:
    size = length / parts
    inner = [round(k * size + (rng.uniform(*jitter) - 1.0) * size) for k in range(1, parts)]
    return [0, *inner, length]


def region_prompt(template: str, name: str, definition: str) -> str:
    """The template filled in; an empty definition takes its separator with it."""
    text = template.format(name=name, definition=definition)
    return text.rstrip(" ,;:") if not definition else text


@dataclass
class MosaicResult:
    image: np.ndarray  # uint8 [H, W, 3]
    cross: list[dict]  # per region {(h, w): float [T, h, w]} on its window
    latents: torch.Tensor  # [C, h, w] the canvas's final latents


def generate_mosaic(pipe, prompts: list[str], layout: MosaicLayout, steps: int, guidance: float,
                    generator: torch.Generator, batched: bool = True,
                    capture: CaptureConfig | None = None) -> MosaicResult:
    """Joint diffusion of one canvas with one prompt per region (see the module docstring)."""
    import torch

    with torch.no_grad():
        return _generate_mosaic(pipe, prompts, layout, steps, guidance, generator, batched, capture)


def _generate_mosaic(pipe, prompts, layout, steps, guidance, generator, batched, capture) -> MosaicResult:
    import torch

    from synthscene.capture import AttentionStore
    from synthscene.models.families import family_of

    family = family_of(pipe)  # SD / SDXL UNets, SD3 / FLUX transformers: one loop
    count = len(prompts)
    guided = family.guides(guidance)
    conditioning = family.encode(prompts, guided)
    weights = layout.weights().to(family.device, family.dtype)
    latents = family.initial_latents((1, family.latent_channels, *layout.canvas), generator)
    timesteps = family.start(steps, layout.window)
    stores = [AttentionStore(capture, num_steps=steps, guidance=guided) for _ in range(1 if batched else count)]
    (wh, ww) = layout.window
    for t in timesteps:
        crops = torch.cat([latents[:, :, y:y + wh, x:x + ww] for y, x in layout.windows])
        if batched:
            with _maybe_capture(family.denoiser, stores[0] if capture else None):
                noise = family.predict(crops, t, conditioning, guidance)
        else:
            noise = []
            for k in range(count):
                with _maybe_capture(family.denoiser, stores[k] if capture else None):
                    noise.append(family.predict(crops[k : k + 1], t, conditioning.rows(k, count), guidance))
            noise = torch.cat(noise)
        merged = torch.zeros_like(latents)
        for k, (y, x) in enumerate(layout.windows):
            merged[:, :, y:y + wh, x:x + ww] += weights[k, y:y + wh, x:x + ww] * noise[k : k + 1]
        latents = family.step(merged, t, latents)
    image = family.decode(latents)
    cross = []
    if capture:
        for k in range(count):
            maps = stores[0 if batched else k].cross_maps()
            cross.append({hw: m[k if batched else 0] for hw, m in maps.items()})
    return MosaicResult(image, cross, latents[0])


def _maybe_capture(denoiser, store):
    from synthscene.capture import capture_attention

    return capture_attention(denoiser, store) if store is not None else contextlib.nullcontext()


@dataclass(frozen=True)
class Task:
    """One row of a mosaic manifest: a class and a prompt per region, and the layout."""

    index: int
    seed: int
    class_ids: tuple[int, ...]  # one per region
    words: tuple[str, ...]  # the class word of each region prompt
    region_prompts: tuple[str, ...]
    layout: MosaicLayout

    @property
    def caption(self) -> str:
        return " | ".join(self.region_prompts)

    def to_json(self) -> dict:
        return {"index": self.index, "seed": self.seed, "class_ids": list(self.class_ids), "words": list(self.words),
                "region_prompts": list(self.region_prompts), "layout": self.layout.to_json()}

    @classmethod
    def from_json(cls, row: dict) -> Task:
        return cls(row["index"], row["seed"], tuple(row["class_ids"]), tuple(row["words"]),
                   tuple(row["region_prompts"]), MosaicLayout.from_json(row["layout"]))


def plan(spec: MosaicDatasetSpec) -> list[Task]:
    """One task per canvas: a class per region and the jittered layout (from the sample's
    layout stream and the model's geometry, read from its configs). With LVIS frequencies
    in the taxonomy, the first region's class is drawn from the rare ones (as
    MosaicFusion), the others from all classes."""
    count = spec.mosaic.grid[0] * spec.mosaic.grid[1]
    info = model_info(spec.model)
    allowed = [i for i, c in enumerate(spec.classes) if not spec.mosaic.categories or c.name in spec.mosaic.categories]
    rare = [i for i in allowed if spec.classes[i].frequency == "r"] or allowed
    tasks = []
    for index in range(spec.num_samples):
        seed = sample_seed(spec.seed, index)
        rng = np.random.default_rng(seed)
        class_ids = [int(rng.choice(rare))] + [int(rng.choice(allowed)) for _ in range(count - 1)]
        words = [str(rng.choice([spec.classes[c].name, *spec.classes[c].synonyms])) for c in class_ids]
        prompts = tuple(region_prompt(spec.mosaic.prompt_template, attention_word(w), spec.classes[c].definition)
                        for w, c in zip(words, class_ids))
        layout = plan_layout(spec.mosaic, info, stream_rng(seed, Stream.LAYOUT))
        tasks.append(Task(index, seed, tuple(class_ids), tuple(words), prompts, layout))
    return tasks


def check(spec: MosaicDatasetSpec, tasks: list[Task]) -> None:
    """Every region prompt fits the text encoder and names its class; the not-drawn check
    can run on the model."""
    info = model_info(spec.model)
    spec.sampler.check_model(info)
    if spec.mosaic.min_class_gain is not None:
        spec.mosaic.check_model(info, "min_class_gain (the not-drawn check)", "set min_class_gain: null")
    layout = model_text_layout(spec.model).reading(spec.mosaic.word_encoders, "mosaic.word_encoders")
    for task in tasks:
        for prompt, word in zip(task.region_prompts, task.words):
            layout.check(prompt, f"region prompt of sample {task.index}")
            layout.positions(prompt, attention_word(word))


class Worker:
    """Loads the model (and SAM, when asked) once; makes one mosaic per task."""

    def __init__(self, spec: MosaicDatasetSpec, device: str = "cpu"):
        from synthscene.models.load import load_pipeline
        from synthscene.models.schedulers import set_scheduler

        self.spec = spec
        self.pipe = load_pipeline(spec.model, device=device)
        set_scheduler(self.pipe, spec.sampler.scheduler)
        self.sam = None
        if spec.mosaic.sam_model:
            from synthscene.label.sam import SamRefiner

            self.sam = SamRefiner(spec.mosaic.sam_model, self.pipe.device)

    def __call__(self, tasks: list[Task]) -> list[Sample]:
        samples = [mosaic_sample(self.pipe, task, self.spec, self.sam) for task in tasks]
        return [s for s in samples if s is not None]


def mosaic_sample(pipe, task: Task, spec: MosaicDatasetSpec, sam=None) -> Sample | None:
    """Generate and label one mosaic (None when ``strict`` drops it); ``sam``: an optional
    ``SamRefiner`` whose box-prompted masks replace the instances' (within their region)."""
    from synthscene.label.mosaic import mosaic_labels

    params = spec.mosaic
    layout = task.layout
    result, objectness = generate_and_locate(pipe, task, spec)
    errors = (region_class_errors(pipe, result.latents, task, params, class_words(spec))
              if params.min_class_gain is not None else None)
    labels, kept = mosaic_labels(result.image, objectness, layout, task.class_ids, params, sam, errors)
    if labels is None:
        return None
    extra = {"layout": layout.to_json(), "region_prompts": list(task.region_prompts), "regions_kept": kept}
    return Sample(task.index, task.seed, task.caption, result.image, labels.instances, labels.semantic,
                  task.class_ids, labels.dropped, extra)


def generate_and_locate(pipe, task: Task, spec: MosaicDatasetSpec) -> tuple[MosaicResult, list[np.ndarray]]:
    """Generate one mosaic and read, per region, where its object is: the region's attention
    to its object tokens (``spec.mosaic.objectness_tokens``) on its window."""
    from synthscene.capture import CaptureConfig
    from synthscene.label.mosaic import region_objectness
    from synthscene.models.families import family_of

    params = spec.mosaic
    text_layout = family_of(pipe).text_layout().reading(params.word_encoders, "mosaic.word_encoders")
    capture = CaptureConfig(cross_resolutions=(), step_window=params.step_window)
    result = generate_mosaic(pipe, list(task.region_prompts), task.layout, spec.sampler.steps, spec.sampler.guidance,
                             sample_generator(task.seed), params.batched, capture)
    objectness = []
    for k, (prompt, word) in enumerate(zip(task.region_prompts, task.words)):
        tokens = text_layout.object_tokens(prompt, [attention_word(word)], class_words_only=params.class_words_only)
        objectness.append(region_objectness(result.cross[k], tokens, task.layout))
    return result, objectness


def region_class_errors(pipe, latents, task: Task, params: MosaicSpec,
                        spec_words: list[str] = ()) -> list[np.ndarray]:
    """Per region, float [2 + R, H, W] on its window at image resolution: the diffusion
    classifier's errors under the region's prompt, under that prompt with its class cut
    out and (``min_context_margin``) with its class's word replaced by each rival's (the
    words of ``spec_words``, one per class of the spec, but its own), for the not-drawn
    check (``synthscene.label.mosaic.region_instances``)."""
    import torch

    from synthscene.label.classify import denoising_errors
    from synthscene.models.families import family_of

    family = family_of(pipe)
    layout = task.layout
    (wh, ww), factor = layout.window, layout.vae_factor
    # the classifier's own stream, so labels do not depend on how the canvas was batched
    generator = sample_generator(stream_seed(task.seed, Stream.CLASSIFIER_NOISE))
    maps = []
    for (y, x), prompt, word, class_id in zip(layout.windows, task.region_prompts, task.words, task.class_ids):
        crop = latents[:, y:y + wh, x:x + ww]
        word = attention_word(word)
        texts = [prompt, without_phrase(prompt, word)]
        if params.min_context_margin is not None:
            # a class said with this very word ("bow_(decoration)" for "bow") is no rival
            texts += [replace_phrase(prompt, word, rival) for c, rival in enumerate(spec_words)
                      if c != class_id and rival.lower() != word.lower()]
        errors = denoising_errors(family, crop, family.encode_texts(texts), params.classifier_timesteps,
                                  params.classifier_repeats, generator)
        maps.append(torch.nn.functional.interpolate(errors[None], scale_factor=factor, mode="bilinear",
                                                    align_corners=False)[0].numpy())
    return maps


def class_words(spec: MosaicDatasetSpec) -> list[str]:
    """The word each class of the spec is said with in a rival's place."""
    return [attention_word(c.name) for c in spec.classes]
