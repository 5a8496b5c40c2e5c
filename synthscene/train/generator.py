"""Train or fine-tune a Stable Diffusion-compatible pipeline on image-caption pairs.

From scratch (``architecture="shapes"``): (1) train the VAE as an autoencoder, set its
latent scaling factor to 1 / std of the latents, as Stable Diffusion does; (2) train the
UNet and the text encoder together on the frozen VAE's latents (DDPM, epsilon prediction).
``architecture="shapes-mmdit"``: the same two stages for a Stable Diffusion 3 pipeline
(SD3Transformer2DModel, CLIP-L / CLIP-G / T5 token states without context mixing), the
denoiser trained with rectified flow (velocity target, logit-normal timesteps, as SD3).
Fine-tuning (``init=<hub id or folder>``): VAE and text encoders frozen, denoiser trained
(InstaGen's first step on real SD).

Each step draws its batch, noise, timesteps and caption dropout from a generator seeded
by (seed, step), so a resumed run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusion3Pipeline, StableDiffusionPipeline
from diffusers.training_utils import EMAModel
from tqdm import tqdm

from synthscene.io import replace_dir, write_json
from synthscene.models.configs import (
    ARCHITECTURES,
    build_components,
    flow_training_scheduler,
    sampling_scheduler,
    training_scheduler,
)
from synthscene.models.info import model_info, require_family
from synthscene.models.load import check_device, load_pipeline
from synthscene.models.text_layout import SD3_T5_LENGTH, t5_length
from synthscene.provenance import run_record
from synthscene.train.image_captions import (
    ImageCaptionDataset,
    check_image_captions,
    read_box_crops,
    read_image_captions,
)
from synthscene.train.loop import optimizer_step, truncate_log

CHECKPOINT_PREFIX = "step-"


@dataclass(frozen=True)
class GeneratorTrainingConfig:
    data: str
    out: str
    architecture: str | None = "shapes"  # from scratch; ignored when ``init`` is given
    init: str | None = None  # hub id or folder of a pipeline to fine-tune
    image_root: str | None = None
    # data is a COCO instances file: train on square crops around its boxes, captioned by
    # their classes (InstaGen's fine-tuning; ``classes``: only these, e.g. the base classes)
    classes_from_annotations: bool = False
    classes: tuple[str, ...] | None = None
    steps: int = 1000
    vae_steps: int = 400
    batch_size: int = 32
    learning_rate: float = 3e-4
    vae_learning_rate: float = 1e-3
    warmup_steps: int = 100
    caption_dropout: float = 0.1
    snr_gamma: float | None = 5.0  # Min-SNR-gamma loss weighting (Hang et al. 2023); None: plain MSE
    ema: bool = True
    ema_decay: float = 0.9995
    checkpoint_every: int = 500
    max_minutes: float | None = None  # stop early (and save) after this much wall time
    seed: int = 0
    progress: bool = True
    device: str = "cpu"  # e.g. "cuda"; random draws stay on the CPU, so batches and noise match across devices

    def check(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.vae_steps < 0:
            raise ValueError(f"vae_steps must be >= 0, got {self.vae_steps}")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise ValueError(f"snr_gamma must be > 0 (or None), got {self.snr_gamma}")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        if self.init is None and self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}; known: {sorted(ARCHITECTURES)}")
        check_device(self.device)


def train_generator(config: GeneratorTrainingConfig, resume: bool = False) -> Path:
    """Train; returns the folder of the saved pipeline (``out/model``)."""
    # 1. check the inputs before writing anything
    config.check()
    if config.init is not None:
        require_family(model_info(config.init), "train-generator --init", ("sd", "sd3"))
    out = Path(config.out)
    if (out / "model").exists() and not resume:
        raise FileExistsError(f"{out / 'model'} already exists; use another --out or --resume")
    checkpoint = latest_checkpoint(out) if resume else None
    if config.classes and not config.classes_from_annotations:
        raise ValueError("classes choose which annotations become crops: they need classes_from_annotations")
    pairs = None if config.classes_from_annotations else read_image_captions(config.data, config.image_root)

    # 2. components: from a checkpoint, a pretrained pipeline, or fresh
    torch.manual_seed(config.seed)
    if checkpoint is not None:
        components = _load_components(checkpoint)
    elif config.init is not None:
        pipe = load_pipeline(config.init)
        components = {k: v for k, v in pipe.components.items() if k in _COMPONENTS}
        # the model's own noise schedule (betas, prediction type, flow shift) for training and sampling
        components["scheduler"] = pipe.scheduler
    else:
        components = build_components(ARCHITECTURES[config.architecture])
    device = torch.device(config.device)
    modules = {k: v for k, v in components.items() if isinstance(v, torch.nn.Module)}
    for module in modules.values():
        module.to(device)
    flow = "transformer" in components  # SD3: rectified flow; SD: DDPM epsilon
    tokenizer = components["tokenizer"]
    resolution = components["vae"].config.sample_size
    if pairs is None:  # crops of at least the model's resolution, as InstaGen's 512 px crops for SD
        pairs = read_box_crops(config.data, config.image_root, list(config.classes or []) or None,
                               min_side=resolution)
    check_image_captions(pairs, tokenizer, progress=config.progress)
    if components.get("tokenizer_3") is not None:  # SD3's T5 truncates at its own length
        check_image_captions(pairs, components["tokenizer_3"], progress=False)
    dataset = ImageCaptionDataset(pairs, resolution)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "training_config.json", run_record({**asdict(config), "resolution": resolution,
                                                         "num_images": len(pairs)}), indent=2)
    from_scratch = config.init is None and (checkpoint is None or not _checkpoint_state(checkpoint)["finetune"])

    # 3. the VAE stage (from scratch only)
    state = _checkpoint_state(checkpoint) if checkpoint else {"step": 0, "vae_done": False}
    if from_scratch and not state["vae_done"]:
        _train_vae(components["vae"], dataset, config)
        state["vae_done"] = True

    # 4. the denoiser stage
    denoiser, vae = components["transformer" if flow else "unet"], components["vae"]
    text_encoders = [modules[k] for k in _TEXT_ENCODERS if k in modules]
    vae.requires_grad_(False).eval()
    trained = list(denoiser.parameters())
    for encoder in text_encoders:
        encoder.requires_grad_(from_scratch)
        trained += list(encoder.parameters()) if from_scratch else []
    optimizer = torch.optim.AdamW(trained, lr=config.learning_rate, weight_decay=1e-2)
    ema = EMAModel(trained, decay=config.ema_decay, use_ema_warmup=True) if config.ema else None
    if checkpoint is not None and state["step"] > 0:
        saved = torch.load(checkpoint / "trainer_state.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(saved["optimizer"])
        if ema is not None:
            ema.load_state_dict(saved["ema"])
            ema.to(device)
    sampler = components["scheduler"]
    noise_scheduler = sampler if flow else DDPMScheduler.from_config(sampler.config)
    encode = _sd3_encoder(components) if flow else _clip_encoder(tokenizer, text_encoders[0])
    started = time.monotonic()
    log_path = out / "loss.jsonl"
    truncate_log(log_path, state["step"] + 1)  # a resumed run re-does the steps after its checkpoint
    bar = tqdm(range(state["step"], config.steps), initial=state["step"], total=config.steps,
               desc="train generator", disable=not config.progress)
    denoiser.train()
    for encoder in text_encoders:
        encoder.train(from_scratch)
    step = state["step"]
    for step in bar:
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        images, captions = _batch(dataset, config.batch_size, generator)
        drop = torch.rand(len(captions), generator=generator) < config.caption_dropout  # for CFG
        captions = ["" if dropped else caption for caption, dropped in zip(captions, drop.tolist())]
        images = images.to(device)
        with torch.no_grad():
            latents = vae.encode(images).latent_dist.sample(generator)
            latents = (latents - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=generator).to(device)
        with torch.set_grad_enabled(from_scratch):
            states, pooled = encode(captions)
        if flow:
            loss = _flow_loss(denoiser, latents, noise, states, pooled, generator)
        else:
            timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(latents),),
                                      generator=generator).to(device)
            noisy = noise_scheduler.add_noise(latents, noise, timesteps)
            prediction = denoiser(noisy, timesteps, states).sample
            target = (noise_scheduler.get_velocity(latents, noise, timesteps)
                      if noise_scheduler.config.prediction_type == "v_prediction" else noise)
            loss = _denoising_loss(prediction, target, timesteps, noise_scheduler, config.snr_gamma)
        optimizer_step(optimizer, loss, trained, config.learning_rate * min(1.0, (step + 1) / max(1, config.warmup_steps)))
        if ema is not None:
            ema.step(trained)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        with open(log_path, "a") as f:
            f.write(json.dumps({"step": step + 1, "loss": round(loss.item(), 6)}) + "\n")
        done = step + 1
        out_of_time = config.max_minutes is not None and time.monotonic() - started > 60 * config.max_minutes
        if done % config.checkpoint_every == 0 or done == config.steps or out_of_time:
            _save_checkpoint(out, components, optimizer, ema, {"step": done, "vae_done": True,
                                                                "finetune": not from_scratch})
        if out_of_time:
            break

    # 5. the pipeline, with EMA weights when enabled
    if ema is not None:
        ema.copy_to(trained)
    saved = {k: v for k, v in components.items() if k != "scheduler"}
    if flow:
        pipe = StableDiffusion3Pipeline(**saved, scheduler=sampler)
    else:
        sampler = sampling_scheduler(noise_scheduler) if from_scratch else sampler
        pipe = StableDiffusionPipeline(**saved, scheduler=sampler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    model_dir = out / "model"
    tmp = out / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    replace_dir(tmp, model_dir)
    return model_dir


def _clip_encoder(tokenizer, text_encoder):
    """SD 1.x / 2.x prompt encoding: CLIP's last hidden states over 77 padded tokens."""

    def encode(captions: list[str]):
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids.to(text_encoder.device)
        return text_encoder(ids)[0], None

    return encode


def _sd3_encoder(components: dict):
    """SD3's prompt encoding, as its pipeline does it (``encode_prompt``, with gradients):
    CLIP-L and CLIP-G penultimate states side by side, then T5's states; pooled CLIP vectors."""
    pipe = StableDiffusion3Pipeline(**{k: v for k, v in components.items()})
    length = t5_length(components["tokenizer_3"], SD3_T5_LENGTH)  # as the samplers encode it

    def encode(captions: list[str]):
        states, _, pooled, _ = pipe.encode_prompt(captions, None, None, device=components["transformer"].device,
                                                  do_classifier_free_guidance=False, max_sequence_length=length)
        return states, pooled

    return encode


def _flow_loss(transformer, latents, noise, states, pooled, generator: torch.Generator) -> torch.Tensor:
    """Rectified flow (SD3): sigma from a logit-normal (mean 0, std 1), x_t = (1 - sigma) x_0 +
    sigma noise, the model predicts the velocity noise - x_0 at timestep 1000 sigma; plain MSE."""
    sigma = torch.sigmoid(torch.randn(len(latents), generator=generator)).to(latents.device)
    s = sigma.view(-1, 1, 1, 1)
    noisy = (1 - s) * latents + s * noise
    prediction = transformer(hidden_states=noisy, timestep=sigma * 1000, encoder_hidden_states=states,
                             pooled_projections=pooled, return_dict=False)[0]
    return F.mse_loss(prediction, noise - latents)


def _denoising_loss(prediction, target, timesteps, scheduler, snr_gamma: float | None) -> torch.Tensor:
    """MSE against the model's target (epsilon, or v for v-prediction models), optionally
    Min-SNR-gamma weighted: each sample's loss is scaled by
    min(SNR, gamma) / SNR, so nearly clean timesteps stop dominating the gradient and
    the noisy ones, which decide what is drawn where, train faster."""
    per_sample = F.mse_loss(prediction, target, reduction="none").mean(dim=(1, 2, 3))
    if snr_gamma is None:
        return per_sample.mean()
    alpha_bar = scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    snr = alpha_bar / (1 - alpha_bar)
    return (per_sample * snr.clamp(max=snr_gamma) / snr).mean()


def _batch(dataset: ImageCaptionDataset, batch_size: int, generator: torch.Generator):
    indices = torch.randint(0, len(dataset), (batch_size,), generator=generator).tolist()
    items = [dataset[i] for i in indices]
    return torch.stack([image for image, _ in items]), [caption for _, caption in items]


def _train_vae(vae, dataset: ImageCaptionDataset, config: GeneratorTrainingConfig) -> None:
    """Autoencoder training (L1 + MSE + a weak KL, as SD's VAE without its GAN and LPIPS
    terms), then the latent scaling factor that gives unit-variance latents."""
    vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_learning_rate)
    bar = tqdm(range(config.vae_steps), desc="train VAE", disable=not config.progress)
    for step in bar:
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + 10_000_000 + step)
        images, _ = _batch(dataset, config.batch_size, generator)
        images = images.to(vae.device)
        posterior = vae.encode(images).latent_dist
        recon = vae.decode(posterior.sample(generator)).sample
        loss = F.l1_loss(recon, images) + F.mse_loss(recon, images) + 1e-6 * posterior.kl().mean()
        lr = config.vae_learning_rate * 0.5 * (1 + math.cos(math.pi * step / config.vae_steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    vae.eval()
    with torch.no_grad():
        generator = torch.Generator().manual_seed(config.seed)
        images, _ = _batch(dataset, min(256, 8 * config.batch_size), generator)
        std = vae.encode(images.to(vae.device)).latent_dist.sample(generator).std().item()
    vae.register_to_config(scaling_factor=1.0 / std)


def latest_checkpoint(out: Path) -> Path | None:
    folder = Path(out) / "checkpoints"
    done = sorted(p for p in folder.glob(f"{CHECKPOINT_PREFIX}*") if (p / "trainer_state.pt").is_file()) if folder.is_dir() else []
    return done[-1] if done else None


def _checkpoint_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "state.json").read_text())


def _save_checkpoint(out: Path, components: dict, optimizer, ema, state: dict) -> None:
    """Components via save_pretrained (safetensors), optimizer and EMA as tensors only;
    written under a temporary name and renamed, so a killed run leaves no half checkpoint."""
    final = out / "checkpoints" / f"{CHECKPOINT_PREFIX}{state['step']:07d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in (*_COMPONENTS, "scheduler"):
        if components.get(name) is not None:
            components[name].save_pretrained(tmp / name)
    torch.save({"optimizer": optimizer.state_dict(), "ema": ema.state_dict() if ema else None},
               tmp / "trainer_state.pt")
    (tmp / "state.json").write_text(json.dumps(state))
    replace_dir(tmp, final)


def _load_components(checkpoint: Path) -> dict:
    """A checkpoint's components, each with the class its saved config names."""
    import diffusers
    import transformers

    components = {}
    for name in _COMPONENTS:
        folder = checkpoint / name
        if not folder.is_dir():
            continue
        if name.startswith("tokenizer"):
            components[name] = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
            continue
        config = json.loads((folder / "config.json").read_text())
        if "_class_name" in config:  # diffusers
            components[name] = getattr(diffusers, config["_class_name"]).from_pretrained(folder, use_safetensors=True)
        else:
            cls = getattr(transformers, config["architectures"][0])
            components[name] = cls.from_pretrained(folder, use_safetensors=True)
    if (checkpoint / "scheduler").is_dir():  # the noise schedule trained with (a fine-tuned model's own)
        config = json.loads((checkpoint / "scheduler" / "scheduler_config.json").read_text())
        components["scheduler"] = getattr(diffusers, config["_class_name"]).from_pretrained(checkpoint / "scheduler")
    else:  # checkpoints written before schedules were saved: the from-scratch defaults
        components["scheduler"] = flow_training_scheduler() if "transformer" in components else training_scheduler()
    return components


# what a checkpoint holds, SD and SD3 alike (absent ones are skipped)
_TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")
_COMPONENTS = ("vae", "unet", "transformer", *_TEXT_ENCODERS, "tokenizer", "tokenizer_2", "tokenizer_3")
