"""Which named class a region shows, asked of the diffusion model itself.

A diffusion classifier (Li et al., "Your Diffusion Model is Secretly a Zero-Shot
Classifier", ICCV 2023), per pixel: noise the generated latents to a few high timesteps
and compare how well the UNet predicts that noise when told each class name. Where the
class explains the pixels, its prediction error is lower. All classes see the same noise,
so their errors differ only by the condition. High noise levels matter: there the
model must take an object's appearance from the text rather than from the image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def denoising_errors(unet, scheduler, latents: torch.Tensor, class_embeddings: torch.Tensor,
                     timesteps: tuple[int, ...], repeats: int, generator: torch.Generator) -> torch.Tensor:
    """Per-pixel noise-prediction error of one sample under each class condition.

    Args:
        unet: a ``UNet2DConditionModel`` taking ``encoder_hidden_states`` only (SD 1.x / 2.x).
        scheduler: its training schedule's ``alphas_cumprod`` is used to add noise.
        latents: [C, h, w] clean latents of the generated image.
        class_embeddings: [K, T, D] text-encoder states, one per class.
        timesteps: training timesteps to noise to (e.g. (850, 950) of 1000).
        repeats: noise draws per timestep.
        generator: the noise source (seed it from the sample's seed for reproducible labels).
    Returns:
        float32 [K, h, w], mean squared error over channels, draws and timesteps.
    """
    if not timesteps or repeats < 1:
        raise ValueError("need at least one timestep and one repeat")
    alphas = scheduler.alphas_cumprod.to(torch.float32)
    if max(timesteps) >= len(alphas) or min(timesteps) < 0:
        raise ValueError(f"classifier timesteps {timesteps} must lie in [0, {len(alphas)}) (the training schedule)")
    if unet.config.addition_embed_type is not None:
        raise ValueError("the diffusion classifier conditions on text only (SD 1.x / 2.x UNets); "
                         "use recipe 'faithful' for this model")
    num_classes = class_embeddings.shape[0]
    errors = torch.zeros(num_classes, *latents.shape[-2:])
    latents = latents.to(torch.float32)
    for timestep in timesteps:
        alpha = alphas[timestep]
        for _ in range(repeats):
            noise = torch.randn(latents.shape, generator=generator, device=generator.device)
            noisy = alpha.sqrt() * latents + (1 - alpha).sqrt() * noise
            batch = noisy[None].expand(num_classes, -1, -1, -1).to(unet.device, unet.dtype)
            t = torch.full((num_classes,), timestep, device=unet.device)
            prediction = unet(batch, t, encoder_hidden_states=class_embeddings.to(unet.device, unet.dtype)).sample
            errors += F.mse_loss(prediction.float().cpu(), noise.cpu()[None].expand_as(prediction), reduction="none").mean(1)
    return errors / (len(timesteps) * repeats)
