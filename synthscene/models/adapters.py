"""What differs between denoisers, in one place: which blocks give their multi-scale features
(the grounding head reads them), and a table of their attention layers (capture reads them).

A denoiser is recognised by its class; one without an entry is refused with a message, never
guessed at from attribute names. Pipeline-level differences (prompt encoding, schedules,
latent packing) are in ``synthscene.models.families``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class AttentionLayer:
    """One attention layer of a denoiser.

    ``kind``: "self" (image -> image), "cross" (image -> text states that are the same at every
    layer: UNets), "joint" (one softmax over image and text tokens, each with its own
    projections: SD3 and FLUX double-stream blocks) or "single" (one sequence [text, image]
    through shared projections: FLUX single-stream blocks). ``text_first``: where the text
    tokens sit in a joint sequence (FLUX [text, image]; SD3 [image, text]).
    """

    name: str  # the key of ``denoiser.attn_processors`` ("...attn.processor")
    module: nn.Module
    kind: str
    text_first: bool = False


def attention_layers(denoiser: nn.Module) -> list[AttentionLayer]:
    """Every attention layer of ``denoiser``, in the order of ``attn_processors``."""
    family = type(denoiser).__name__
    layers = []
    for name in denoiser.attn_processors:
        module = denoiser.get_submodule(name.removesuffix(".processor"))
        if family == "UNet2DConditionModel":
            kind = "cross" if module.is_cross_attention else "self"
            layers.append(AttentionLayer(name, module, kind))
        elif family == "SD3Transformer2DModel":
            # SD3.5's dual-attention blocks add ``attn2``: image tokens alone
            joint = getattr(module, "added_kv_proj_dim", None) is not None
            layers.append(AttentionLayer(name, module, "joint" if joint else "self"))
        elif family == "FluxTransformer2DModel":
            joint = getattr(module, "added_kv_proj_dim", None) is not None
            layers.append(AttentionLayer(name, module, "joint" if joint else "single", text_first=True))
        else:
            raise ValueError(f"no attention table for denoiser {family}: synthscene captures UNet2DConditionModel "
                             "(SD 1.x, 2.x, SDXL), SD3Transformer2DModel (SD3) and FluxTransformer2DModel (FLUX)")
    return layers


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
