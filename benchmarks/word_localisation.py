"""Do a model's words localise? Pick the right one of two named classes from attention alone.

    .venv/bin/python benchmarks/word_localisation.py [--model embedded] [--images 96] [--seed 0]
        [--word-encoders all|clip|t5]

Prompts name two shapes-world classes ("a photo of a ball and a leaf"). Each image is made with
attention capture (every layer, the later half of the steps); each word's map (its tokens in
every encoder's part of the text axis, ``models.text_layout``, or one encoder's with
``--word-encoders``) is normalised to sum 1 over the
image. For every named class the oracle finds drawn, the pick is the word whose normalised map
has more mass on that class's pixels; ``pick_accuracy`` is the share of right picks (chance 0.5;
goal >= 0.85 for the issue's MMDiT model). Real SD's frozen encoders keep a word's meaning at its
position, so its word maps localise; the embedded UNet model trained its encoder jointly and
moved the content into end-of-text and padding tokens.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from synthscene.capture import AttentionStore, CaptureConfig, capture_attention
from synthscene.models.families import family_of
from synthscene.models.info import model_text_layout
from synthscene.models.load import load_pipeline
from synthscene.plan import sample_generator, sample_seed
from synthscene.world import CLASS_NAMES, oracle_semantic


def two_class_prompts(count: int, seed: int) -> list[tuple[str, int, int]]:
    rng = np.random.default_rng(seed)
    prompts = []
    for _ in range(count):
        a, b = (int(c) for c in rng.choice(len(CLASS_NAMES), size=2, replace=False))
        prompts.append((f"a photo of a {CLASS_NAMES[a]} and a {CLASS_NAMES[b]}", a, b))
    return prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--word-encoders", choices=("all", "clip", "t5"), default="all",
                        help="read the words from every encoder's tokens, or one's (a spec's word_encoders)")
    args = parser.parse_args()
    started = time.perf_counter()
    try:  # before the model loads
        model_text_layout(args.model).reading(args.word_encoders, "--word-encoders")
    except ValueError as err:
        raise SystemExit(str(err)) from None
    pipe = load_pipeline(args.model)
    family = family_of(pipe)
    layout = family.text_layout().reading(args.word_encoders)
    prompts = two_class_prompts(args.images, args.seed)
    right = asked = drawn_both = 0
    for start in tqdm(range(0, len(prompts), args.batch_size), desc="word localisation"):
        batch = prompts[start : start + args.batch_size]
        store = AttentionStore(CaptureConfig(cross_resolutions=(), step_window=(0.5, 1.0)), num_steps=args.steps,
                               guidance=family.guides(args.guidance))
        generators = [sample_generator(sample_seed(args.seed, start + i)) for i in range(len(batch))]
        with torch.no_grad(), capture_attention(family.denoiser, store):
            images = pipe([p for p, _, _ in batch], num_inference_steps=args.steps, guidance_scale=args.guidance,
                          generator=generators, output_type="np", **family.pipeline_kwargs()).images
        images = (images * 255).round().astype(np.uint8)
        maps = store.cross_maps()
        size = images.shape[1:3]
        for b, (prompt, a, c) in enumerate(batch):
            truth = oracle_semantic(images[b])
            words = []
            for class_id in (a, c):
                tokens = layout.positions(prompt, CLASS_NAMES[class_id])
                per_resolution = [F.interpolate(m[b, tokens].mean(0)[None, None], size=size, mode="bilinear",
                                                align_corners=False)[0, 0] for m in maps.values()]
                word = torch.stack(per_resolution).mean(0).numpy()
                words.append(word / max(word.sum(), 1e-12))
            present = [k for k, class_id in enumerate((a, c)) if (truth == class_id + 1).sum() >= 8]
            drawn_both += len(present) == 2
            for k in present:
                region = truth == (a, c)[k] + 1
                right += int(words[k][region].sum() > words[1 - k][region].sum())
                asked += 1
    print(json.dumps({"pick_accuracy": round(right / max(asked, 1), 4), "picks": asked,
                      "images_with_both_classes": drawn_both, "images": len(prompts), "model": args.model,
                      "family": family.name,
                      "word_encoders": args.word_encoders, "goal_pick_accuracy": 0.85,
                      "seconds": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
