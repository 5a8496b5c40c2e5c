"""Architectures for generators trained from scratch: Stable Diffusion's component
classes (AutoencoderKL, UNet2DConditionModel, CLIPTextModel, CLIPTokenizer) at small sizes,
and Stable Diffusion 3's (SD3Transformer2DModel, two CLIPTextModelWithProjection, T5EncoderModel,
FlowMatchEulerDiscreteScheduler).

``shapes`` is the embedded shapes model, ``shapes-mmdit`` its SD3-architecture sibling;
``tiny`` and ``tiny-mmdit`` are for tests (seconds on a CPU).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from synthscene.models.tokenizer import MODEL_MAX_LENGTH, build_clip_tokenizer, build_t5_tokenizer


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


@dataclass(frozen=True)
class MMDiTArchitecture:
    """An SD3-architecture generator. Its text encoders give token states without context
    mixing, as real SD's frozen pre-trained encoders keep a word's meaning at its own position:
    SD3 reads the CLIPs' penultimate hidden states, which for a one-layer CLIP are its token +
    position embeddings, and the T5 has no layers (embeddings and its final norm). Only the
    pooled CLIP vectors (the timestep conditioning) see the whole caption."""

    resolution: int
    vae_channels: tuple[int, ...]
    latent_channels: int
    patch_size: int
    layers: int
    heads: int
    head_dim: int
    clip_width: int  # each CLIP's width; their states side by side fill the joint width
    t5_tokens: int  # T5 tokens encoded (the pipelines' max_sequence_length)
    num_merges: int
    norm_groups: int = 8

    @property
    def width(self) -> int:
        return self.heads * self.head_dim

    def to_dict(self) -> dict:
        return {**asdict(self), "kind": "mmdit"}


ARCHITECTURES: dict[str, GeneratorArchitecture | MMDiTArchitecture] = {
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
    # 32x32 images as ``shapes``; 2x2 patches -> 16x16 image tokens beside 77 CLIP + 24 T5 tokens
    # (the world's longest caption is 20)
    "shapes-mmdit": MMDiTArchitecture(
        resolution=32, vae_channels=(32,), latent_channels=4, patch_size=2, layers=6, heads=4, head_dim=32,
        clip_width=64, t5_tokens=24, num_merges=10_000,
    ),
    "tiny-mmdit": MMDiTArchitecture(
        resolution=16, vae_channels=(8,), latent_channels=4, patch_size=2, layers=1, heads=2, head_dim=8,
        clip_width=8, t5_tokens=24, num_merges=10_000, norm_groups=4,
    ),
}


def world_words() -> list[str]:
    """Every word of the shapes world's captions (the small T5 tokenizer's vocabulary)."""
    from synthscene.world.classes import CLASSES

    words = ["a", "an", "photo", "picture", "of", "and", "empty", "scene", "two", "three", "four", ","]
    for cls in CLASSES:
        words += [cls.name, cls.plural, cls.colour, *cls.parts]
    return words


def training_scheduler() -> DDPMScheduler:
    """DDPM, 1000 steps, cosine betas, epsilon prediction; no sample clipping (latents)."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                         prediction_type="epsilon", clip_sample=False)


def sampling_scheduler(train_scheduler) -> DDIMScheduler:
    """The scheduler a saved pipeline samples with: DDIM on the training betas."""
    return DDIMScheduler.from_config(train_scheduler.config, clip_sample=False, set_alpha_to_one=False,
                                     timestep_spacing="leading", steps_offset=1)


def flow_training_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """Rectified flow, 1000 timesteps, no resolution shift (32 px images have few tokens; SD3's
    shift of 3 is for 1024 px); training and sampling share it."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)


def build_components(arch: GeneratorArchitecture | MMDiTArchitecture) -> dict:
    """Fresh, randomly initialised pipeline components (torch's default init; seed first)."""
    if isinstance(arch, MMDiTArchitecture):
        return build_mmdit_components(arch)
    tokenizer = build_clip_tokenizer(arch.num_merges)
    vae_levels = len(arch.vae_channels)
    vae = _vae(arch)
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


def _vae(arch, shift_factor: float | None = None) -> AutoencoderKL:
    levels = len(arch.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=arch.latent_channels,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=arch.vae_channels, layers_per_block=1, norm_num_groups=arch.norm_groups,
        sample_size=arch.resolution, shift_factor=shift_factor,
    )


def build_mmdit_components(arch: MMDiTArchitecture) -> dict:
    """StableDiffusion3Pipeline's components, fresh (see ``MMDiTArchitecture``)."""
    tokenizer = build_clip_tokenizer(arch.num_merges)
    t5_tokenizer = build_t5_tokenizer(world_words(), arch.t5_tokens)

    def clip():
        return CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=arch.clip_width, intermediate_size=2 * arch.clip_width,
            num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=MODEL_MAX_LENGTH,
            projection_dim=arch.clip_width, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ))

    joint = 2 * arch.clip_width  # CLIP-L and CLIP-G states side by side, as wide as T5's
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tokenizer), d_model=joint, d_kv=arch.head_dim, d_ff=2 * joint,
                                 num_layers=0, num_heads=arch.heads, dropout_rate=0.0, pad_token_id=0, eos_token_id=1,
                                 decoder_start_token_id=0))
    vae = _vae(arch, shift_factor=0.0)  # SD3's pipeline decodes latents / scale + shift
    transformer = SD3Transformer2DModel(
        sample_size=arch.resolution // 2 ** (len(arch.vae_channels) - 1), patch_size=arch.patch_size,
        in_channels=arch.latent_channels, out_channels=arch.latent_channels, num_layers=arch.layers,
        attention_head_dim=arch.head_dim, num_attention_heads=arch.heads, joint_attention_dim=joint,
        caption_projection_dim=arch.width, pooled_projection_dim=joint,
        # positions for the native token grid only (larger sizes are refused: models.info.max_latent_size)
        pos_embed_max_size=arch.resolution // 2 ** (len(arch.vae_channels) - 1) // arch.patch_size, qk_norm="rms_norm",
    )
    return {"vae": vae, "transformer": transformer, "text_encoder": clip(), "text_encoder_2": clip(),
            "text_encoder_3": t5, "tokenizer": tokenizer, "tokenizer_2": tokenizer, "tokenizer_3": t5_tokenizer,
            "scheduler": flow_training_scheduler()}
