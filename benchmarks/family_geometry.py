"""Denoisers with each family's real geometry and random weights, for capture benchmarks.

Real widths, heads, text widths and token counts at 1024 px (SDXL: 128x128 latents with
attention at 64 and 32; SD3: 2x2 patches -> 64x64 = 4096 image tokens beside 77 CLIP + 256 T5
text tokens; FLUX: packed 2x2 -> 4096 image tokens beside 512 T5 tokens); fewer blocks than
the real models (``BLOCKS``), which changes the time per step but not the share of it that
capture adds per block. Only the denoiser is built: text encoders and VAE are not touched by
capture, so the benchmark feeds random encoder states of the real shapes.
"""

from __future__ import annotations

import torch
from diffusers import FluxTransformer2DModel, SD3Transformer2DModel, UNet2DConditionModel

from synthscene.capture import CaptureConfig

# blocks built per family, against the real model's
BLOCKS = {
    "sdxl": "layers_per_block 1 (real 2), transformer layers per level (1, 1, 1) (real 1, 2, 10)",
    "sd3": "2 joint blocks (SD3.5 Medium: 24)",
    "flux": "1 double-stream + 1 single-stream block (FLUX.1: 19 + 38)",
}
TEXT_TOKENS = {"sdxl": 77, "sd3": 77 + 256, "flux": 512}
# what the labels read: SDXL's cross- and self-attention at 32x32 (as SD 1.5's 16x16 at 512 px);
# SD3 and FLUX: every joint layer's image -> text maps on their one token grid (64x64 at 1024 px,
# above the 32 self-attention bound, so no self-attention)
FAMILY_CAPTURE = {"sdxl": CaptureConfig(cross_resolutions=(32,), self_resolution=32),
                  "sd3": CaptureConfig(cross_resolutions=()), "flux": CaptureConfig(cross_resolutions=())}


def build_denoiser(family: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    if family == "sdxl":
        return UNet2DConditionModel(
            sample_size=128, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 1, 1), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        ).eval()
    if family == "sd3":  # SD3.5 Medium's widths: 24 heads x 64, qk RMS norm
        return SD3Transformer2DModel(
            sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=64,
            num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
            pooled_projection_dim=2048, pos_embed_max_size=384, qk_norm="rms_norm",
        ).eval()
    if family == "flux":  # FLUX.1-dev's widths: 24 heads x 128, RoPE axes (16, 56, 56)
        return FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=128,
            num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
            axes_dims_rope=(16, 56, 56), guidance_embeds=True,
        ).eval()
    raise ValueError(f"unknown family {family!r}; choose sdxl, sd3 or flux")


def denoiser_inputs(family: str, batch: int, size: int = 1024) -> dict:
    """Keyword arguments of one denoiser call on ``batch`` latents of a ``size`` px image."""
    generator = torch.Generator().manual_seed(1)

    def randn(*shape):
        return torch.randn(*shape, generator=generator)

    if family == "sdxl":
        side = size // 8
        return {"sample": randn(batch, 4, side, side), "timestep": torch.tensor(500),
                "encoder_hidden_states": randn(batch, 77, 2048),
                "added_cond_kwargs": {"text_embeds": randn(batch, 1280),
                                      "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * batch).float()}}
    if family == "sd3":
        side = size // 8
        return {"hidden_states": randn(batch, 16, side, side), "timestep": torch.full((batch,), 500.0),
                "encoder_hidden_states": randn(batch, TEXT_TOKENS["sd3"], 4096),
                "pooled_projections": randn(batch, 2048), "return_dict": False}
    if family == "flux":
        from synthscene.models.families import latent_position_ids

        side = size // 16  # 8x VAE, then 2x2 packing
        return {"hidden_states": randn(batch, side * side, 64), "timestep": torch.full((batch,), 0.5),
                "guidance": torch.full((batch,), 3.5), "pooled_projections": randn(batch, 768),
                "encoder_hidden_states": randn(batch, TEXT_TOKENS["flux"], 4096),
                "txt_ids": torch.zeros(TEXT_TOKENS["flux"], 3), "img_ids": latent_position_ids(side, side, "cpu",
                                                                                            torch.float32),
                "return_dict": False}
    raise ValueError(f"unknown family {family!r}")


def to_device(inputs: dict, device: str) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else
            ({kk: vv.to(device) for kk, vv in v.items()} if isinstance(v, dict) else v) for k, v in inputs.items()}


def guided(family: str) -> bool:
    """Whether sampling doubles the batch (classifier-free guidance): not FLUX's guidance embedding."""
    return family != "flux"
