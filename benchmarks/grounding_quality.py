"""Boxes from the grounding head, for classes the teacher knows and for ones it never saw.

    .venv/bin/python benchmarks/grounding_quality.py [--work runs/grounding-quality] [--eval-images 192]

The shapes world's open-vocabulary split: base ball, leaf, box, hat; novel star, ring.
1. A shapes world (1,000 train images, seed 11); the teacher, a Faster R-CNN MobileNetV3-FPN
   (``--teacher-steps``, default 3,000, batch 4, 96 px; at 800 it boxed 372 of the 600 base
   images at score >= 0.8, at 3,000 516), is trained on its base-class annotations only.
2. ``train-grounding`` on the embedded model (it has seen every class, as Stable Diffusion
   has): 150 images per base class, 300 per novel class, seed 0; the teacher boxes the base
   images (score >= 0.8), the head's EMA the novel ones from half the schedule.
3. Fresh images, made only afterwards from another seed (``--eval-seed``), prompts naming
   one or two of all six classes: labelled by the head (``method: grounding``), by the teacher
   (prompt classes only) and by text2labels' attention instances (the same prompts and seeds
   give the same images), each scored against the oracle's instances (box AP50 over the base
   and over the novel classes, synthscene's evaluator).

Every stage is kept in ``--work`` and reused when it is there (the head's run resumes), so a
run cut short continues. Last line: one JSON object (``ap50_base``, ``ap50_novel``,
``teacher_ap50_*``, ``attention_ap50_*``; goal ``ap50_novel`` >= 0.5 and >= 0.8 x ``ap50_base``,
the head above the attention labels on both).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from synthscene.engine import Execution, run_spec
from synthscene.formats.coco import keep_categories
from synthscene.grounding.train import GroundingTrainConfig, HeadSettings, train_grounding
from synthscene.spec import load_spec, validate_spec
from synthscene.store import open_run
from synthscene.train.data import Source
from synthscene.train.downstream import DownstreamConfig, load_trained, train_downstream
from synthscene.world import CLASS_NAMES
from synthscene.world.build import write_world
from synthscene.world.oracle import oracle_instances

BASE, NOVEL = ("ball", "leaf", "box", "hat"), ("star", "ring")


def teacher_run(work: Path, steps: int = 3000, reuse: Path | None = None) -> Path:
    """The base-class teacher in ``work``; an earlier ``--work``'s (``reuse``) when it was
    trained for as many steps (its world is reused either way)."""
    if reuse is not None and (reuse / "teacher" / "model.safetensors").is_file():
        earlier = DownstreamConfig.model_validate_json((reuse / "teacher" / "config.json").read_text())
        if earlier.steps == steps:
            return reuse / "teacher"
    world, teacher = (reuse or work) / "world", work / "teacher"
    if not (world / "world.json").is_file():
        write_world(world, n_train=1000, n_val=200, seed=11)
    base_only = world / "annotations" / "instances_train_base.json"
    if not base_only.is_file():
        truth = json.loads((world / "annotations" / "instances_train.json").read_text())
        base_only.write_text(json.dumps(keep_categories(truth, BASE)))
    if not (teacher / "model.safetensors").is_file():
        config = DownstreamConfig(task="detection", model="fasterrcnn_mobilenet_v3_large_fpn",
                                  sources=[Source(str(base_only))], steps=steps, batch_size=4, image_size=96,
                                  checkpoint_every=200)
        train_downstream(config, teacher, resume=(teacher / "config.json").is_file())
    return teacher


def head_run(work: Path, teacher: Path, args) -> Path:
    out = work / "grounding"
    config = GroundingTrainConfig(teacher=str(teacher), base_classes=BASE, novel_classes=NOVEL,
                                  images_per_base_class=args.base_images, images_per_novel_class=args.novel_images,
                                  steps=args.steps, batch_size=args.batch_size,
                                  ignore_unboxed_classes=args.ignore_unboxed,
                                  head=HeadSettings(class_evidence=args.class_evidence,
                                                    proposal_strides=args.proposal_strides))
    if not (out / "head.safetensors").is_file():
        resume = (out / "config.json").is_file()
        reuse = args.reuse / "grounding" if args.reuse and not resume else None
        if args.oracle_labels and not resume:
            reuse = oracle_labelled(reuse, work / "oracle-labelled")
        train_grounding(config, out, resume=resume, images_from=reuse)
    return out


def oracle_labelled(source: Path | None, out: Path) -> Path:
    """A copy of a train-grounding run's plan and images whose base-image labels are the
    oracle's instances of the prompt's classes (a control: what the head learns from exact
    boxes), for ``images_from``."""
    import shutil

    if source is None:
        raise SystemExit("--oracle-labels needs --reuse (a run whose images it relabels)")
    if not (out / "pseudo_labels.json").is_file():
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(source / "generated", out / "generated")
        for name in ("config.json", "prompts.jsonl"):
            shutil.copyfile(source / name, out / name)
        images = np.concatenate([np.load(p)["images"] for p in sorted((out / "generated").glob("shard-*.npz"))])
        labels, base = {}, 0
        for line in (out / "prompts.jsonl").read_text().splitlines():
            item = json.loads(line)
            if item["group"] != "base":
                continue
            base += 1
            truth = oracle_instances(images[item["index"]])
            kept = [(box, item["classes"].index(CLASS_NAMES[c])) for box, c in zip(truth.xyxy.tolist(), truth.class_id)
                    if CLASS_NAMES[c] in item["classes"]]
            if kept:
                labels[str(item["index"])] = {"boxes": [b for b, _ in kept], "classes": [k for _, k in kept],
                                              "scores": [1.0] * len(kept)}
        (out / "pseudo_labels.json").write_text(json.dumps({"images": base, "dropped_without_box": base - len(labels),
                                                            "labels": labels}))
    return out


def eval_runs(work: Path, head: Path, args) -> tuple[Path, Path]:
    common = {"model": "embedded", "num_samples": args.eval_images, "seed": args.eval_seed, "shard_size": 16,
              "batch_size": 16, "classes": [{"name": n} for n in CLASS_NAMES], "objects_per_prompt": [1, 2],
              "prompt_templates": ["a photo of {objects}"], "sampler": {"steps": 25, "guidance": 7.5}}
    grounding = validate_spec({**common, "name": "grounding-eval", "method": "grounding",
                               "grounding": {"head": str(head), "novel_classes": list(NOVEL),
                                             "score_threshold": 0.05}})
    example = load_spec("examples/shapes-text2labels.yaml")  # the text2labels settings of the README
    attention = validate_spec({**common, "name": "attention-eval", "method": "text2labels",
                               "text2labels": example.text2labels.model_dump(mode="json")})
    runs = []
    for spec, name in ((grounding, "eval-grounding"), (attention, "eval-attention")):
        out = work / name
        if name == "eval-attention" and args.reuse:  # the same images and labels: the head plays no part
            out = args.reuse / name
        if not (out / "dataset_card.md").is_file():
            run_spec(spec, out, resume=(out / "manifest.jsonl").is_file(), execution=Execution())
        runs.append(out)
    return runs[0], runs[1]


def categories() -> list[dict]:
    return [{"id": k + 1, "name": n} for k, n in enumerate(CLASS_NAMES)]


def ground_truth(samples) -> dict:
    annotations = []
    for sample in samples:
        truth = oracle_instances(sample.image)
        for (x0, y0, x1, y1), class_id in zip(truth.xyxy.tolist(), truth.class_id.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": sample.index + 1, "category_id": class_id + 1,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    images = [{"id": s.index + 1, "height": s.height, "width": s.width} for s in samples]
    return {"images": images, "categories": categories(), "annotations": annotations}


def detections_of(samples) -> list[dict]:
    return [{"image_id": s.index + 1, "category_id": int(c) + 1, "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(p)}
            for s in samples for (x0, y0, x1, y1), c, p in zip(s.instances.xyxy.tolist(), s.instances.class_id,
                                                               s.instances.score)]


@torch.no_grad()
def teacher_detections(teacher: Path, samples) -> list[dict]:
    model, _, names = load_trained(teacher)
    detections = []
    for sample in samples:
        output = model([torch.from_numpy(sample.image).permute(2, 0, 1).float() / 255.0])[0]
        named = {CLASS_NAMES[c] for c in sample.class_ids}
        for box, label, score in zip(output["boxes"].tolist(), output["labels"].tolist(), output["scores"].tolist()):
            if names[label - 1] in named:
                x0, y0, x1, y1 = box
                detections.append({"image_id": sample.index + 1, "category_id": CLASS_NAMES.index(names[label - 1]) + 1,
                                   "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score})
    return detections


def ap50(truth: dict, detections: list[dict], names: tuple[str, ...]) -> float:
    """Box AP50 averaged over the classes ``names`` (the truth and detections of the others left out)."""
    from synthscene.evaluation.detection import evaluate_detections

    ids = {c["id"] for c in truth["categories"] if c["name"] in names}
    subset = keep_categories(truth, list(names))
    return round(evaluate_detections(subset, [d for d in detections if d["category_id"] in ids], "bbox")["AP50"], 4)


def recall_by_prompt(truth: dict, detections: list[dict], samples) -> dict:
    """Share of the oracle's objects of the named classes that a box finds at IoU >= 0.5, of
    any class / of the right class, over images whose prompt names one class and two."""
    from torchvision.ops import box_iou

    def xyxy(boxes):
        return torch.tensor([[x, y, x + w, y + h] for x, y, w, h in boxes], dtype=torch.float32).reshape(-1, 4)

    found = {}
    for sample in samples:
        image_id, named = sample.index + 1, {c + 1 for c in sample.class_ids}
        objects = [a for a in truth["annotations"] if a["image_id"] == image_id and a["category_id"] in named]
        boxes = [d for d in detections if d["image_id"] == image_id]
        counts = found.setdefault(len(named), [0, 0, 0])
        counts[0] += len(objects)
        if not objects or not boxes:
            continue
        iou = box_iou(xyxy([a["bbox"] for a in objects]), xyxy([d["bbox"] for d in boxes])) >= 0.5
        same = torch.tensor([[a["category_id"] == d["category_id"] for d in boxes] for a in objects])
        counts[1] += int(iou.any(1).sum())
        counts[2] += int((iou & same).any(1).sum())
    return {f"{'one_class' if n == 1 else 'two_classes'}": {"objects": total, "any_class": round(a / max(total, 1), 3),
                                                          "right_class": round(r / max(total, 1), 3)}
            for n, (total, a, r) in sorted(found.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/grounding-quality"))
    parser.add_argument("--base-images", type=int, default=150)
    parser.add_argument("--novel-images", type=int, default=300)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-images", type=int, default=192)
    parser.add_argument("--eval-seed", type=int, default=1000)
    parser.add_argument("--teacher-steps", type=int, default=3000)
    parser.add_argument("--reuse", type=Path, default=None,
                        help="an earlier --work of the same generation settings: its world, generated training "
                             "images, attention-labelled eval run and (trained as long) teacher are reused")
    parser.add_argument("--ignore-unboxed", action="store_true",
                        help="a named class its pseudo-labels box nowhere in an image is left out of that "
                             "image's classification loss (not taught as background)")
    parser.add_argument("--class-evidence", action="store_true",
                        help="the head also reads the generator's denoising evidence for each named class")
    parser.add_argument("--proposal-strides", type=float, default=None,
                        help="the head's proposal boxes this many strides of their level wide")
    parser.add_argument("--oracle-labels", action="store_true",
                        help="a control: the head learns from the oracle's boxes of the base images instead of "
                             "the teacher's (needs --reuse)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    teacher = teacher_run(args.work, args.teacher_steps, args.reuse)
    head = head_run(args.work, teacher, args)
    grounding, attention = eval_runs(args.work, head, args)
    labelled = list(open_run(grounding).samples())
    attended = list(open_run(attention).samples())
    same = all(np.array_equal(a.image, b.image) for a, b in zip(labelled, attended))
    truth = ground_truth(labelled)
    scored = {"head": detections_of(labelled), "teacher": teacher_detections(teacher, labelled),
              "attention": detections_of(attended)}
    result, recall = {}, {}
    for who, detections in scored.items():
        prefix = "" if who == "head" else f"{who}_"
        result[f"{prefix}ap50_base"] = ap50(truth, detections, BASE)
        result[f"{prefix}ap50_novel"] = ap50(truth, detections, NOVEL)
        recall[who] = recall_by_prompt(truth, detections, labelled)
    result.update({
        "goal_ap50_novel": 0.5, "novel_over_base": round(result["ap50_novel"] / max(result["ap50_base"], 1e-9), 3),
        "goal_novel_over_base": 0.8, "eval_images": len(labelled), "oracle_instances": len(truth["annotations"]),
        "same_images": same, "base": list(BASE), "novel": list(NOVEL), "recall_iou50": recall,
        "pseudo_labels": {k: v for k, v in json.loads((head / "pseudo_labels.json").read_text()).items()
                          if k != "labels"},
    })
    print(json.dumps(result))


if __name__ == "__main__":
    main()
