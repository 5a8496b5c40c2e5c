"""Bytes the capture store keeps per image at SD 1.5 geometry (512 px, 64x64 latents).

    .venv/bin/python benchmarks/attention_memory.py [--batch 2] [--steps 2]
    .venv/bin/python benchmarks/attention_memory.py --family sd3 [--family flux --family sdxl] [--size 1024]

Captures what the labels need (cross-attention at 16x16, self-attention at 32x32) during
a real generation on a UNet with SD 1.5's geometry (random weights) and records the store's
largest size after every UNet call. ``budget_bytes`` is 1.1 x (the 16x16 cross-attention
maps over 77 tokens + one 32x32 self-attention buffer of 1024 x 1024), fp32, per image.
Goal: ``bytes_per_image`` <= ``budget_bytes``. A 64x64 self-attention map (4096 x 4096
per head) is never built: capture refuses self resolutions above 32.

``--family``: the same on SDXL / SD3 / FLUX denoisers at their real geometry
(``family_geometry.py``, random weights and encoder states), capturing what their labels read
(``FAMILY_CAPTURE``); budget 1.1 x those maps in fp32 per image (SDXL: 32x32 cross over 77
tokens + the 32x32 self buffer; SD3: 64x64 over 77 + 256 tokens; FLUX: 64x64 over 512).
"""

from __future__ import annotations

import argparse
import json

import torch
from family_geometry import FAMILY_CAPTURE, TEXT_TOKENS, build_denoiser, denoiser_inputs, guided, to_device
from sd15_geometry import sd15_geometry_pipeline

from synthscene.capture import AttentionStore, CaptureConfig, capture_attention

FP32 = 4


def family_memory(family: str, batch: int, steps: int, size: int) -> dict:
    denoiser = build_denoiser(family)
    store = AttentionStore(FAMILY_CAPTURE[family], num_steps=steps, guidance=guided(family))
    inputs = to_device(denoiser_inputs(family, batch * (2 if guided(family) else 1), size), "cpu")
    peak = {"bytes": 0}

    def record_peak(module, inputs, output):
        peak["bytes"] = max(peak["bytes"], store.nbytes())

    handle = denoiser.register_forward_hook(record_peak)
    with torch.no_grad(), capture_attention(denoiser, store):
        for _ in range(steps):
            denoiser(**inputs)
    handle.remove()
    if family == "sdxl":
        used = 32 * 32 * TEXT_TOKENS[family] * FP32 + (32 * 32) ** 2 * FP32
    else:
        used = (size // 16) ** 2 * TEXT_TOKENS[family] * FP32
    return {"bytes_per_image": peak["bytes"] // batch, "budget_bytes": int(1.1 * used), "used_bytes_per_image": used,
            "captured_resolutions": sorted(h for h, _ in store.cross_sums), "batch": batch, "size_px": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--family", action="append", choices=sorted(FAMILY_CAPTURE))
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    if args.family:
        results = {f: family_memory(f, args.batch, args.steps, args.size) for f in args.family}
        print(json.dumps({"within_budget": {f: r["bytes_per_image"] <= r["budget_bytes"] for f, r in results.items()},
                          "families": results}))
        return
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
