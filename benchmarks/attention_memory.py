"""Bytes the capture store keeps per image at SD 1.5 geometry (512 px, 64x64 latents).

    .venv/bin/python benchmarks/attention_memory.py [--batch 2] [--steps 2]

Captures what the labels need (cross-attention at 16x16, self-attention at 32x32) during
a real generation on a UNet with SD 1.5's geometry (random weights) and records the store's
largest size after every UNet call. ``budget_bytes`` is 1.1 x (the 16x16 cross-attention
maps over 77 tokens + one 32x32 self-attention buffer of 1024 x 1024), fp32, per image.
Goal: ``bytes_per_image`` <= ``budget_bytes``. A 64x64 self-attention map (4096 x 4096
per head) is never built: capture refuses self resolutions above 32.
"""

from __future__ import annotations

import argparse
import json

import torch
from sd15_geometry import sd15_geometry_pipeline

from synthscene.capture import AttentionStore, CaptureConfig, capture_attention

FP32 = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    pipe = sd15_geometry_pipeline()
    config = CaptureConfig(cross_resolutions=(16,), self_resolution=32)
    store = AttentionStore(config, num_steps=args.steps, guidance=True)
    peak = {"bytes": 0}

    def record_peak(module, inputs, output):
        peak["bytes"] = max(peak["bytes"], store.nbytes())

    handle = pipe.unet.register_forward_hook(record_peak)
    with torch.no_grad(), capture_attention(pipe.unet, store):
        pipe(["a photo of a cat and a dog"] * args.batch, num_inference_steps=args.steps, guidance_scale=7.5,
             generator=[torch.Generator().manual_seed(i) for i in range(args.batch)], output_type="latent")
    handle.remove()
    tokens = pipe.tokenizer.model_max_length
    used_cross = 16 * 16 * tokens * FP32
    self_buffer = (32 * 32) ** 2 * FP32
    result = {
        "bytes_per_image": peak["bytes"] // args.batch,
        "budget_bytes": int(1.1 * (used_cross + self_buffer)),
        "cross_bytes_per_image": used_cross,
        "self_buffer_bytes_per_image": self_buffer,
        "captured_resolutions": sorted(h for h, _ in store.cross_sums),
        "self_map_side": round(store.self_sum.shape[-1] ** 0.5),
        "batch": args.batch,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
