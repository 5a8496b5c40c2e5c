"""Tiny random diffusers pipelines with the real block layouts of SD 1.x, SD 2.x and SDXL
(like diffusers' ``get_dummy_components``): seconds on a CPU, same code paths."""

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from synthscene.models.tokenizer import build_clip_tokenizer

SD_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
SD_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
XL_DOWN = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
XL_UP = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")


def _text_encoder(tokenizer, hidden, with_projection=False):
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                            num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id, projection_dim=hidden)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def _vae():
    # two levels: latents are half the image size (real SD: four levels, 1/8)
    return AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                         layers_per_block=1)


def _scheduler():
    return DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1)


def tiny_pipeline(layout: str):
    """A random pipeline: layout "sd1" (SD 1.x blocks), "sd2" (linear projections,
    per-level heads) or "sdxl" (two text encoders, text-time embedding)."""
    torch.manual_seed(0)
    tokenizer = build_clip_tokenizer(10_000)
    if layout in ("sd1", "sd2"):
        unet = UNet2DConditionModel(
            sample_size=32, in_channels=4, out_channels=4, block_out_channels=(8, 16, 16, 16), layers_per_block=1,
            down_block_types=SD_DOWN, up_block_types=SD_UP, cross_attention_dim=16, norm_num_groups=4,
            attention_head_dim=2 if layout == "sd1" else (1, 2, 2, 2), use_linear_projection=layout == "sd2",
        )
        return StableDiffusionPipeline(vae=_vae(), text_encoder=_text_encoder(tokenizer, 16), tokenizer=tokenizer,
                                       unet=unet, scheduler=_scheduler(), safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    if layout == "sdxl":
        unet = UNet2DConditionModel(
            sample_size=32, in_channels=4, out_channels=4, block_out_channels=(8, 16, 16), layers_per_block=1,
            down_block_types=XL_DOWN, up_block_types=XL_UP, transformer_layers_per_block=(1, 1, 2),
            cross_attention_dim=32, attention_head_dim=(1, 2, 2), use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=4, projection_class_embeddings_input_dim=6 * 4 + 16,
            norm_num_groups=4,
        )
        return StableDiffusionXLPipeline(
            vae=_vae(), text_encoder=_text_encoder(tokenizer, 16), text_encoder_2=_text_encoder(tokenizer, 16, True),
            tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=_scheduler(),
        )
    raise ValueError(layout)
