"""Architectures for generators trained from scratch: Stable Diffusion's component
classes (AutoencoderKL, UNet2DConditionModel, CLIPTextModel, CLIPTokenizer) at small sizes.

``shapes`` is the embedded shapes model; ``tiny`` is for tests (seconds on a CPU).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from synthscene.models.tokenizer import MODEL_MAX_LENGTH, build_clip_tokenizer


@dataclass(frozen=True)
class GeneratorArchitecture:
    resolution: int
    vae_channels: tuple[int, ...]  # one entry per VAE level: len 1 = no downsampling
    latent_channels: int
    unet_channels: tuple[int, ...]
    unet_down_blocks: tuple[str, ...]
    unet_up_blocks: tuple[str, ...]
    unet_heads: int  # diffusers' ``attention_head_dim`` is the number of heads in SD configs
    cross_attention_dim: int
    text_layers: int
    text_heads: int
    text_intermediate: int
    num_merges: int  # CLIP BPE merges kept in the tokenizer
    norm_groups: int = 8

    def to_dict(self) -> dict:
        return asdict(self)


ARCHITECTURES: dict[str, GeneratorArchitecture] = {
    # 32x32 images, a VAE without downsampling, cross-attention at 16x16 and 8x8;
    # 10k merges cover every caption word of the shapes world with CLIP's own ids.
    "shapes": GeneratorArchitecture(
        resolution=32, vae_channels=(32,), latent_channels=4,
        unet_channels=(48, 96, 96),
        unet_down_blocks=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        unet_up_blocks=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        unet_heads=4, cross_attention_dim=128, text_layers=2, text_heads=4, text_intermediate=256,
        num_merges=10_000,
    ),
    "tiny": GeneratorArchitecture(
        resolution=16, vae_channels=(8,), latent_channels=4,
        unet_channels=(16, 32),
        unet_down_blocks=("DownBlock2D", "CrossAttnDownBlock2D"),
        unet_up_blocks=("CrossAttnUpBlock2D", "UpBlock2D"),
        unet_heads=2, cross_attention_dim=32, text_layers=1, text_heads=2, text_intermediate=64,
        num_merges=10_000, norm_groups=4,
    ),
}


def training_scheduler() -> DDPMScheduler:
    """DDPM, 1000 steps, cosine betas, epsilon prediction; no sample clipping (latents)."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                         prediction_type="epsilon", clip_sample=False)


def sampling_scheduler(train_scheduler) -> DDIMScheduler:
    """The scheduler a saved pipeline samples with: DDIM on the training betas."""
    return DDIMScheduler.from_config(train_scheduler.config, clip_sample=False, set_alpha_to_one=False,
                                     timestep_spacing="leading", steps_offset=1)


def build_components(arch: GeneratorArchitecture) -> dict:
    """Fresh, randomly initialised pipeline components (torch's default init; seed first)."""
    tokenizer = build_clip_tokenizer(arch.num_merges)
    vae_levels = len(arch.vae_channels)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=arch.latent_channels,
        down_block_types=("DownEncoderBlock2D",) * vae_levels,
        up_block_types=("UpDecoderBlock2D",) * vae_levels,
        block_out_channels=arch.vae_channels, layers_per_block=1,
        norm_num_groups=arch.norm_groups, sample_size=arch.resolution,
    )
    unet = UNet2DConditionModel(
        sample_size=arch.resolution // 2 ** (vae_levels - 1),
        in_channels=arch.latent_channels, out_channels=arch.latent_channels,
        block_out_channels=arch.unet_channels, layers_per_block=1,
        down_block_types=arch.unet_down_blocks, up_block_types=arch.unet_up_blocks,
        cross_attention_dim=arch.cross_attention_dim, attention_head_dim=arch.unet_heads,
        norm_num_groups=arch.norm_groups,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=arch.cross_attention_dim,
        intermediate_size=arch.text_intermediate, num_hidden_layers=arch.text_layers,
        num_attention_heads=arch.text_heads, max_position_embeddings=MODEL_MAX_LENGTH,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    return {"vae": vae, "unet": unet, "text_encoder": text_encoder, "tokenizer": tokenizer,
            "scheduler": training_scheduler()}
