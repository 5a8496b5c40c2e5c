"""The user-facing dataset spec: a pydantic model read from YAML, validated once.

A spec is one of the methods' specs, told apart by ``method:`` (a discriminated union;
``method`` defaults to ``text2labels`` so older spec files still load). Loading or
validating a spec imports neither torch nor diffusers.

Example (``examples/shapes-text2labels.yaml``)::

    name: shapes-text2labels
    method: text2labels
    model: embedded
    num_samples: 32
    seed: 0
    classes:
      - name: ball
        synonyms: [balls]
    prompt_templates: ["a photo of {objects}"]
    sampler: {scheduler: ddim, steps: 25, guidance: 7.5}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

# the names synthscene.models.schedulers maps to diffusers classes (kept here: no diffusers import)
SCHEDULERS = ("ddim", "ddpm", "pndm", "euler", "euler_ancestral", "dpm_solver", "unipc", "flow_match_euler")
FLOW_MATCHING_SCHEDULERS = ("flow_match_euler",)  # for SD3 / FLUX; the others are for noise-prediction models


class SpecError(ValueError):
    """The spec is invalid; the message lists every problem with its field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassSpec(_Strict):
    name: str = Field(min_length=1)
    synonyms: tuple[str, ...] = ()
    definition: str = ""  # LVIS-style gloss, exported as the category's "def"
    frequency: Literal["r", "c", "f"] | None = None  # LVIS frequency group, if known
    # templates for this class alone, "{name}" is replaced; default: the spec's templates
    prompts: tuple[str, ...] = ()


class SamplerSpec(_Strict):
    scheduler: str = "ddim"
    steps: int = Field(25, ge=1, le=1000)
    guidance: float = Field(7.5, ge=0.0)
    # (height, width) in px of a generated image; None: the model's native size (text2labels)
    size: tuple[int, int] | None = None

    @field_validator("scheduler")
    @classmethod
    def _known_scheduler(cls, value: str) -> str:
        if value not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {value!r}; choose one of {', '.join(SCHEDULERS)}")
        return value

    def check_model(self, info) -> None:
        """Refuse a scheduler of the other kind than the model was trained for (from
        ``models.info.ModelInfo``): flow matching (SD3, FLUX) or noise prediction (SD, SDXL)."""
        if self.size is not None:
            multiple = info.vae_factor * info.latent_multiple
            if self.size[0] % multiple or self.size[1] % multiple or min(self.size) <= 0:
                raise ValueError(f"sampler.size {self.size[0]}x{self.size[1]} px: this {info.family} model needs sides "
                                 f"that are positive multiples of {multiple} px (VAE factor {info.vae_factor} x "
                                 f"{info.latent_multiple} latent pixels per {'token' if info.patch_size > 1 else 'level'})")
            largest = info.max_latent_size and info.max_latent_size * info.vae_factor
            if largest and max(self.size) > largest:
                raise ValueError(f"sampler.size {self.size[0]}x{self.size[1]} px: this {info.family} model takes sides "
                                 f"up to {largest} px (what its position embedding covers)")
        if (self.scheduler in FLOW_MATCHING_SCHEDULERS) == info.flow_matching:
            return
        if info.flow_matching:
            raise ValueError(f"sampler.scheduler {self.scheduler!r} is for noise-prediction models; this "
                             f"{info.family} model was trained with flow matching: set sampler.scheduler: "
                             f"{FLOW_MATCHING_SCHEDULERS[0]}")
        raise ValueError(f"sampler.scheduler {self.scheduler!r} is for flow-matching models (SD3, FLUX); this "
                         f"{info.family} model predicts noise: use e.g. ddim")


class ClassifierSpec(_Strict):
    """The diffusion classifier (``synthscene.label.classify``) and the not-drawn check it
    makes: a class keeps its pixels only if the prompt explains them better with the class
    than with it cut out, by ``min_class_gain`` (1 - error with / error without; a name the
    model cannot draw changes nothing) and than with a rival class in its place, by
    ``min_context_margin``; the rest is 255, no instance. None: no check."""

    classifier_timesteps: tuple[int, ...] = Field((850, 950), min_length=1)
    classifier_repeats: int = Field(3, ge=1, le=32)
    min_class_gain: float | None = Field(0.05, ge=0.0, lt=1.0)
    # the check's in-context question: does the class's word in its own caption explain its
    # pixels better than each rival's word in its place ("a photo of a bottle and a cup"
    # against "a photo of a box and a cup", ...; rivals: the spec's classes the prompt did not
    # name), by this margin (1 - error(prompt) / lowest error with a rival in its place)? A
    # word the model never learnt draws some stray shape that a word it knows explains as
    # well. Costs one classifier row per named class and rival. None: not asked.
    min_context_margin: float | None = Field(0.02, ge=-1.0, lt=1.0)

    def check_model(self, info, user: str, instead: str) -> None:
        """Refuse, from the model's configs (``models.info.ModelInfo``), classifier timesteps
        outside its training schedule (every family runs the classifier through its adapter).
        ``user``: what needs it; ``instead``: the way out."""
        if max(self.classifier_timesteps) >= info.train_timesteps:
            raise ValueError(f"classifier_timesteps {self.classifier_timesteps} must be below the model's "
                             f"{info.train_timesteps} training timesteps")


class ObjectnessSpec(ClassifierSpec):
    """Where a prompt's objects are, read from its attention to the object tokens
    (``label.attention_maps.objectness_map``); the classifier (its base) then names them."""

    # which text tokens say where the prompt's objects are (recipe ours, and mosaic):
    # "from_first_class_word" (the class words, end-of-text and padding: where a context-mixing
    # encoder such as real SD's CLIP moves a prompt's content) or "class_words" (the class words
    # alone: for token states without context, e.g. the embedded MMDiT's, whose padding is the
    # same vector in every prompt)
    objectness_tokens: Literal["from_first_class_word", "class_words"] = "from_first_class_word"
    # which encoders' tokens the words are read from, where a model has several (SD3: CLIP and
    # T5): "all" averages over them; "t5" or "clip" reads one (the embedded MMDiT places its
    # words in its T5 tokens: benchmarks/label_tuning.py). Used by every recipe and by mosaic.
    word_encoders: Literal["all", "clip", "t5"] = "all"

    @property
    def class_words_only(self) -> bool:
        return self.objectness_tokens == "class_words"


class Text2LabelsSpec(ObjectnessSpec):
    """How labels are read from a generation (see ``synthscene.methods.text2labels``).

    ``faithful`` is Dataset Diffusion: class-prompt cross-attention, self-attention
    exponentiation, per-class min-max, foreground / background thresholds with 255 between.
    ``ours`` (default): where objects are from the prompt's own cross-attention over the
    late steps, spread along self-attention and cut against the image (GrabCut, then a
    colour matte at the edges); the foreground is split into one segment per object by
    colour, and which class each segment shows is from a diffusion classifier over the
    named classes (a class that was not drawn claims nothing); near-even edge blends are
    255 in the semantic mask (``uncertain_blend``).
    """

    recipe: Literal["faithful", "ours"] = "ours"
    cross_resolutions: tuple[int, ...] = (16,)
    # default: all steps for "faithful", the later half for "ours"
    step_window: tuple[float, float] = None  # type: ignore[assignment]
    min_instance_area: int = Field(4, ge=1)
    self_resolution: int | None = Field(16, ge=1, le=32)
    # faithful
    self_attention_power: int = Field(4, ge=0, le=16)
    foreground: float = Field(0.6, ge=0.0, le=1.0)
    background: float = Field(0.5, ge=0.0, le=1.0)
    # ours
    objectness_self_attention_power: int = Field(1, ge=0, le=16)  # 0: cross-attention alone
    objectness_threshold: float = Field(0.4, ge=0.0, le=1.0)
    grabcut_background_below: float = Field(0.3, ge=0.0, le=1.0)
    grabcut_foreground_above: float = Field(0.95, ge=0.0, le=1.0)
    grabcut_iterations: int = Field(3, ge=0, le=20)  # 0: plain threshold
    grabcut_min_side: int = Field(96, ge=0, le=1024)  # smaller images are cut upscaled (see refine)
    matting_colours: int = Field(2, ge=0, le=8)  # 0: keep GrabCut's edges (see refine.matte_regions)
    # edge pixels whose object-colour blend weight lies in [low, high) are uncertain (255) in
    # the semantic mask, as VOC marks object borders; instances keep them, cut at 0.5. None: none.
    uncertain_blend: tuple[float, float] | None = (0.4, 0.6)
    colour_split_distance: float = Field(35.0, ge=0.0)  # Lab; 0: one segment per connected region
    colour_group_distance: float = Field(15.0, ge=0.0)  # Lab; look-alike segments share a class
    # the not-drawn check's second question: does the class's own word explain its pixels
    # better than every class of the spec the prompt did not name (its rivals), by this margin
    # (1 - error(word) / lowest rival error)? A class the model cannot draw loses to the class
    # whose look the model gave it. A rival counts only where its own word explains the pixels
    # better than the empty prompt by ``rival_word_gain`` (a word the model cannot draw either
    # is no rival). None: not asked (and no rival rows are computed).
    min_rival_margin: float | None = Field(None, ge=-1.0, lt=1.0)
    rival_word_gain: float = Field(0.04, ge=0.0, lt=1.0)
    # the third question (asked with the rivals' rows): does the class's own word alone explain
    # its pixels better than the empty prompt, by this much (1 - error(word) / error(empty))?
    # A name the model never learnt explains nothing on its own. None: not asked.
    min_word_gain: float | None = Field(None, ge=-1.0, lt=1.0)

    @model_validator(mode="before")
    @classmethod
    def _recipe_defaults(cls, data):
        if isinstance(data, dict) and data.get("step_window") is None:
            data = {**data, "step_window": (0.0, 1.0) if data.get("recipe") == "faithful" else (0.5, 1.0)}
        return data

    @model_validator(mode="after")
    def _ordered(self):
        if not self.grabcut_background_below <= self.objectness_threshold <= self.grabcut_foreground_above:
            raise ValueError("need grabcut_background_below <= objectness_threshold <= grabcut_foreground_above")
        if not self.background <= self.foreground:
            raise ValueError("need background <= foreground")
        if self.uncertain_blend is not None and not 0.0 <= self.uncertain_blend[0] <= 0.5 <= self.uncertain_blend[1]:
            raise ValueError(f"uncertain_blend must satisfy 0 <= low <= 0.5 <= high, got {self.uncertain_blend}")
        if not 0.0 <= self.step_window[0] < self.step_window[1] <= 1.0:
            raise ValueError(f"step_window must satisfy 0 <= first < last <= 1, got {self.step_window}")
        return self


class MosaicSpec(ObjectnessSpec):
    """MosaicFusion: one prompt per region of a canvas, labels per region.

    Sizes are in pixels. ``region_size`` defaults to the model's native size and
    ``overlap`` to MosaicFusion's 48x64 at 512 px, scaled to it; the canvas is the grid
    of regions minus the overlaps, rounded up to a multiple of the VAE factor x 8. Each
    instance must pass the not-drawn check (``ClassifierSpec``) for its region's class.
    """

    grid: tuple[int, int] = (2, 2)  # rows, columns (or give ``regions``: 1, 2 or a square number)
    region_size: tuple[int, int] | None = None
    overlap: tuple[int, int] | None = None
    canvas: tuple[int, int] | None = None
    jitter: tuple[float, float] = (0.75, 1.25)  # split points move by this factor of a region
    prompt_template: str = "a photo of a single {name}, {definition}"
    batched: bool = True  # all regions in one UNet call per step; False: one after another
    strict: bool = False  # MosaicFusion: drop an image unless every region gives one instance
    categories: tuple[str, ...] = ()  # draw regions from these classes only (default: all)
    area_range: tuple[float, float] = (0.05, 0.95)  # instance area / region area
    # labels read the finest cross-attention resolution of the windows, over these steps
    step_window: tuple[float, float] = (0.5, 1.0)
    # each cell is cut by GrabCut at the Otsu threshold of its objectness; pixels below
    # min(grabcut_background_below, that threshold) are fixed background, those at or above
    # max(grabcut_foreground_above, that threshold) fixed foreground
    grabcut_background_below: float = Field(0.4, ge=0.0, le=1.0)
    grabcut_foreground_above: float = Field(0.95, ge=0.0, le=1.0)
    grabcut_iterations: int = Field(3, ge=0, le=20)
    grabcut_min_side: int = Field(0, ge=0, le=1024)  # cells smaller are cut upscaled (label.refine); 0: never
    matting_colours: int = Field(2, ge=0, le=8)  # 0: keep GrabCut's edges (see refine.matte_regions)
    # optional: refine each instance with SAM prompted by its box (hub id or local folder)
    sam_model: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _grid_from_regions(cls, data):
        if isinstance(data, dict) and "regions" in data:
            data = dict(data)
            count = data.pop("regions")
            side = round(count ** 0.5) if isinstance(count, int) and count > 0 else 0
            if isinstance(count, int) and count in (1, 2):
                data["grid"] = (1, count)
            elif side > 0 and side * side == count:
                data["grid"] = (side, side)
            else:
                raise ValueError(f"{count!r} regions do not tile a canvas: use 1, 2, a square number, or a grid")
        return data

    @model_validator(mode="after")
    def _valid(self):
        if min(self.grid) < 1:
            raise ValueError(f"grid {self.grid} needs at least one row and one column")
        low, high = self.jitter
        if not 0.5 <= low <= 1.0 <= high <= 1.5:
            raise ValueError(f"jitter {self.jitter} must satisfy 0.5 <= low <= 1 <= high <= 1.5")
        if not 0.0 <= self.area_range[0] < self.area_range[1] <= 1.0:
            raise ValueError(f"area_range {self.area_range} must satisfy 0 <= low < high <= 1")
        if not self.grabcut_background_below <= self.grabcut_foreground_above:
            raise ValueError("need grabcut_background_below <= grabcut_foreground_above")
        if "{name}" not in self.prompt_template:
            raise ValueError(f"prompt_template {self.prompt_template!r} has no {{name}} placeholder")
        return self


class _DatasetBase(_Strict):
    """Fields every method shares."""

    name: str = Field(min_length=1)
    model: str = "embedded"
    num_samples: int = Field(ge=1)
    seed: int = Field(0, ge=0)
    shard_size: int = Field(16, ge=1)
    batch_size: int = Field(8, ge=1)
    classes: tuple[ClassSpec, ...] = Field(min_length=1)
    sampler: SamplerSpec = SamplerSpec()

    @model_validator(mode="after")
    def _classes_valid(self):
        names = [c.name for c in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique, got {names}")
        for cls in self.classes:
            for template in cls.prompts:
                if "{name}" not in template:
                    raise ValueError(f"prompt {template!r} of class {cls.name!r} has no {{name}} placeholder")
        return self

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def _all_known(self, names, what: str):
        """Refuse class names (of a method's section) that the taxonomy does not hold."""
        missing = [name for name in names if name not in self.class_names]
        if missing:
            raise ValueError(f"{what} not in the taxonomy (classes): {', '.join(missing)}")
        return self


class _PromptedBase(_DatasetBase):
    """Methods whose samples come from one prompt naming some of the classes."""

    objects_per_prompt: tuple[int, int] = (1, 2)
    # "{objects}" becomes e.g. "a ball and two leaves"
    prompt_templates: tuple[str, ...] = ("a photo of {objects}",)

    @model_validator(mode="after")
    def _prompts_valid(self):
        low, high = self.objects_per_prompt
        if not 1 <= low <= high <= len(self.classes):
            raise ValueError(f"objects_per_prompt {self.objects_per_prompt} must satisfy 1 <= low <= high <= "
                             f"{len(self.classes)} (the number of classes)")
        for template in self.prompt_templates:
            if "{objects}" not in template:
                raise ValueError(f"prompt template {template!r} has no {{objects}} placeholder")
        return self


class Text2LabelsDatasetSpec(_PromptedBase):
    """Text -> image + labels (``synthscene.methods.text2labels``)."""

    method: Literal["text2labels"] = "text2labels"
    text2labels: Text2LabelsSpec = Text2LabelsSpec()


class GroundingSpec(_Strict):
    """Boxes from a trained grounding head (``synthscene train-grounding``; see
    ``synthscene.methods.grounding``)."""

    head: str  # a train-grounding run folder (head.safetensors, head.json)
    # the classes the head's teacher never saw, for the card and base / novel scores
    novel_classes: tuple[str, ...] = ()
    score_threshold: float = Field(0.4, ge=0.0, le=1.0)
    nms_iou: float = Field(0.5, gt=0.0, le=1.0)  # per class
    max_instances: int = Field(20, ge=1)
    # optional masks inside each box: GrabCut against the image, or SAM prompted by the box
    masks: Literal["none", "grabcut", "sam"] = "none"
    sam_model: str | None = None
    grabcut_iterations: int = Field(3, ge=1, le=20)

    @model_validator(mode="after")
    def _sam_named(self):
        if (self.masks == "sam") != (self.sam_model is not None):
            raise ValueError("masks: sam needs sam_model (a hub id or folder), and sam_model needs masks: sam")
        return self


class GroundingDatasetSpec(_PromptedBase):
    """Text -> image + boxes from a grounding head (``synthscene.methods.grounding``)."""

    method: Literal["grounding"]
    grounding: GroundingSpec

    @model_validator(mode="after")
    def _novel_known(self):
        return self._all_known(self.grounding.novel_classes, "novel classes")


class MosaicDatasetSpec(_DatasetBase):
    """Region prompts on one canvas -> image + instances (``synthscene.methods.mosaic``)."""

    method: Literal["mosaic"]
    mosaic: MosaicSpec = MosaicSpec()

    @model_validator(mode="after")
    def _categories_known(self):
        return self._all_known(self.mosaic.categories, "mosaic categories")


class SourceSpec(_Strict):
    """A real labelled dataset: a COCO instances file (+ image root), a Cityscapes-layout
    folder or a YOLO dataset (its data.yaml)."""

    format: Literal["coco", "cityscapes", "yolo"]
    path: str = Field(min_length=1)  # coco: the instances JSON; cityscapes: the layout's root; yolo: data.yaml
    split: str = "train"  # cityscapes, yolo
    image_root: str | None = None  # coco: where its file_names are (default: beside the JSON)


class RestyleSpec(_Strict):
    """InstSynth: regenerate the largest instances of real images inside their masks; the
    source's labels stay valid (``synthscene.methods.restyle``)."""

    source: SourceSpec
    instances_per_image: int = Field(3, ge=1)  # the K largest non-crowd instances of each image
    variants_per_instance: int = Field(2, ge=1)  # restyled copies of each source image
    # per class, prompts to draw from; a class without one uses the template
    style_prompts: dict[str, tuple[str, ...]] = {}
    style_template: str = "a photo of a {name}"
    # the denoising starts this far into the schedule (0: from pure noise inside the mask)
    start: float = Field(0.25, ge=0.0, lt=1.0)
    mask_dilation: int = Field(0, ge=0, le=64)  # pixels the mask grows by before regeneration
    min_instance_area: int = Field(16, ge=1)  # smaller instances are not restyled
    # blend: blended latent diffusion with a text-to-image model; inpaint: an inpainting
    # model (9-channel UNet); auto: whichever the model is
    mode: Literal["auto", "blend", "inpaint"] = "auto"
    # InstSynth's focused crops: a 2:1 window around the largest restyled instance, resized
    # back to the image's size (None: on for images at least 1.5x as wide as tall)
    focused_crops: bool | None = None

    @model_validator(mode="after")
    def _prompts_valid(self):
        if "{name}" not in self.style_template:
            raise ValueError(f"style_template {self.style_template!r} has no {{name}} placeholder")
        empty = [name for name, prompts in self.style_prompts.items() if not prompts]
        if empty:
            raise ValueError(f"style_prompts of {empty[0]!r} is empty: give prompts or leave the class out")
        return self


class RestyleDatasetSpec(_DatasetBase):
    """Real instances restyled inside their masks (``synthscene.methods.restyle``).
    ``classes`` are the source's, in its order; ``num_samples`` takes the first (image,
    variant) pairs."""

    method: Literal["restyle"]
    restyle: RestyleSpec

    @model_validator(mode="after")
    def _style_classes_known(self):
        return self._all_known(self.restyle.style_prompts, "style_prompts for a class")


class SampledLayoutSpec(_Strict):
    """Layouts made of the source's instance shapes at random places, sizes and counts."""

    objects: tuple[int, int] = (1, 4)  # objects per layout, inclusive
    side: tuple[float, float] = (0.3, 0.6)  # an object's longer side, share of the image's shorter side
    min_visible: float = Field(0.5, gt=0, le=1)  # share of its pixels every object keeps
    shape_images: int = Field(500, ge=1)  # the source images the shapes come from
    # only shapes no other instance and no image border touches: a covered or cut shape,
    # rearranged, would be a new shape (False: every instance's visible shape)
    whole_shapes: bool = True
    classes: tuple[str, ...] = ()  # the classes placed (default: every spec class the source has)
    size: tuple[int, int] | None = None  # (height, width); default: the ControlNet's resolution

    @model_validator(mode="after")
    def _ranges(self):
        low, high = self.objects
        if not 1 <= low <= high:
            raise ValueError(f"objects {self.objects} must satisfy 1 <= low <= high")
        if not 0 < self.side[0] <= self.side[1] <= 1:
            raise ValueError(f"side {self.side} must satisfy 0 < low <= high <= 1")
        return self


class LayoutSpec(_Strict):
    """iPOSE, diffusion-native: a ControlNet draws a layout; the layout is the label
    (``synthscene.methods.layout``)."""

    # a train-controlnet run (control.json + controlnet/), "embedded" (the one trained beside the
    # embedded model), or a ControlNet folder / hub id with palette: ade20k
    controlnet: str = Field("embedded", min_length=1)
    source: SourceSpec  # real layouts (mode dataset) or the shapes sampled layouts are made of
    mode: Literal["dataset", "sampled"] = "dataset"
    sampled: SampledLayoutSpec = SampledLayoutSpec()
    # a train-parts output ("embedded": the one trained on the shapes world): infers the parts
    # of part-aware instances the source has no part map for
    part_model: str | None = None
    with_parts: bool = True  # False: part channels left empty (part-free control)
    # channels: the control image of train-controlnet; ade20k: an RGB segmentation map in the
    # ADE20K palette, for pre-trained segmentation ControlNets (needs ade20k_classes)
    palette: Literal["channels", "ade20k"] = "channels"
    ade20k_classes: dict[str, str] = {}  # spec class -> ADE20K class name
    # how strongly the control steers; default: the ControlNet's control.json (chosen for it), else 1
    conditioning_scale: float | None = Field(None, ge=0)
    caption_template: str = "a photo of {}"

    @model_validator(mode="after")
    def _palette(self):
        if self.palette == "ade20k" and not self.ade20k_classes:
            raise ValueError("palette ade20k needs ade20k_classes: the ADE20K class each spec class is drawn as")
        if "{}" not in self.caption_template:
            raise ValueError(f"caption_template {self.caption_template!r} has no {{}} placeholder")
        return self


class LayoutDatasetSpec(_DatasetBase):
    """Layouts -> images whose labels are the layouts (``synthscene.methods.layout``).
    ``classes`` are the source's, in its order."""

    method: Literal["layout"]
    layout: LayoutSpec

    @model_validator(mode="after")
    def _layout_classes_known(self):
        self._all_known(self.layout.sampled.classes, "sampled.classes")
        return self._all_known(self.layout.ade20k_classes, "ade20k_classes for a class")


# One pydantic model per method, chosen by ``method``.
DatasetSpec = Annotated[Text2LabelsDatasetSpec | MosaicDatasetSpec | GroundingDatasetSpec | RestyleDatasetSpec
                        | LayoutDatasetSpec, Field(discriminator="method")]
_ADAPTER = TypeAdapter(DatasetSpec)
# each method's own section
METHOD_SECTIONS = {"text2labels": "text2labels", "mosaic": "mosaic", "grounding": "grounding", "restyle": "restyle",
                   "layout": "layout"}


def validate_spec(data: dict, where: str = "spec") -> DatasetSpec:
    """A spec from a mapping (``method`` defaults to text2labels); every problem is reported
    in one ``SpecError`` with its field path."""
    if not isinstance(data, dict):
        raise SpecError(f"{where} must hold a mapping of spec fields, got {type(data).__name__}")
    data = {"method": "text2labels", **data}
    method = data["method"]
    if method not in METHOD_SECTIONS:
        raise SpecError(f"{where}: method: unknown method {method!r}; choose one of {', '.join(METHOD_SECTIONS)}")
    # older specs carried every method's section; name the one that does not belong here
    foreign = [s for m, s in METHOD_SECTIONS.items() if m != method and s in data]
    if foreign:
        raise SpecError(f"{where}: section '{foreign[0]}:' belongs to method {foreign[0]!r}, but this spec has "
                        f"method {method!r}: remove the section, or set method: {foreign[0]}")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'spec'}: {e['msg']}"
                             for e in err.errors())
        raise SpecError(f"{where}: {problems}") from None


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and validate a YAML spec; every problem is reported with its field path."""
    return validate_spec(load_yaml(path, "spec file"), str(path))


def load_yaml(path: str | Path, what: str = "file"):
    """The data of a YAML file, or one ``SpecError`` line naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SpecError(f"{path} is not a text file") from None
    except yaml.YAMLError as err:
        raise SpecError(f"{path} is not valid YAML: {yaml_error_line(err)}") from None


def validation_error_line(err: ValidationError) -> str:
    """Pydantic's several-line report as one line: ``field: problem; ...``."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in err.errors())


def yaml_error_line(err: yaml.YAMLError) -> str:
    """PyYAML's several-line message as one line: where, then what."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or (str(err).splitlines() or [type(err).__name__])[0]
    return (f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else "") + problem


def dump_spec(spec: _DatasetBase) -> str:
    """The resolved spec (defaults filled in) as YAML."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
