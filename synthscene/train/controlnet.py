"""``synthscene train-controlnet``: teach a ControlNet to draw a layout with a frozen pipeline.

1. read the dataset's layouts (``layout.data.open_layouts``): image, a caption built from
   the layout's classes, the layout (instances, parts where the dataset has them);
2. build a ``diffusers.ControlNetModel`` from the pipeline's UNet (its encoder copied, zero
   convolutions out), reading the control image of ``layout.maps.control_image``: classes,
   instance boundaries and parts. Its conditioning embedding downsamples as the VAE does,
   so control and latents meet at the latent resolution;
3. train it with the UNet, VAE and text encoder frozen: epsilon loss (Min-SNR weighted),
   captions dropped at ``caption_dropout`` (for guidance), the part channels zeroed for a
   ``part_dropout`` share of the batch, so one ControlNet serves layouts with and without
   parts. An EMA of the weights is kept; each step's batch, noise and drops come from
   (seed, step), so a resumed run trains exactly as an uninterrupted one;
4. save ``controlnet/`` (``save_pretrained``, EMA weights) and ``control.json`` (the classes
   and parts the channels encode, the base model).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from synthscene.io import make_dir, replace_dir, write_json
from synthscene.layout.data import open_layouts
from synthscene.layout.maps import Layout, control_channels, control_image
from synthscene.provenance import run_record
from synthscene.train.loop import open_run_folder, optimizer_step, resume_state, save_checkpoint

CONTROL_INFO = "control.json"


class ControlNetTrainConfig(BaseModel):
    """Everything that defines a train-controlnet run (saved as ``config.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: str  # a dataset folder, COCO instances file or Cityscapes folder
    split: str = "train"
    model: str = "embedded"  # the frozen pipeline the ControlNet steers
    max_images: int | None = Field(None, ge=1)
    steps: int = Field(3000, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    warmup_steps: int = Field(100, ge=0)
    caption_dropout: float = Field(0.1, ge=0, le=1)
    part_dropout: float = Field(0.5, ge=0, le=1)
    snr_gamma: float | None = Field(5.0, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    checkpoint_every: int = Field(250, ge=1)
    seed: int = 0


def embedding_channels(vae_factor: int) -> tuple[int, ...]:
    """The ControlNet conditioning embedding's widths: one stride-2 step per VAE halving (SD's
    8x VAE: diffusers' default (16, 32, 96, 256); the shapes model's 1x VAE: one level)."""
    steps = int(round(math.log2(vae_factor)))
    if 2 ** steps != vae_factor or not 0 <= steps <= 3:
        raise ValueError(f"a VAE that scales by {vae_factor} is not supported (1, 2, 4 or 8)")
    return (16, 32, 96, 256)[3 - steps:]


def build_controlnet(unet, vae_factor: int, channels: int):
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, conditioning_channels=channels,
                                     conditioning_embedding_out_channels=embedding_channels(vae_factor))


def check_controlnet(controlnet, unet) -> None:
    """Refuse a ControlNet made for another denoiser architecture, in one message."""
    mine, base = controlnet.config, unet.config
    for key in ("block_out_channels", "cross_attention_dim", "in_channels", "down_block_types"):
        a, b = mine.get(key), base.get(key)
        if a is not None and b is not None and (list(a) if isinstance(a, (list, tuple)) else a) != (
                list(b) if isinstance(b, (list, tuple)) else b):
            raise ValueError(f"this ControlNet was made for another base model: its {key} is {a}, the "
                             f"pipeline's UNet has {b}")


def fit_to(image: np.ndarray, layout: Layout, size: int) -> tuple[np.ndarray, Layout]:
    """Centre-crop to a square and resize an image (area) and its layout (nearest) to ``size``."""
    from synthscene.records import Instances

    height, width = image.shape[:2]
    if (height, width) == (size, size):
        return image, layout
    side = min(height, width)
    y0, x0 = (height - side) // 2, (width - side) // 2

    def square(a: np.ndarray, interpolation) -> np.ndarray:
        return cv2.resize(a[y0:y0 + side, x0:x0 + side], (size, size), interpolation=interpolation)

    masks = np.stack([square(m.astype(np.uint8), cv2.INTER_NEAREST) > 0 for m in layout.instances.masks]) \
        if len(layout.instances) else np.zeros((0, size, size), bool)
    keep = masks.reshape(len(masks), -1).any(1)
    instances = Instances.from_masks(masks[keep], layout.instances.class_id[keep]) if keep.any() \
        else Instances.empty(size, size)
    parts = None if layout.parts is None else square(layout.parts, cv2.INTER_NEAREST)
    return square(image, cv2.INTER_AREA), Layout(instances, parts)


def train_controlnet(config: ControlNetTrainConfig, out: str | Path, resume: bool = False, device: str = "cpu",
                     max_minutes: float | None = None, progress: bool = True) -> Path:
    """Train; returns the saved ControlNet's folder (``out/controlnet``)."""
    from diffusers.training_utils import EMAModel

    from synthscene.models.configs import training_scheduler
    from synthscene.models.info import model_fingerprint, model_info, require_family
    from synthscene.models.load import load_pipeline
    from synthscene.train.generator import _denoising_loss

    out = Path(out)
    require_family(model_info(config.model), "train-controlnet")
    # the learning rate is constant after warm-up, so a finished run may be resumed for more steps
    open_run_folder(out, config.model_dump(mode="json"), resume, may_change=("steps",))
    layouts = open_layouts(config.data, config.split)
    count = len(layouts) if config.max_images is None else min(config.max_images, len(layouts))
    if count == 0:
        raise ValueError(f"{config.data} has no images in split {config.split!r}")
    pipe = load_pipeline(config.model)
    vae, unet, text_encoder, tokenizer = pipe.vae, pipe.unet, pipe.text_encoder, pipe.tokenizer
    vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    resolution = unet.config.sample_size * vae_factor
    num_classes, num_parts = len(layouts.class_names), layouts.num_parts
    make_dir(out / "checkpoints")
    if not resume:
        write_json(out / "config.json", config.model_dump(mode="json"), indent=2)
        write_json(out / "run.json", run_record({**config.model_dump(mode="json"), "resolution": resolution,
                                                 "images": count}), indent=2)

    torch.manual_seed(config.seed)
    controlnet = build_controlnet(unet, vae_factor, control_channels(num_classes, num_parts))
    for module in (vae, unet, text_encoder):
        module.requires_grad_(False).eval().to(device)
    controlnet.to(device).train()
    trained = list(controlnet.parameters())
    optimizer = torch.optim.AdamW(trained, lr=config.learning_rate, weight_decay=1e-2)
    ema = EMAModel(trained, decay=config.ema_decay, use_ema_warmup=True)
    start = resume_state(out, {"controlnet": controlnet, "ema": ema, "optimizer": optimizer})
    ema.to(device)
    scheduler = training_scheduler()
    empty_ids = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length,
                          return_tensors="pt").input_ids
    started = time.monotonic()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="train controlnet",
               disable=not progress)
    log = open(out / "train_log.jsonl", "a")
    for step in bar:
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
        indices = torch.randint(0, count, (config.batch_size,), generator=generator).tolist()
        images, captions, controls = [], [], []
        for index in indices:
            image, caption, layout = layouts.item(index)
            image, layout = fit_to(image, layout, resolution)
            images.append(image)
            captions.append(caption)
            controls.append(control_image(layout, num_classes, num_parts))
        pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)
        control = torch.from_numpy(np.stack(controls))
        no_parts = torch.rand(len(indices), generator=generator) < config.part_dropout
        control[no_parts, num_classes + 1:] = 0
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        ids[torch.rand(len(ids), generator=generator) < config.caption_dropout] = empty_ids
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample(generator) * vae.config.scaling_factor
            hidden = text_encoder(ids.to(device))[0]
        noise = torch.randn(latents.shape, generator=generator).to(device)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), generator=generator)
        timesteps = timesteps.to(device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        down, mid = controlnet(noisy, timesteps, encoder_hidden_states=hidden, controlnet_cond=control.to(device),
                               return_dict=False)
        prediction = unet(noisy, timesteps, hidden, down_block_additional_residuals=down,
                          mid_block_additional_residual=mid).sample
        loss = _denoising_loss(prediction, noise, timesteps, scheduler, config.snr_gamma)
        optimizer_step(optimizer, loss, trained, config.learning_rate * min(1.0, (step + 1) / max(1, config.warmup_steps)))
        ema.step(trained)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower the learning rate")
        log.write(json.dumps({"step": step, "loss": round(loss.item(), 6)}) + "\n")
        bar.set_postfix(loss=f"{loss.item():.4f}")
        done = step + 1
        out_of_time = max_minutes is not None and time.monotonic() - started > 60 * max_minutes
        if done % config.checkpoint_every == 0 or done == config.steps or out_of_time:
            log.flush()
            save_checkpoint(out / "checkpoints", done, {"controlnet": controlnet.state_dict(),
                                                        "ema": ema.state_dict(), "optimizer": optimizer.state_dict()})
        if out_of_time:
            log.close()
            return out / "checkpoints"
    log.close()

    ema.copy_to(trained)
    tmp = out / ".controlnet.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    controlnet.save_pretrained(tmp, safe_serialization=True)
    replace_dir(tmp, out / "controlnet")
    write_json(out / CONTROL_INFO, {
        "class_names": layouts.class_names, "boundary_channel": num_classes,
        "parts": layouts.parts.to_json() if layouts.parts is not None else [],
        "channels": control_channels(num_classes, num_parts), "resolution": resolution,
        "model": config.model, "model_fingerprint": model_fingerprint(config.model),
    }, indent=2)
    return out / "controlnet"
