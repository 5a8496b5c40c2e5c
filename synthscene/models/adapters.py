"""What differs between model families, in one place: today, which blocks of a denoiser give
its multi-scale features (the grounding head reads them).

A family is recognised by its denoiser's class; a family without an entry is refused with a
message, never guessed at from attribute names.
"""

from __future__ import annotations

from torch import nn


def feature_blocks(denoiser: nn.Module) -> list[tuple[str, nn.Module]]:
    """The named blocks whose outputs are the denoiser's features, from input to output.

    UNets (SD 1.x / 2.x, SDXL): every down block, the mid block and every up block, as
    InstaGen reads them; a down block's output is its hidden state (its skip tensors are
    left out).
    """
    family = type(denoiser).__name__
    if family == "UNet2DConditionModel":
        blocks = [(f"down_blocks.{i}", b) for i, b in enumerate(denoiser.down_blocks)]
        if denoiser.mid_block is not None:
            blocks.append(("mid_block", denoiser.mid_block))
        return blocks + [(f"up_blocks.{i}", b) for i, b in enumerate(denoiser.up_blocks)]
    raise ValueError(f"no feature table for denoiser {family}: the grounding features support UNet2DConditionModel "
                     "(SD 1.x, SD 2.x, SDXL) today")
