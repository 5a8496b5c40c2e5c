"""Grounding (InstaGen): text -> image + boxes from a trained grounding head.

1. plan: a prompt naming 1..k classes per sample, as text2labels plans them;
2. generate each batch, keeping the input latents of the last denoising step;
3. one guided denoiser call on them gives the last step's features; the head (trained by
   ``synthscene train-grounding``) scores its queries against the embeddings of the classes
   the prompt names, so base and novel classes are labelled alike (a head trained with
   ``class_evidence`` also reads the generator's denoising evidence for each named class);
4. boxes above ``score_threshold`` after per-class NMS become box-only instances with their
   scores; optionally each box gets a mask (GrabCut inside the box, or SAM prompted by it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from synthscene.methods.text2labels import Task, check_task
from synthscene.methods.text2labels import plan as plan_prompts
from synthscene.models.info import model_info, model_text_layout, require_family
from synthscene.records import Instances, Sample
from synthscene.spec import GroundingDatasetSpec

__all__ = ["Task", "Worker", "check", "plan", "read_head_info"]


def plan(spec: GroundingDatasetSpec) -> list[Task]:
    return plan_prompts(spec)


def read_head_info(head: str | Path) -> dict:
    """``head.json`` of a train-grounding run, refused with one message when it is missing."""
    from synthscene.grounding.train import HEAD_FILE, HEAD_INFO

    folder = Path(head)
    for name in (HEAD_INFO, HEAD_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"grounding head {folder} has no {name}: give a finished "
                                    "'synthscene train-grounding' run folder")
    return json.loads((folder / HEAD_INFO).read_text())


def check(spec: GroundingDatasetSpec, tasks: list[Task]) -> None:
    """The head exists and reads this model's text width; every prompt names its classes."""
    require_family(model_info(spec.model), "method 'grounding'")
    info = read_head_info(spec.grounding.head)
    text_dim = model_info(spec.model).text_dim
    if text_dim is not None and info["head"]["text_dim"] != text_dim:
        raise ValueError(f"grounding head {spec.grounding.head} reads {info['head']['text_dim']}-wide text "
                         f"embeddings; model {spec.model!r} gives {text_dim}: the head belongs to another model")
    if spec.sampler.steps < 2:
        raise ValueError("grounding reads the last denoising step's input: sampler.steps must be >= 2")
    layout = model_text_layout(spec.model)
    for task in tasks:
        check_task(layout, task)


class Worker:
    """Loads the model, the head and the class embeddings once; boxes a batch of tasks."""

    def __init__(self, spec: GroundingDatasetSpec, device: str = "cpu"):
        from synthscene.grounding.head import GroundingHead, HeadConfig
        from synthscene.grounding.text import class_embeddings
        from synthscene.grounding.train import HEAD_FILE
        from synthscene.models.load import load_pipeline
        from synthscene.models.schedulers import set_scheduler
        from synthscene.models.weights import load_into, read_state_dict

        self.spec = spec
        self.pipe = load_pipeline(spec.model, device=device)
        self.pipe.set_progress_bar_config(disable=True)
        set_scheduler(self.pipe, spec.sampler.scheduler)
        info = read_head_info(spec.grounding.head)
        self.head = GroundingHead(HeadConfig.model_validate(info["head"]))
        self._check_layout()  # before the weights: a head of another layout cannot even load them
        head_file = Path(spec.grounding.head) / HEAD_FILE
        load_into(self.head, read_state_dict(head_file), head_file, "the head its head.json describes")
        self.head.to(self.pipe.device).eval()
        self.embeddings = class_embeddings(self.pipe, spec.class_names).to(self.pipe.device)
        self.sam = None
        if spec.grounding.masks == "sam":
            from synthscene.label.sam import SamRefiner

            self.sam = SamRefiner(spec.grounding.sam_model, self.pipe.device)

    def _check_layout(self) -> None:
        """One denoiser call on zeros: its features must be the ones the head was trained on."""
        import torch

        from synthscene.grounding.generate import last_step_features

        unet = self.pipe.unet
        side = unet.config.sample_size
        latents = torch.zeros(1, unet.config.in_channels, side, side)
        features = last_step_features(self.pipe, latents, 1, [""], self.spec.sampler.guidance)
        self.head.check(features)

    def __call__(self, tasks: list[Task]) -> list[Sample]:
        import torch

        from synthscene.grounding.generate import generate_with_latents, last_step_features
        from synthscene.grounding.head import predict_boxes

        sampler = self.spec.sampler
        made = generate_with_latents(self.pipe, [t.prompt for t in tasks], [t.seed for t in tasks], sampler.steps,
                                     sampler.guidance)
        features = last_step_features(self.pipe, made.latents, made.timestep, [t.prompt for t in tasks],
                                      sampler.guidance)
        width = max(len(t.class_ids) for t in tasks)
        classes = torch.zeros(len(tasks), width, self.embeddings.shape[1], device=self.pipe.device)
        mask = torch.zeros(len(tasks), width, dtype=torch.bool, device=self.pipe.device)
        for b, task in enumerate(tasks):
            classes[b, : len(task.class_ids)] = self.embeddings[list(task.class_ids)]
            mask[b, : len(task.class_ids)] = True
        evidence = None
        if self.head.config.class_evidence:
            from synthscene.grounding.evidence import class_evidence
            from synthscene.models.tokens import attention_word

            evidence = class_evidence(self.pipe, made.latents, [[attention_word(w) for w in t.words] for t in tasks],
                                      [t.seed for t in tasks]).to(self.pipe.device)
        with torch.no_grad():
            output = self.head([f.to(self.pipe.device) for f in features], classes, mask, evidence)
        predictions = predict_boxes({k: v.cpu() for k, v in output.items()}, mask.cpu(), made.images.shape[1:3],
                                    self.spec.grounding.score_threshold)
        return [self._sample(task, image, p) for task, image, p in zip(tasks, made.images, predictions)]

    def _sample(self, task: Task, image: np.ndarray, prediction: dict) -> Sample:
        from torchvision.ops import batched_nms

        params = self.spec.grounding
        unique = batched_nms(prediction["boxes"], prediction["scores"], prediction["classes"], params.nms_iou)
        keep = unique[: params.max_instances]  # NMS returns them by falling score
        dropped = {"overlap": len(prediction["boxes"]) - len(unique), "over_max_instances": len(unique) - len(keep)}
        boxes = prediction["boxes"][keep].numpy().astype(np.float32)
        class_ids = np.array([task.class_ids[k] for k in prediction["classes"][keep].tolist()], np.int64)
        scores = prediction["scores"][keep].numpy().astype(np.float32)
        if params.masks == "none" or len(boxes) == 0:
            instances = Instances.from_boxes(boxes.reshape(-1, 4), class_ids, scores)
        else:
            masks = self._masks(image, boxes)
            instances = Instances(boxes.reshape(-1, 4), class_ids, scores, masks)
        return Sample(task.index, task.seed, task.prompt, image, instances, None, task.class_ids, dropped)

    def _masks(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        from synthscene.formats.coco import box_masks
        from synthscene.label.refine import grabcut_in_box

        if self.sam is not None:
            return self.sam(image, box_masks(boxes, *image.shape[:2]))
        return np.stack([grabcut_in_box(image, box, self.spec.grounding.grabcut_iterations) for box in boxes])
