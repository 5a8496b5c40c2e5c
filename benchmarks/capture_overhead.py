"""Wall time of generation with attention capture / without, same model, steps, batch, seeds.

    .venv/bin/python benchmarks/capture_overhead.py [--steps 2] [--repeats 3] [--device cuda]
    .venv/bin/python benchmarks/capture_overhead.py --family sd3 [--family flux --family sdxl] [--size 1024]

``ratio``: on a UNet with SD 1.5's geometry (random weights, 512 px = 64x64 latents,
classifier-free guidance), capturing what the labels need: cross-attention at 16x16 and
the 32x32 self-attention (the faithful recipe's set, the larger of the two recipes).
Goal <= 1.05. ``embedded_ratio``: the same on the embedded shapes model (25 steps, 16
images). Plain and captured runs alternate; each figure is the fastest of ``--repeats``.
The ``ours`` recipe also runs the diffusion classifier after generation (a few UNet
calls per sample); its end-to-end cost is in ``benchmarks/label_quality.py``'s seconds.

``--family``: instead, denoiser calls of SDXL, SD3 or FLUX at their real geometry
(``family_geometry.py``: real widths, heads and token counts at ``--size`` px, fewer blocks)
with random weights and random encoder states, with capture / without; keys ``ratio`` per
family (goal <= 1.05 each). Captured: what the labels read, i.e. SDXL's cross-attention and
self-attention at 32x32; SD3's and FLUX's image -> text maps of every joint layer (their one
64x64 token grid is above the 32 self-attention bound, so no self-attention is kept).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch
from family_geometry import BLOCKS, FAMILY_CAPTURE, build_denoiser, denoiser_inputs, guided, to_device
from sd15_geometry import sd15_geometry_pipeline

from synthscene.capture import AttentionStore, CaptureConfig, capture_attention
from synthscene.models.load import load_pipeline


def _time_generation(pipe, prompts, steps, capture: CaptureConfig | None) -> float:
    store = AttentionStore(capture, num_steps=steps, guidance=True) if capture else None
    context = capture_attention(pipe.unet, store) if capture else contextlib.nullcontext()
    generators = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
    started = time.perf_counter()
    with torch.no_grad(), context:
        pipe(prompts, num_inference_steps=steps, guidance_scale=7.5, generator=generators, output_type="np")
    return time.perf_counter() - started


def overhead(pipe, prompts, steps, capture: CaptureConfig, repeats: int) -> dict:
    _time_generation(pipe, prompts, 1, None)  # warm-up
    plain, captured = [], []
    for _ in range(repeats):
        plain.append(_time_generation(pipe, prompts, steps, None))
        captured.append(_time_generation(pipe, prompts, steps, capture))
    return {"plain_s": round(min(plain), 3), "capture_s": round(min(captured), 3),
            "ratio": round(min(captured) / min(plain), 4)}


def _time_denoiser(denoiser, inputs, steps, capture: CaptureConfig | None, guidance: bool) -> float:
    store = AttentionStore(capture, num_steps=steps, guidance=guidance) if capture else None
    context = capture_attention(denoiser, store) if capture else contextlib.nullcontext()
    started = time.perf_counter()
    with context:
        for _ in range(steps):
            denoiser(**inputs)
    if store is not None and not store.cross_sums:
        raise RuntimeError("nothing was captured")
    return time.perf_counter() - started


def family_overhead(family: str, steps: int, repeats: int, size: int, device: str) -> dict:
    denoiser = build_denoiser(family).to(device)
    batch = 2 if guided(family) else 1
    inputs = to_device(denoiser_inputs(family, batch, size), device)
    _time_denoiser(denoiser, inputs, 1, None, guided(family))  # warm-up
    plain, captured = [], []
    for _ in range(repeats):
        plain.append(_time_denoiser(denoiser, inputs, steps, None, guided(family)))
        captured.append(_time_denoiser(denoiser, inputs, steps, FAMILY_CAPTURE[family], guided(family)))
    return {"plain_s": round(min(plain), 3), "capture_s": round(min(captured), 3),
            "ratio": round(min(captured) / min(plain), 4), "blocks": BLOCKS[family], "size_px": size,
            "batch": batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--family", action="append", choices=sorted(FAMILY_CAPTURE),
                        help="time this family's real-geometry denoiser instead (repeatable)")
    parser.add_argument("--size", type=int, default=1024, help="image side in px for --family")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if args.family:
        results = {}
        for family in args.family:
            results[family] = family_overhead(family, args.steps, args.repeats, args.size, args.device)
            print(f"{family}:", results[family], flush=True)
        print(json.dumps({"ratio": {f: r["ratio"] for f, r in results.items()}, "goal_ratio": 1.05,
                          "families": results, "steps": args.steps,
                          "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"}))
        return
    sd15 = overhead(sd15_geometry_pipeline().to(args.device), ["a photo of a cat and a dog"], args.steps,
                    CaptureConfig(cross_resolutions=(16,), self_resolution=32), args.repeats)
    print("sd1.5 geometry:", sd15, flush=True)
    embedded = overhead(load_pipeline("embedded", device=args.device), ["a photo of a ball and a leaf"] * 16, 25,
                        CaptureConfig(cross_resolutions=(16,), self_resolution=16), args.repeats)
    print("embedded:", embedded, flush=True)
    print(json.dumps({"ratio": sd15["ratio"], "embedded_ratio": embedded["ratio"], "goal_ratio": 1.05,
                      "sd15": sd15, "embedded": embedded, "steps": args.steps,
                      "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"}))


if __name__ == "__main__":
    main()
