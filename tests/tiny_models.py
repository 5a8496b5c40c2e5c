"""Tiny random diffusers pipelines with the real block layouts of SD 1.x, SD 2.x, SDXL, SD3 and
FLUX (like diffusers' ``get_dummy_components``): seconds on a CPU, same code paths. Tokenizers
are built offline (CLIP's real merges; a small T5-style unigram for T5)."""

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from synthscene.models.tokenizer import build_clip_tokenizer, build_t5_tokenizer

SD_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
SD_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
XL_DOWN = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
XL_UP = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")


def _text_encoder(tokenizer, hidden, with_projection=False, layers=1):
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                            num_hidden_layers=layers, num_attention_heads=2, max_position_embeddings=77,
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
    per-level heads), "sdxl" (two text encoders, text-time embedding), "sd3" or "flux"."""
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
    if layout in ("sd3", "flux"):
        pipe = _tiny_sd3(tokenizer) if layout == "sd3" else _tiny_flux(tokenizer)
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                component.eval()  # as from_pretrained leaves them: T5's dropout is on in train mode
        return pipe
    raise ValueError(layout)


WORDS = ["a", "photo", "of", "and", "ball", "leaf", "box", "hat", "star", "ring", "on", "the", "grey", "background"]


def _t5(tokenizer, width):
    config = T5Config(vocab_size=len(tokenizer), d_model=width, d_kv=8, d_ff=2 * width, num_layers=1, num_heads=2,
                      relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return T5EncoderModel(config)


def _tiny_sd3(tokenizer):
    """SD3.5-style: qk RMS norm, a dual-attention first block, 2x2 patches; CLIP-L / CLIP-G
    (penultimate layer, so two layers each) and T5."""
    t5_tokenizer = build_t5_tokenizer(WORDS, 256)
    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
        num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32, pooled_projection_dim=64,
        pos_embed_max_size=32, qk_norm="rms_norm", dual_attention_layers=(0,),
    )
    vae = AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
                        scaling_factor=1.5035)
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=_text_encoder(tokenizer, 32, True, layers=2), tokenizer=tokenizer,
        text_encoder_2=_text_encoder(tokenizer, 32, True, layers=2), tokenizer_2=tokenizer,
        text_encoder_3=_t5(t5_tokenizer, 64), tokenizer_3=t5_tokenizer,
    )


def _tiny_flux(tokenizer):
    """FLUX.1-dev-style: one double- and one single-stream block, RoPE over (0, row, col)
    ids, a guidance embedding; CLIP (pooled) and T5."""
    t5_tokenizer = build_t5_tokenizer(WORDS, 512)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 4, 8),
        guidance_embeds=True,
    )
    vae = AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                        layers_per_block=1, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159,
                        scaling_factor=0.3611)
    return FluxPipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True), vae=vae,
        text_encoder=_text_encoder(tokenizer, 32), tokenizer=tokenizer,
        text_encoder_2=_t5(t5_tokenizer, 32), tokenizer_2=t5_tokenizer,
    )
