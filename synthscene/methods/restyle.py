"""Restyle real instances inside their masks; the real labels stay valid (InstSynth).

1. plan: for each source image, its ``instances_per_image`` largest non-crowd instances
   with masks (at least ``min_instance_area`` pixels), ``variants_per_instance`` copies,
   each instance's style prompt drawn from its class's list (or the template);
2. restyle: per instance, a square crop around its box (at least the model's input side,
   clamped at the image border) goes to the model at its input size; inside the
   (optionally dilated) mask it is regenerated from ``start`` of the way into the
   schedule, outside it the source is kept: with a text-to-image model by blended latent
   diffusion (after every step, latents = generated x mask + the source noised to that
   step x (1 - mask), the mask at latent resolution: diffusers' inpainting pipeline does
   this for a 4-channel UNet), with an inpainting model (9-channel UNet) by inpainting;
3. paste the regenerated crop back through the mask: every pixel outside the restyled
   masks is the source's, byte for byte; the labels are the source's;
4. optionally (on by default for wide images) InstSynth's focused crop: a 2:1 window around
   the largest restyled instance, planned here, resized back to the image's size with its
   labels (``synthscene.label.crops``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthscene.label.crops import crop_sample, focused_window
from synthscene.models.info import model_info, require_family
from synthscene.plan import Stream, sample_generator, sample_seed, stream_rng
from synthscene.records import Sample
from synthscene.spec import RestyleDatasetSpec, RestyleSpec

# ---- 1. plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    index: int
    seed: int
    source_index: int  # the image's position in the source
    variant: int
    instances: tuple[int, ...]  # positions in the image's instances, largest first
    prompts: tuple[str, ...]  # one style prompt per instance
    window: tuple[int, int, int, int] | None = None  # the focused crop (x0, y0, x1, y1), if any

    def to_json(self) -> dict:
        return {"index": self.index, "seed": self.seed, "source_index": self.source_index, "variant": self.variant,
                "instances": list(self.instances), "prompts": list(self.prompts),
                "window": None if self.window is None else list(self.window)}

    @classmethod
    def from_json(cls, row: dict) -> Task:
        window = row.get("window")
        return cls(int(row["index"]), int(row["seed"]), int(row["source_index"]), int(row["variant"]),
                   tuple(int(i) for i in row["instances"]), tuple(row["prompts"]),
                   None if window is None else tuple(int(v) for v in window))


def chosen_instances(instances, params: RestyleSpec) -> list[int]:
    """The ``instances_per_image`` largest restylable instances (non-crowd, with a mask of
    at least ``min_instance_area`` pixels), largest first (ties: source order)."""
    if not instances.has_masks or not len(instances):
        return []
    crowd = instances.data.get("iscrowd", np.zeros(len(instances), bool))
    area = instances.area
    candidates = [i for i in range(len(instances)) if not crowd[i] and area[i] >= params.min_instance_area]
    return sorted(candidates, key=lambda i: (-int(area[i]), i))[: params.instances_per_image]


def style_prompt(params: RestyleSpec, name: str, rng: np.random.Generator) -> str:
    prompts = params.style_prompts.get(name)
    if not prompts:
        return params.style_template.format(name=name)
    return prompts[int(rng.integers(len(prompts)))]


def plan(spec: RestyleDatasetSpec) -> list[Task]:
    """The first ``num_samples`` (image, variant) pairs of the images that have an instance
    to restyle; refused when the source has fewer."""
    from synthscene.formats.source import open_source

    params = spec.restyle
    source = open_source(params.source)
    if list(source.class_names) != spec.class_names:
        raise ValueError(f"classes must be the source's, in its order: {', '.join(source.class_names)} "
                         f"(the spec has {', '.join(spec.class_names)})")
    tasks: list[Task] = []
    for source_index in range(len(source)):
        instances = source.instances(source_index)
        chosen = chosen_instances(instances, params)
        if not chosen:
            continue
        for variant in range(params.variants_per_instance):
            if len(tasks) == spec.num_samples:
                return tasks
            index = len(tasks)
            seed = sample_seed(spec.seed, index)
            rng = stream_rng(seed, Stream.STYLE)
            prompts = tuple(style_prompt(params, spec.class_names[int(instances.class_id[i])], rng) for i in chosen)
            window = None
            if wants_focused_crop(params, *instances.masks.shape[1:]):
                window = focused_window(instances.xyxy[chosen[0]], instances.masks, stream_rng(seed, Stream.CROP))
            tasks.append(Task(index, seed, source_index, variant, tuple(chosen), prompts, window))
    if len(tasks) < spec.num_samples:
        raise ValueError(f"the source gives {len(tasks)} samples (images with an instance to restyle x "
                         f"{params.variants_per_instance} variants), fewer than num_samples {spec.num_samples}")
    return tasks


def wants_focused_crop(params: RestyleSpec, height: int, width: int) -> bool:
    return params.focused_crops if params.focused_crops is not None else width >= 1.5 * height


def check(spec: RestyleDatasetSpec, tasks: list[Task]) -> None:
    check_mode(model_info(spec.model), spec.restyle)


def check_mode(info, params: RestyleSpec) -> str:
    require_family(info, "method 'restyle'", ("sd", "sdxl"))
    """'blend' or 'inpaint' for this model, or a clear refusal of a mode it cannot run."""
    inpainting = info.unet_in_channels == 9
    if params.mode == "inpaint" and not inpainting:
        raise ValueError(f"mode 'inpaint' needs an inpainting model (a 9-channel UNet); this one takes "
                         f"{info.unet_in_channels} channels: use mode 'blend' (or 'auto')")
    if params.mode == "blend" and inpainting:
        raise ValueError("mode 'blend' runs a text-to-image model, but this is an inpainting model (9-channel "
                         "UNet): use mode 'inpaint' (or 'auto')")
    if info.unet_in_channels not in (4, 9):
        raise ValueError(f"restyle runs 4-channel (text-to-image) or 9-channel (inpainting) UNets, not "
                         f"{info.unet_in_channels}")
    return "inpaint" if inpainting else "blend"


# ---- 2. restyle, 3. paste back ------------------------------------------------------------


def square_crop(xyxy, height: int, width: int, side: int) -> tuple[int, int, int]:
    """(x0, y0, side) of the square around a box: at least ``side`` and the box's longer
    side, at most the image's shorter side, centred on the box and moved inside the image."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    side = int(min(max(side, np.ceil(x2 - x1), np.ceil(y2 - y1)), height, width))
    x0 = int(np.clip(round((x1 + x2 - side) / 2), 0, width - side))
    y0 = int(np.clip(round((y1 + y2 - side) / 2), 0, height - side))
    return x0, y0, side


def resize(image: np.ndarray, side: int, nearest: bool = False) -> np.ndarray:
    """To ``side`` x ``side``: area filtering when shrinking, bicubic when growing, nearest for masks."""
    import cv2

    if image.shape[0] == side:
        return image
    method = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA if image.shape[0] > side else cv2.INTER_CUBIC
    return cv2.resize(image, (side, side), interpolation=method)


def grown(mask: np.ndarray, pixels: int) -> np.ndarray:
    import cv2

    if pixels == 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pixels + 1, 2 * pixels + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


class Worker:
    """Loads the model (as diffusers' inpainting pipeline over the same weights) and the source once."""

    def __init__(self, spec: RestyleDatasetSpec, device: str = "cpu"):
        from diffusers import AutoPipelineForInpainting

        from synthscene.formats.source import open_source
        from synthscene.models.load import load_pipeline
        from synthscene.models.schedulers import set_scheduler

        self.spec = spec
        pipe = load_pipeline(spec.model, device=device)
        set_scheduler(pipe, spec.sampler.scheduler)
        self.mode = check_mode(model_info(spec.model), spec.restyle)
        # a text-to-image pipeline becomes its inpainting twin on the same modules
        self.pipe = AutoPipelineForInpainting.from_pipe(pipe)
        self.pipe.set_progress_bar_config(disable=True)
        self.side = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
        self.source = open_source(spec.restyle.source)

    def __call__(self, tasks: list[Task]) -> list[Sample]:
        return [self.restyle(task) for task in tasks]

    def restyle(self, task: Task) -> Sample:
        import torch
        from PIL import Image

        params, sampler = self.spec.restyle, self.spec.sampler
        source = self.source.sample(task.source_index)
        image = source.image.copy()
        restyled = np.zeros(image.shape[:2], bool)
        generator = sample_generator(task.seed)
        for position, prompt in zip(task.instances, task.prompts):
            mask = grown(source.instances.masks[position], params.mask_dilation)
            x0, y0, side = square_crop(source.instances.xyxy[position], *image.shape[:2], self.side)
            window = (slice(y0, y0 + side), slice(x0, x0 + side))
            crop, crop_mask = image[window], mask[window]
            with torch.no_grad():
                out = self.pipe(prompt=prompt, image=Image.fromarray(resize(crop, self.side)),
                                mask_image=Image.fromarray(resize(crop_mask.astype(np.uint8) * 255, self.side, True)),
                                height=self.side, width=self.side, strength=1.0 - params.start,
                                num_inference_steps=sampler.steps, guidance_scale=sampler.guidance,
                                generator=generator, output_type="np").images[0]
            generated = resize((np.clip(out, 0, 1) * 255).round().astype(np.uint8), side)
            image[window][crop_mask] = generated[crop_mask]
            restyled[window] |= crop_mask
        ids = source.instances.data.get("instance_id", source.instances.data.get("annotation_id"))
        extra = {"source": {**source.extra.get("source", {}), "index": task.source_index,
                            **{k: v for k, v in source.extra.items() if k != "source"}},
                 "variant": task.variant, "restyled_instances": list(task.instances),
                 "restyled_ids": [] if ids is None else [int(ids[i]) for i in task.instances],
                 "prompts": list(task.prompts), "restyled_pixels": int(restyled.sum()), "mode": self.mode}
        sample = Sample(task.index, task.seed, source.caption or "; ".join(task.prompts), image, source.instances,
                        source.semantic, tuple(sorted({int(c) for c in source.instances.class_id})),
                        dict(source.dropped), extra)
        return sample if task.window is None else crop_sample(sample, task.window)
