"""One adapter per model family: what methods need to drive a pipeline without knowing its class.

A family is recognised by its denoiser's class (``UNet2DConditionModel`` with or without
SDXL's added text / time conditioning, ``SD3Transformer2DModel``, ``FluxTransformer2DModel``);
anything else is refused with a message. Each adapter gives:

- prompt encoding as its pipeline does it (SD: one CLIP; SDXL: two CLIPs, pooled text and
  time ids; SD3: CLIP-L + CLIP-G + T5; FLUX: CLIP pooled + T5), via the pipeline's own
  ``encode_prompt``;
- one guided prediction on spatial latents ``[B, C, h, w]`` (FLUX's 2x2 packing and its
  position ids are done here), the schedule's start, noise and step, and decoding;
- where a prompt's words sit in the text axis that attention capture sees
  (``synthscene.models.text_layout``, torch-free so planning can check prompts).

The attention-layer and feature tables depend on the denoiser alone and live in
``synthscene.models.adapters``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from synthscene.models.text_layout import TextLayout, family_name, text_layout

# ---- driving a pipeline -----------------------------------------------------------------------


@dataclass
class Conditioning:
    """Encoded prompts: ``states`` [B', T, D] ([unconditional; conditional] when ``guided``),
    and what else the family's denoiser takes (pooled text; SDXL's time ids are added per call)."""

    states: torch.Tensor
    guided: bool
    pooled: torch.Tensor | None = None

    def rows(self, k: int, count: int) -> Conditioning:
        """Prompt ``k`` of ``count`` alone (with its unconditional row when guided)."""
        pick = slice(k, None, count) if self.guided else slice(k, k + 1)
        return Conditioning(self.states[pick], self.guided, None if self.pooled is None else self.pooled[pick])


class Family:
    """What every family adapter offers, as SD 1.x / 2.x do it (a UNet conditioned on CLIP's
    token states, epsilon or v prediction on a DDPM-style schedule); the other families
    override what differs."""

    name = "sd"
    denoiser_attribute = "unet"
    joint_attention = False  # the text stream changes from layer to layer (SD3, FLUX)

    def __init__(self, pipe):
        self.pipe = pipe

    @property
    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipe, self.denoiser_attribute)

    @property
    def device(self) -> torch.device:
        return self.denoiser.device

    @property
    def dtype(self) -> torch.dtype:
        return self.denoiser.dtype

    @property
    def latent_channels(self) -> int:
        return int(self.pipe.vae.config.latent_channels)

    def text_layout(self) -> TextLayout:
        names = ("tokenizer", "tokenizer_2", "tokenizer_3")
        return text_layout(self.name, {n: getattr(self.pipe, n) for n in names if getattr(self.pipe, n, None)})

    def guides(self, guidance: float) -> bool:
        """Whether ``guidance`` doubles the batch into [unconditional, conditional]."""
        return guidance > 1.0

    def pipeline_kwargs(self) -> dict:
        """What a call of the pipeline itself needs so its text axis is ``text_layout``'s."""
        return {}

    # prompts
    def encode(self, prompts: list[str], guided: bool) -> Conditioning:
        cond, uncond = self.pipe.encode_prompt(prompts, self.device, 1, guided)
        return Conditioning(torch.cat([uncond, cond]) if guided else cond, guided)

    def encode_texts(self, texts: list[str]) -> Conditioning:
        """Unguided conditioning of ``texts`` (class prompts, the diffusion classifier's rows)."""
        return self.encode(texts, guided=False)

    # sampling
    def start(self, steps: int, latent_hw: tuple[int, int]) -> torch.Tensor:
        """Set the schedule for ``steps`` on a ``latent_hw`` canvas; its timesteps."""
        self.pipe.scheduler.set_timesteps(steps, device=self.device)
        return self.pipe.scheduler.timesteps

    def initial_latents(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        latents = torch.randn(shape, generator=generator, device=generator.device).to(self.device, self.dtype)
        return latents * getattr(self.pipe.scheduler, "init_noise_sigma", 1.0)

    def predict(self, latents: torch.Tensor, t, conditioning: Conditioning, guidance: float) -> torch.Tensor:
        """The guided model output for spatial ``latents`` [B, C, h, w] (conditioning: B prompts)."""
        guided = conditioning.guided
        model_input = torch.cat([latents, latents]) if guided else latents
        output = self.denoise(self.scale_input(model_input, t), t, conditioning)
        if not guided:
            return output
        uncond, cond = output.chunk(2)
        return uncond + guidance * (cond - uncond)

    def scale_input(self, model_input: torch.Tensor, t) -> torch.Tensor:
        """The sampler's input scaling (Euler-type schedulers divide by sqrt(sigma^2 + 1))."""
        return self.pipe.scheduler.scale_model_input(model_input, t)

    def denoise(self, model_input: torch.Tensor, t, conditioning: Conditioning) -> torch.Tensor:
        """The denoiser on ``model_input`` as it was trained (no sampler scaling)."""
        return self.denoiser(model_input, t, encoder_hidden_states=conditioning.states.to(self.dtype)).sample

    # training targets (the diffusion classifier)
    @property
    def train_timesteps(self) -> int:
        return int(self.pipe.scheduler.config.num_train_timesteps)

    def noised(self, latents: torch.Tensor, noise: torch.Tensor, timestep: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(latents noised to training ``timestep``, what the model predicts there)."""
        alpha = self.pipe.scheduler.alphas_cumprod.to(torch.float32)[timestep]
        noisy = alpha.sqrt() * latents + (1 - alpha).sqrt() * noise
        if self.pipe.scheduler.config.prediction_type == "v_prediction":
            return noisy, alpha.sqrt() * noise - (1 - alpha).sqrt() * latents
        return noisy, noise

    def spatial_latents(self, latents: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """A pipeline's latents [B, C, h, w] as its step callback sees them, spatial."""
        return latents

    def step(self, output: torch.Tensor, t, latents: torch.Tensor) -> torch.Tensor:
        return self.pipe.scheduler.step(output, t, latents).prev_sample

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """uint8 [H, W, 3] of one latent [1, C, h, w]."""
        config = self.pipe.vae.config
        shift = getattr(config, "shift_factor", None) or 0.0
        image = self.pipe.vae.decode(latents / config.scaling_factor + shift).sample
        return ((image[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


class SDXLFamily(Family):
    """SDXL: two CLIP encoders (token states concatenated), the second's pooled output and the
    size / crop time ids added to the timestep embedding."""

    name = "sdxl"

    def encode(self, prompts: list[str], guided: bool) -> Conditioning:
        cond, uncond, pooled, uncond_pooled = self.pipe.encode_prompt(prompts, device=self.device,
                                                                      num_images_per_prompt=1,
                                                                      do_classifier_free_guidance=guided)
        if guided:
            return Conditioning(torch.cat([uncond, cond]), True, torch.cat([uncond_pooled, pooled]))
        return Conditioning(cond, False, pooled)

    def denoise(self, model_input, t, conditioning):
        size = tuple(s * self.pipe.vae_scale_factor for s in model_input.shape[-2:])
        projection_dim = int(self.pipe.text_encoder_2.config.projection_dim)
        time_ids = self.pipe._get_add_time_ids(size, (0, 0), size, dtype=self.dtype,
                                               text_encoder_projection_dim=projection_dim)
        added = {"text_embeds": conditioning.pooled.to(self.dtype),
                 "time_ids": time_ids.to(self.device).expand(model_input.shape[0], -1)}
        return self.denoiser(model_input, t, encoder_hidden_states=conditioning.states.to(self.dtype),
                             added_cond_kwargs=added).sample


class FlowMatchingFamily(Family):
    """Transformers trained with rectified flow: x_t = (1 - sigma) x_0 + sigma noise, the model
    predicts the velocity noise - x_0, sigma = t / 1000; Euler steps, no input scaling."""

    denoiser_attribute = "transformer"
    joint_attention = True

    def scale_input(self, model_input, t):
        return model_input

    def pipeline_kwargs(self):
        return {"max_sequence_length": self.text_layout().parts[-1].length}

    def noised(self, latents, noise, timestep):
        sigma = timestep / self.train_timesteps
        return (1 - sigma) * latents + sigma * noise, noise - latents

    def step(self, output, t, latents):
        return self.pipe.scheduler.step(output, t, latents, return_dict=False)[0]


class SD3Family(FlowMatchingFamily):
    """SD3 / 3.5: an MMDiT over [image patches, text] with CLIP-L + CLIP-G + T5 text."""

    name = "sd3"

    def encode(self, prompts, guided):
        cond, uncond, pooled, uncond_pooled = self.pipe.encode_prompt(
            prompts, None, None, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=guided,
            **self.pipeline_kwargs())
        if guided:
            return Conditioning(torch.cat([uncond, cond]), True, torch.cat([uncond_pooled, pooled]))
        return Conditioning(cond, False, pooled)

    def start(self, steps, latent_hw):
        scheduler = self.pipe.scheduler
        kwargs = {}
        if scheduler.config.get("use_dynamic_shifting", False):
            patch = self.denoiser.config.patch_size
            kwargs["mu"] = _shift(scheduler, (latent_hw[0] // patch) * (latent_hw[1] // patch))
        scheduler.set_timesteps(steps, device=self.device, **kwargs)
        return scheduler.timesteps

    def denoise(self, model_input, t, conditioning):
        timestep = torch.as_tensor(t, device=self.device).expand(model_input.shape[0])
        return self.denoiser(hidden_states=model_input, timestep=timestep,
                             encoder_hidden_states=conditioning.states.to(self.dtype),
                             pooled_projections=conditioning.pooled.to(self.dtype), return_dict=False)[0]


class FluxFamily(FlowMatchingFamily):
    """FLUX.1: an MMDiT over [text, image] with double- and single-stream blocks, RoPE on
    position ids, 2x2 latent patches packed into tokens; T5 token states and CLIP's pooled
    vector; guidance is an embedding (guidance-distilled models), never a doubled batch."""

    name = "flux"

    def guides(self, guidance):
        return False

    def encode(self, prompts, guided):
        if guided:
            raise ValueError("FLUX takes guidance as an embedding, not as an unconditional batch half")
        states, pooled, _ = self.pipe.encode_prompt(prompts, None, device=self.device, num_images_per_prompt=1,
                                                    **self.pipeline_kwargs())
        return Conditioning(states, False, pooled)

    def start(self, steps, latent_hw):
        scheduler = self.pipe.scheduler
        sigmas = np.linspace(1.0, 1 / steps, steps)
        mu = _shift(scheduler, (latent_hw[0] // 2) * (latent_hw[1] // 2))
        scheduler.set_timesteps(sigmas=sigmas, mu=mu, device=self.device)
        return scheduler.timesteps

    def predict(self, latents, t, conditioning, guidance):
        return self.denoise(latents, t, conditioning, guidance)

    def spatial_latents(self, latents, image_hw):
        factor = self.pipe.vae_scale_factor
        return unpack_latents(latents, image_hw[0] // factor, image_hw[1] // factor)

    def denoise(self, model_input, t, conditioning, guidance: float = 3.5):
        """FLUX's model time is sigma (t / 1000); a guidance-distilled model gets ``guidance``
        as an embedding (3.5: FLUX.1-dev's default)."""
        batch, channels, height, width = model_input.shape
        packed = pack_latents(model_input)
        image_ids = latent_position_ids(height // 2, width // 2, self.device, self.dtype)
        text_ids = torch.zeros(conditioning.states.shape[1], 3, device=self.device, dtype=self.dtype)
        timestep = torch.as_tensor(t, device=self.device).expand(batch).to(self.dtype) / 1000
        embedded = (torch.full((batch,), guidance, device=self.device, dtype=torch.float32)
                    if self.denoiser.config.guidance_embeds else None)
        output = self.denoiser(hidden_states=packed, timestep=timestep, guidance=embedded,
                               pooled_projections=conditioning.pooled.to(self.dtype),
                               encoder_hidden_states=conditioning.states.to(self.dtype), txt_ids=text_ids,
                               img_ids=image_ids, return_dict=False)[0]
        return unpack_latents(output, height, width)


def _shift(scheduler, image_tokens: int) -> float:
    """The resolution-dependent shift ``mu`` of SD3.5 / FLUX schedules (linear in the image's
    token count between the config's base and max)."""
    config = scheduler.config
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return image_tokens * slope + base_shift - slope * base_len


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, (h/2)(w/2), 4C]: FLUX's 2x2 patches as tokens, row-major."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of ``pack_latents`` for an [h, w] latent grid."""
    b, _, packed = tokens.shape
    c = packed // 4
    return tokens.view(b, height // 2, width // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, height, width)


def latent_position_ids(rows: int, cols: int, device, dtype) -> torch.Tensor:
    """[rows * cols, 3] FLUX image position ids (0, row, col) of a token grid."""
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3).to(device, dtype)


_FAMILIES = {"sd": Family, "sdxl": SDXLFamily, "sd3": SD3Family, "flux": FluxFamily}


def family_of(pipe) -> Family:
    """The adapter for a loaded pipeline, from its denoiser."""
    denoiser = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
    if denoiser is None:
        raise ValueError(f"unknown model family: {type(pipe).__name__} has neither a unet nor a transformer")
    return _FAMILIES[family_name(type(denoiser).__name__, dict(denoiser.config))](pipe)
