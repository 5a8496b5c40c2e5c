"""Generate images and keep what the grounding head needs to read them again: the latents
that enter the last denoising step and that step's timestep. One guided denoiser call on
them reproduces the last step's features exactly, so the head trains without storing
features (InstaGen stores the same latent)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from synthscene.capture.features import denoiser_features
from synthscene.plan import sample_generator


@dataclass
class Generated:
    images: np.ndarray  # uint8 [B, H, W, 3]
    latents: torch.Tensor  # float32 [B, c, h, w]: the input of the last denoising step
    timestep: int  # the last step's timestep


@torch.no_grad()
def generate_with_latents(pipe, prompts: list[str], seeds: list[int], steps: int, guidance: float) -> Generated:
    """One image per prompt, each from its own seed."""
    if steps < 2:
        raise ValueError(f"grounding needs at least 2 denoising steps, got {steps}")
    kept = {}

    def keep_last_input(pipeline, step, timestep, tensors):
        if step == steps - 2:  # after this step, the latents are what the last step reads
            kept["latents"] = tensors["latents"].float().cpu().clone()
        return tensors

    images = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance,
                  generator=[sample_generator(s) for s in seeds], output_type="np",
                  callback_on_step_end=keep_last_input).images
    return Generated((images * 255).round().astype(np.uint8), kept["latents"], int(pipe.scheduler.timesteps[-1]))


@torch.no_grad()
def last_step_features(pipe, latents: torch.Tensor, timestep: int, prompts: list[str],
                       guidance: float) -> list[torch.Tensor]:
    """The denoiser's features [B, C_l, h_l, w_l] per level (finest first) at the last step."""
    device = pipe.unet.device
    guided = guidance > 1.0
    cond, uncond = pipe.encode_prompt(prompts, device, 1, guided)
    features = denoiser_features(pipe, latents.to(device), torch.tensor(timestep, device=device), cond,
                                 uncond if guided else None)
    return [f.cpu() for f in features.values()]
