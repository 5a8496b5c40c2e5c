"""Does the image show its layout? The oracle run on layout-conditioned images (SPADE / OASIS
protocol, with the shapes world's colour oracle as the segmenter).

    .venv/bin/python benchmarks/layout_fidelity.py --controlnet synthscene/assets/shapes_controlnet \
        --data runs/shapes-world [--images 200] [--split val] [--steps 25] [--guidance 1.0] \
        [--conditioning-scale S] [--text-guidance 7.5]

The layouts are the first ``--images`` of a world split the ControlNet never trained on.
Each is drawn three times with the same seed and caption (a count of its objects):
part-aware control (classes, boundaries, parts), part-free control (part channels empty)
and plain text-to-image (no control: the floor, at the base model's own ``--text-guidance``).
The control settings (``--guidance`` 1, i.e. no classifier-free guidance, and
``--conditioning-scale`` 2, the shipped ControlNet's ``control.json``) were chosen on val layouts 800-863, not the ones reported here.
Per setting:
- ``miou``: oracle labels against the layout's semantic map (background + 6 classes);
- ``instance_recall``: layout instances whose best same-class oracle instance has IoU >= 0.5.
  The oracle's instances are connected components, so touching objects of one class merge
  and it cannot find every instance even on the real image (``real`` row: its ceiling);
- ``instance_recall_visible``: the same over the layout instances the oracle does find on the
  layout's real image (1.0 on real images by construction): the goal's measure;
- ``part_miou``: oracle parts against the layout's parts (the 4 parts of box and star);
- ``kid_x1000``: kernel inception distance (cubic polynomial kernel, unbiased) x 1000 between
  the drawn images and as many real images of the split, on the pooled features of a small
  classifier trained here on the world's train split (no downloaded weights), standardised by
  the real images' feature statistics.
Last line: JSON. Goals: part-aware ``miou`` >= 0.85 and ``instance_recall_visible`` >= 0.9.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from synthscene.evaluation.semantic import confusion_matrix, miou_from_confusion
from synthscene.layout.data import open_layouts
from synthscene.layout.maps import control_image
from synthscene.plan import sample_generator, sample_seed
from synthscene.world import CLASS_NAMES, PARTS, oracle_parts, oracle_semantic
from synthscene.world.oracle import oracle_instances

SETTINGS = ("part_aware", "part_free", "text_only")
ROWS = ("real", *SETTINGS)  # real: the oracle on the layouts' own images


def instance_hits(image: np.ndarray, layout) -> np.ndarray:
    """Per layout instance: does the oracle find it (a same-class instance at IoU >= 0.5)?"""
    found = oracle_instances(image, min_area=1)
    hits = []
    for mask, class_id in zip(layout.instances.masks, layout.instances.class_id):
        candidates = found.masks[found.class_id == class_id] if len(found) else []
        best = max((float((mask & m).sum()) / float((mask | m).sum()) for m in candidates), default=0.0)
        hits.append(best >= 0.5)
    return np.array(hits, bool)


class FeatureNet(nn.Module):
    """A small CNN that tells which classes a world image shows; its pooled features are
    what KID compares."""

    def __init__(self, classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.GELU(), nn.Conv2d(32, 64, 3, 2, 1), nn.GELU(),
            nn.Conv2d(64, 128, 3, 2, 1), nn.GELU(), nn.Conv2d(128, 128, 3, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(128, classes)

    def forward(self, x):
        return self.head(self.features(x))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def train_feature_net(data: str, steps: int = 400, seed: int = 0) -> FeatureNet:
    layouts = open_layouts(data, "train")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net = FeatureNet(len(CLASS_NAMES))
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3)
    for _ in tqdm(range(steps), desc="KID feature net"):
        batch = [layouts.item(int(i)) for i in rng.integers(0, len(layouts), 64)]
        images = to_tensor(np.stack([b[0] for b in batch]))
        target = torch.zeros(len(batch), len(CLASS_NAMES))
        for row, (_, _, layout) in enumerate(batch):
            target[row, layout.instances.class_id] = 1
        loss = nn.functional.binary_cross_entropy_with_logits(net(images), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


def kid(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased squared MMD with the kernel (x.y / d + 1) ** 3 (KID's)."""
    d = a.shape[1]
    k_aa, k_bb, k_ab = ((a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3)
    m, n = len(a), len(b)
    return float((k_aa.sum() - np.trace(k_aa)) / (m * (m - 1)) + (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
                 - 2 * k_ab.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controlnet", required=True, help="a train-controlnet run folder")
    parser.add_argument("--data", default="runs/shapes-world")
    parser.add_argument("--split", default="val")
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance with control")
    parser.add_argument("--conditioning-scale", type=float, default=None,
                        help="default: the ControlNet's (its control.json), else 1")
    parser.add_argument("--text-guidance", type=float, default=7.5, help="classifier-free guidance, text only")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    from synthscene.methods.layout import conditioning_scale
    from synthscene.models.load import load_pipeline
    from synthscene.train.controlnet import check_controlnet

    started = time.monotonic()
    base = load_pipeline(args.model)
    base.set_progress_bar_config(disable=True)
    controlnet = ControlNetModel.from_pretrained(f"{args.controlnet}/controlnet", local_files_only=True)
    check_controlnet(controlnet, base.unet)
    pipe = StableDiffusionControlNetPipeline(**base.components, controlnet=controlnet)
    pipe.set_progress_bar_config(disable=True)
    info = json.loads(open(f"{args.controlnet}/control.json").read())
    args.conditioning_scale = conditioning_scale(args.conditioning_scale, info)
    layouts = open_layouts(args.data, args.split)
    if layouts.class_names != info["class_names"]:
        raise SystemExit(f"the ControlNet encodes {info['class_names']}, the data has {layouts.class_names}")
    num_classes, num_parts = len(layouts.class_names), layouts.num_parts
    count = min(args.images, len(layouts))

    semantic = {s: np.zeros((num_classes + 1,) * 2, np.int64) for s in ROWS}
    parts = {s: np.zeros((len(PARTS) + 1,) * 2, np.int64) for s in ROWS}
    hits = {s: [] for s in ROWS}  # per layout instance, found or not
    visible = []  # per layout instance: found on the real image
    drawn = {s: [] for s in SETTINGS}
    real = []
    for start in tqdm(range(0, count, args.batch_size), desc="layouts"):
        batch = [layouts.item(i) for i in range(start, min(start + args.batch_size, count))]
        captions = [caption for _, caption, _ in batch]
        seeds = [sample_seed(args.seed, i) for i in range(start, start + len(batch))]
        real += [image for image, _, _ in batch]
        for setting in ROWS:
            generators = [sample_generator(s) for s in seeds]
            with torch.no_grad():
                if setting == "real":
                    images = np.stack([image for image, _, _ in batch])
                elif setting == "text_only":
                    out = base(captions, num_inference_steps=args.steps, guidance_scale=args.text_guidance,
                               generator=generators, output_type="np").images
                else:
                    control = torch.from_numpy(np.stack([
                        control_image(layout, num_classes, num_parts, with_parts=setting == "part_aware")
                        for _, _, layout in batch]))
                    out = pipe(captions, image=control, num_inference_steps=args.steps, guidance_scale=args.guidance,
                               controlnet_conditioning_scale=args.conditioning_scale, generator=generators,
                               output_type="np").images
            if setting != "real":
                images = (np.clip(out, 0, 1) * 255).round().astype(np.uint8)
                drawn[setting].append(images)
            for image, (_, _, layout) in zip(images, batch):
                labels = oracle_semantic(image)
                semantic[setting] += confusion_matrix(labels, layout.semantic, num_classes + 1)
                parts[setting] += confusion_matrix(oracle_parts(image, labels), layout.parts, len(PARTS) + 1)
                hits[setting].append(instance_hits(image, layout))
        visible += hits["real"][-len(batch):]

    net = train_feature_net(args.data, seed=args.seed)
    with torch.no_grad():
        def features(images):
            return np.concatenate([net.features(to_tensor(images[i:i + 256])).numpy() for i in range(0, len(images), 256)])

        real_features = features(np.stack(real))
        # standardised by the real images' statistics: KID's cubic kernel assumes features of
        # unit scale (as Inception's pooled ones roughly are), ours are not
        mean, std = real_features.mean(0), real_features.std(0) + 1e-6
        real_features = (real_features - mean) / std
        result = {"images": count, "split": args.split, "steps": args.steps, "guidance": args.guidance,
                  "conditioning_scale": args.conditioning_scale, "text_guidance": args.text_guidance}
        seen = np.concatenate(visible)
        for setting in ROWS:
            found = np.concatenate(hits[setting])
            miou, _ = miou_from_confusion(semantic[setting])
            full = parts[setting]  # IoU of each part; "no part" (0) is not scored
            tp = np.diag(full)[1:].astype(float)
            union = full[1:, :].sum(1) + full[:, 1:].sum(0) - np.diag(full)[1:]
            per_part = tp / np.maximum(union, 1)
            result[setting] = {
                "miou": round(float(miou), 4),
                "instance_recall": round(float(found.mean()), 4),
                "instance_recall_visible": round(float(found[seen].mean()), 4),
                "part_miou": round(float(per_part.mean()), 4),
                "per_part": {p.full_name: round(float(v), 4) for p, v in zip(PARTS, per_part)},
            }
            if setting != "real":
                drawn_features = (features(np.concatenate(drawn[setting])) - mean) / std
                result[setting]["kid_x1000"] = round(1000 * kid(drawn_features, real_features), 3)
    result["goals"] = {"miou": 0.85, "instance_recall_visible": 0.9}
    result["minutes"] = round((time.monotonic() - started) / 60, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
