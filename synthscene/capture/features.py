"""Denoiser features for the grounding head: block outputs at one denoising step.

``capture_features`` hooks the blocks the model's adapter names (``models.adapters``),
keeps their outputs for one call and removes every hook on exit. ``denoiser_features``
runs one guided denoiser call on given latents and returns the outputs grouped by
resolution, the conditional and unconditional halves side by side along channels
(InstaGen's layout), so a head sees what guidance sees.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from synthscene.models.adapters import feature_blocks


@contextlib.contextmanager
def capture_features(denoiser) -> Iterator[list[torch.Tensor]]:
    """Collect, in call order, the output of every feature block of ``denoiser``."""
    outputs: list[torch.Tensor] = []

    def keep(module, inputs, output):
        outputs.append(output[0] if isinstance(output, tuple) else output)

    handles = [block.register_forward_hook(keep) for _, block in feature_blocks(denoiser)]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def group_by_resolution(outputs: list[torch.Tensor], guided: bool) -> dict[tuple[int, int], torch.Tensor]:
    """Block outputs -> {(h, w): [B, C, h, w]}, finest resolution first; blocks of one
    resolution are concatenated along channels in call order. ``guided``: the batch is
    [unconditional, conditional]; each becomes [conditional | unconditional] channels."""
    grouped: dict[tuple[int, int], list[torch.Tensor]] = {}
    for output in outputs:
        if guided:
            uncond, cond = output.chunk(2)
            output = torch.cat([cond, uncond], dim=1)
        grouped.setdefault(tuple(output.shape[-2:]), []).append(output)
    return {hw: torch.cat(grouped[hw], dim=1) for hw in sorted(grouped, key=lambda hw: -hw[0] * hw[1])}


def feature_layout(features: dict[tuple[int, int], torch.Tensor]) -> list[list[int]]:
    """[[h, w, channels], ...]: what a head trained on these features expects."""
    return [[h, w, int(f.shape[1])] for (h, w), f in features.items()]


@torch.no_grad()
def denoiser_features(pipe, latents: torch.Tensor, timestep, prompt_states: torch.Tensor,
                      negative_states: torch.Tensor | None = None) -> dict[tuple[int, int], torch.Tensor]:
    """Features of one denoiser call on ``latents`` [B, c, h, w] at ``timestep``.

    ``prompt_states`` [B, T, D]: encoded prompts; ``negative_states``: the unconditional
    ones (with them, the call is guided as in sampling: batch [uncond, cond]).
    """
    guided = negative_states is not None
    model_input = torch.cat([latents, latents]) if guided else latents
    states = torch.cat([negative_states, prompt_states]) if guided else prompt_states
    model_input = pipe.scheduler.scale_model_input(model_input, timestep)
    with capture_features(pipe.unet) as outputs:
        pipe.unet(model_input, timestep, encoder_hidden_states=states.to(pipe.unet.dtype))
    return group_by_resolution([o.float() for o in outputs], guided)
