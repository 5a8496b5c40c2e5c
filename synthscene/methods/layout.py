"""Layout -> image (iPOSE, diffusion-native): a ControlNet draws a layout; the layout is the label.

1. plan: per sample a layout: a real one (``mode: dataset``, the source's image
   ``source_index``) or a sampled one (``mode: sampled``: shapes of the source's instances
   placed at random, ``layout.compose``), and a caption counting its objects;
2. parts: a part-aware class's instances take their parts from the source's part maps or,
   where it has none, from the part model (``synthscene.parts``: inferred from the shape
   and similar annotated shapes);
3. the control image (classes, instance boundaries, parts; or an ADE20K-palette RGB map for
   pre-trained segmentation ControlNets) steers diffusers' ``StableDiffusionControlNetPipeline``;
4. the sample's instances, semantic mask and parts are the layout's, exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from synthscene.layout.compose import Placement, compose, place_objects, shape_pool
from synthscene.layout.maps import Layout, control_image, count_caption
from synthscene.models.info import (
    EMBEDDED_CONTROLNET_DIR,
    EMBEDDED_PARTS_DIR,
    model_info,
    require_family,
    resolve_embedded,
)
from synthscene.plan import Stream, sample_generator, sample_seed, stream_rng
from synthscene.records import Sample
from synthscene.spec import LayoutDatasetSpec

# ---- 1. plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    index: int
    seed: int
    caption: str
    source_index: int | None = None  # mode dataset: the source image whose layout is drawn
    placements: tuple[Placement, ...] = ()  # mode sampled: shapes of the pool, drawn in order

    def to_json(self) -> dict:
        return {"index": self.index, "seed": self.seed, "caption": self.caption, "source_index": self.source_index,
                "placements": [p.to_json() for p in self.placements]}

    @classmethod
    def from_json(cls, row: dict) -> Task:
        return cls(int(row["index"]), int(row["seed"]), str(row["caption"]), row.get("source_index"),
                   tuple(Placement.from_json(p) for p in row.get("placements", ())))


class LayoutSourceData:
    """The source a spec names, with its part maps when it has them, and (mode sampled) the
    pool of shapes layouts are made of; opened by the planner and by every worker alike."""

    def __init__(self, spec: LayoutDatasetSpec):
        from synthscene.formats.source import open_source

        self.spec = spec
        self.source = open_source(spec.layout.source)
        if list(self.source.class_names) != spec.class_names:
            raise ValueError(f"classes must be the source's, in its order: {', '.join(self.source.class_names)} "
                             f"(the spec has {', '.join(spec.class_names)})")
        self.part_schema = _source_parts(spec.layout.source)

    def part_map(self, index: int) -> np.ndarray | None:
        """The source's part map of image ``index`` (global ids of its part list), if any."""
        if self.part_schema is None:
            return None
        from synthscene.codecs import load_semantic_png
        from synthscene.parts.data import part_map_file

        return load_semantic_png(part_map_file(Path(self.source.paths[index])))

    @cached_property
    def pool(self):
        params = self.spec.layout.sampled
        wanted = params.classes or tuple(self.spec.class_names)
        ids = {self.spec.class_names.index(name) for name in wanted}
        parts_of = self.part_map if self.part_schema is not None else None
        return shape_pool(self.source, ids, params.shape_images, parts_of, params.whole_shapes)

    def layout(self, task: Task, size: tuple[int, int]) -> Layout:
        if task.source_index is not None:
            instances = self.source.instances(task.source_index)
            if instances.masks is None:
                raise ValueError(f"source image {task.source_index} has no masks: a layout needs instance masks")
            return Layout(instances, self.part_map(task.source_index))
        return compose(self.pool, list(task.placements), *size)


def _source_parts(source_spec):
    """The part list of a COCO source whose image root (or the JSON's dataset folder) has one."""
    from synthscene.parts.data import PartSchema

    if source_spec.format != "coco":
        return None
    path = Path(source_spec.path)
    for root in ([Path(source_spec.image_root)] if source_spec.image_root else []) + [path.parent.parent, path.parent]:
        for name in ("parts.json", "world.json"):
            if (root / name).is_file() and json.loads((root / name).read_text()).get("parts"):
                return PartSchema.read(root)
    return None


def plan(spec: LayoutDatasetSpec) -> list[Task]:
    """``num_samples`` layouts: the source's first images with an instance (mode dataset), or
    sampled ones (mode sampled), each with its counting caption."""
    from synthscene.layout.data import _world_plurals

    params = spec.layout
    data = LayoutSourceData(spec)
    plurals = _world_plurals()
    tasks: list[Task] = []
    if params.mode == "dataset":
        for source_index in range(len(data.source)):
            if len(tasks) == spec.num_samples:
                break
            classes = data.source.instances(source_index).class_id
            if not len(classes):
                continue
            index = len(tasks)
            caption = count_caption(spec.class_names, classes, plurals, params.caption_template)
            tasks.append(Task(index, sample_seed(spec.seed, index), caption, source_index=source_index))
        if len(tasks) < spec.num_samples:
            raise ValueError(f"the source has {len(tasks)} images with instances, fewer than num_samples "
                             f"{spec.num_samples}")
        return tasks
    pool = data.pool
    by_class: dict[int, list[int]] = {}
    for k, shape in enumerate(pool):
        by_class.setdefault(shape.class_id, []).append(k)
    # classes named in the spec must all be there; by default, whichever the source has
    missing = [name for name in params.sampled.classes if spec.class_names.index(name) not in by_class]
    if missing or not by_class:
        whole = " whole (whole_shapes: touching no other object and no border)" if params.sampled.whole_shapes else ""
        raise ValueError(f"the first {params.sampled.shape_images} source images have no{whole} instance of "
                         f"{', '.join(missing or spec.class_names)} to sample layouts from")
    height, width = sampled_size(spec)
    for index in range(spec.num_samples):
        seed = sample_seed(spec.seed, index)
        rng = stream_rng(seed, Stream.LAYOUT)
        count = int(rng.integers(params.sampled.objects[0], params.sampled.objects[1] + 1))
        placements = place_objects(pool, by_class, count, height, width, params.sampled.side, rng,
                                   params.sampled.min_visible)
        classes = [pool[p.shape].class_id for p in placements]
        caption = count_caption(spec.class_names, classes, plurals, params.caption_template)
        tasks.append(Task(index, seed, caption, placements=tuple(placements)))
    return tasks


def sampled_size(spec: LayoutDatasetSpec) -> tuple[int, int]:
    if spec.layout.sampled.size is not None:
        return tuple(spec.layout.sampled.size)
    side = read_control_info(spec.layout.controlnet).get("resolution")
    if side is None:
        raise ValueError("this ControlNet does not record its resolution: give layout.sampled.size")
    return int(side), int(side)


# ---- checks, before anything is written ---------------------------------------------------


def controlnet_folder(controlnet: str) -> Path | str:
    """The ControlNet's own folder: ``controlnet/`` of a train-controlnet run (or of the
    embedded one), else as given (a ControlNet folder or hub id)."""
    path = Path(resolve_embedded(controlnet, EMBEDDED_CONTROLNET_DIR))
    return path / "controlnet" if (path / "controlnet").is_dir() else controlnet


def read_control_info(controlnet: str) -> dict:
    """``control.json`` of a train-controlnet run ({} for a ControlNet of elsewhere)."""
    path = Path(resolve_embedded(controlnet, EMBEDDED_CONTROLNET_DIR)) / "control.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def conditioning_scale(spec_value: float | None, info: dict) -> float:
    """The spec's conditioning scale, else the one chosen for the ControlNet (its
    ``control.json``), else diffusers' default 1."""
    return float(spec_value if spec_value is not None else info.get("conditioning_scale", 1.0))


def part_model_folder(part_model: str) -> str:
    return resolve_embedded(part_model, EMBEDDED_PARTS_DIR)


def check(spec: LayoutDatasetSpec, tasks: list[Task]) -> None:
    """The ControlNet fits the model and the spec's classes; layouts fit the model; every
    part-aware instance can get its parts."""
    from synthscene.models.info import read_config

    require_family(model_info(spec.model), "method 'layout' (a ControlNet)")

    params = spec.layout
    info = read_control_info(params.controlnet)
    if params.palette == "channels":
        if not info:
            raise FileNotFoundError(f"{params.controlnet} has no control.json: palette 'channels' needs a "
                                    "'synthscene train-controlnet' run (or set palette: ade20k for a segmentation "
                                    "ControlNet of elsewhere)")
        if info["class_names"] != spec.class_names:
            raise ValueError(f"the ControlNet encodes classes {', '.join(info['class_names'])}; the spec has "
                             f"{', '.join(spec.class_names)}")
    else:
        known = {c["name"] for c in ade20k_palette()}
        unknown = sorted(set(params.ade20k_classes.values()) - known)
        if unknown:
            raise ValueError(f"not ADE20K classes: {', '.join(unknown)}")
        unmapped = [n for n in spec.class_names if n not in params.ade20k_classes]
        if unmapped:
            raise ValueError(f"ade20k_classes gives no ADE20K class for {', '.join(unmapped)}")
    folder = controlnet_folder(params.controlnet)
    try:
        controlnet_config = json.loads((Path(folder) / "config.json").read_text())
    except FileNotFoundError:
        controlnet_config = None  # a hub id: checked when the worker loads it
    if controlnet_config is not None:
        _check_architecture(controlnet_config, read_config(spec.model, "unet"))
    model = model_info(spec.model)
    multiple = model.vae_factor * model.latent_multiple
    data = LayoutSourceData(spec)
    for task in tasks:
        size = data.source.size(task.source_index) if task.source_index is not None else sampled_size(spec)
        if size[0] % multiple or size[1] % multiple:
            where = f"source image {task.source_index}" if task.source_index is not None else "sampled layouts"
            raise ValueError(f"{where}: a {size[0]}x{size[1]} layout does not fit the model, which draws sizes "
                             f"that are multiples of {multiple}")
    _check_parts(spec, info, data, tasks)


def _check_architecture(controlnet_config: dict, unet_config: dict) -> None:
    for key in ("block_out_channels", "cross_attention_dim", "in_channels"):
        if key in controlnet_config and key in unet_config and controlnet_config[key] != unet_config[key]:
            raise ValueError(f"this ControlNet was made for another base model: its {key} is "
                             f"{controlnet_config[key]}, the model's UNet has {unet_config[key]}")


def _check_parts(spec: LayoutDatasetSpec, info: dict, data: LayoutSourceData, tasks: list[Task]) -> None:
    params = spec.layout
    drawn = {row["class"] for row in info.get("parts", [])}
    if not params.with_parts or not drawn or data.part_schema is not None:
        return
    present = set()
    for task in tasks:
        classes = (data.source.instances(task.source_index).class_id if task.source_index is not None
                   else [data.pool[p.shape].class_id for p in task.placements])
        present |= {spec.class_names[int(c)] for c in classes}
    needed = sorted(drawn & present)
    if not needed:
        return
    if params.part_model is None:
        raise ValueError(f"the ControlNet draws the parts of {', '.join(needed)}, but the source has no part maps: "
                         "give layout.part_model (a 'synthscene train-parts' output) or set with_parts: false")
    from synthscene.parts.infer import PartModel

    model = PartModel.load(part_model_folder(params.part_model))
    without = [c for c in needed if c not in model.bank.shapes]
    if without:
        raise ValueError(f"part model {params.part_model} has no support shapes of {', '.join(without)}: "
                         "part-aware classes need annotated examples to infer parts from")
    unknown = sorted(set(model.schema.parts) - {(r["class"], r["name"]) for r in info["parts"]})
    if unknown:
        raise ValueError(f"part model {params.part_model} predicts parts the ControlNet does not draw: "
                         f"{', '.join(f'{c}/{p}' for c, p in unknown)}")


def ade20k_palette() -> list[dict]:
    from importlib.resources import files

    return json.loads(files("synthscene").joinpath("assets/ade20k_palette.json").read_text())["classes"]


def ade20k_control(layout: Layout, class_names: list[str], mapping: dict[str, str]) -> np.ndarray:
    """float32 [3, H, W] in [0, 1]: the layout painted in ADE20K's palette, black elsewhere."""
    colours = {c["name"]: c["color"] for c in ade20k_palette()}
    image = np.zeros((*layout.size, 3), np.float32)
    semantic = layout.semantic
    for class_id, name in enumerate(class_names):
        image[semantic == class_id + 1] = colours[mapping[name]]
    return image.transpose(2, 0, 1) / 255.0


# ---- 2. parts, 3. draw, 4. label ----------------------------------------------------------


class Worker:
    """Loads the model, the ControlNet, the source and the part model once; draws tasks."""

    def __init__(self, spec: LayoutDatasetSpec, device: str = "cpu"):
        from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

        from synthscene.models.load import load_pipeline
        from synthscene.models.schedulers import set_scheduler
        from synthscene.parts.infer import PartModel
        from synthscene.train.controlnet import check_controlnet

        self.spec = spec
        params = spec.layout
        pipe = load_pipeline(spec.model, device=device)
        set_scheduler(pipe, spec.sampler.scheduler)
        folder = controlnet_folder(params.controlnet)
        controlnet = ControlNetModel.from_pretrained(folder, local_files_only=Path(str(folder)).is_dir())
        check_controlnet(controlnet, pipe.unet)
        self.pipe = StableDiffusionControlNetPipeline(**pipe.components, controlnet=controlnet.to(device))
        self.pipe.set_progress_bar_config(disable=True)
        self.info = read_control_info(params.controlnet)
        self.conditioning_scale = conditioning_scale(params.conditioning_scale, self.info)
        self.data = LayoutSourceData(spec)
        self.part_model = PartModel.load(part_model_folder(params.part_model), device) if params.part_model else None
        # the ControlNet's part channels, and the source's and part model's parts in their order
        self.parts = [(r["class"], r["name"]) for r in self.info.get("parts", [])]
        self.size = sampled_size(spec) if params.mode == "sampled" else None

    def __call__(self, tasks: list[Task]) -> list[Sample]:
        return [self.draw(task) for task in tasks]

    def layout_with_parts(self, task: Task) -> tuple[Layout, list[bool]]:
        """The task's layout with its parts in the ControlNet's part order, and per instance
        whether its parts were inferred."""
        layout = self.data.layout(task, self.size)
        inferred = [False] * len(layout.instances)
        if not self.parts or not self.spec.layout.with_parts:
            return Layout(layout.instances, None), inferred
        channel = {part: k + 1 for k, part in enumerate(self.parts)}
        parts = np.zeros(layout.size, np.uint8)
        if layout.parts is not None:  # the source's own, renumbered
            for k, part in enumerate(self.data.part_schema.parts, 1):
                if part in channel:
                    parts[layout.parts == k] = channel[part]
        drawn = {c for c, _ in self.parts}
        for k, (mask, class_id) in enumerate(zip(layout.instances.masks, layout.instances.class_id)):
            name = self.spec.class_names[int(class_id)]
            if name not in drawn or layout.parts is not None or self.part_model is None or not mask.any():
                continue
            local = self.part_model.predict(name, mask)
            for p, part_name in enumerate(self.part_model.schema.part_names(name), 1):
                parts[local == p] = channel[(name, part_name)]
            inferred[k] = True
        return Layout(layout.instances, parts), inferred

    def control(self, layout: Layout):
        import torch

        params = self.spec.layout
        if params.palette == "ade20k":
            array = ade20k_control(layout, self.spec.class_names, params.ade20k_classes)
        else:
            array = control_image(layout, len(self.spec.class_names), len(self.parts), params.with_parts)
        return torch.from_numpy(array)[None]

    def draw(self, task: Task) -> Sample:
        import torch

        layout, inferred = self.layout_with_parts(task)
        height, width = layout.size
        sampler = self.spec.sampler
        with torch.no_grad():
            out = self.pipe(task.caption, image=self.control(layout), height=height, width=width,
                            num_inference_steps=sampler.steps, guidance_scale=sampler.guidance,
                            controlnet_conditioning_scale=self.conditioning_scale,
                            generator=sample_generator(task.seed), output_type="np").images[0]
        image = (np.clip(out, 0, 1) * 255).round().astype(np.uint8)
        from dataclasses import replace

        instances = replace(layout.instances, data={**layout.instances.data, "parts_inferred": np.array(inferred, bool)})
        extra = {"source_index": task.source_index} if task.source_index is not None else \
            {"placements": [p.to_json() for p in task.placements]}
        extra["conditioning_scale"] = self.conditioning_scale
        return Sample(task.index, task.seed, task.caption, image, instances, layout.semantic,
                      tuple(sorted({int(c) for c in instances.class_id})), {}, extra, layout.parts)
