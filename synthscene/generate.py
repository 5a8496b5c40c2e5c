"""Generate images from prompts with a diffusers pipeline, one seed per image."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from synthscene.io import atomic_output_dir, write_json, write_jsonl
from synthscene.models.families import family_of
from synthscene.models.info import model_fingerprint
from synthscene.models.load import load_pipeline
from synthscene.plan import sample_generator, sample_seed
from synthscene.provenance import run_record


def read_prompts(prompts: list[str], prompts_file: str | Path | None = None) -> list[str]:
    """Prompts from the command line and/or a file (one per line, blank lines skipped)."""
    prompts = list(prompts)
    if prompts_file is not None:
        path = Path(prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"prompts file {path} does not exist")
        prompts += [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError("no prompts given: use --prompt (repeatable) or --prompts-file")
    return prompts


def check_prompts(prompts: list[str], text_layout) -> None:
    """Refuse prompts a text encoder of the model would silently truncate (``TextLayout.check``
    names which encoder and where)."""
    for prompt in prompts:
        text_layout.check(prompt)


def generate_images(prompts: list[str], out: str | Path, model: str = "embedded", images_per_prompt: int = 1,
                    steps: int = 25, guidance: float = 7.5, seed: int = 0, batch_size: int = 8,
                    overwrite: bool = False, progress: bool = True, device: str = "cpu") -> Path:
    """Write ``images_per_prompt`` images per prompt to ``out/images`` with
    ``out/metadata.jsonl`` (prompt, seed) and ``out/run.json`` (config, model, versions)."""
    # 1. check inputs before loading anything heavy
    for name, value in (("images_per_prompt", images_per_prompt), ("steps", steps), ("batch_size", batch_size)):
        if value <= 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    pipe = load_pipeline(model, device=device)
    family = family_of(pipe)
    check_prompts(prompts, family.text_layout())
    jobs = [(i, prompt) for i, prompt in enumerate(p for p in prompts for _ in range(images_per_prompt))]
    config = {"prompts": prompts, "model": model, "images_per_prompt": images_per_prompt, "steps": steps,
              "guidance": guidance, "seed": seed, "batch_size": batch_size,
              "scheduler": type(pipe.scheduler).__name__}

    # 2. generate in batches; every image has its own generator, so batching changes nothing
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        (tmp / "images").mkdir()
        rows = []
        for start in tqdm(range(0, len(jobs), batch_size), desc="generate", disable=not progress):
            batch = jobs[start : start + batch_size]
            seeds = [sample_seed(seed, i) for i, _ in batch]
            with torch.no_grad():
                images = pipe([p for _, p in batch], num_inference_steps=steps, guidance_scale=guidance,
                              generator=[sample_generator(s) for s in seeds], output_type="np",
                              **family.pipeline_kwargs()).images
            for (index, prompt), sample_seed_value, image in zip(batch, seeds, images):
                name = f"images/{index:06d}.png"
                Image.fromarray((image * 255).round().astype("uint8")).save(tmp / name)
                rows.append({"file_name": name, "text": prompt, "seed": sample_seed_value, "index": index})
        write_jsonl(tmp / "metadata.jsonl", rows)
        write_json(tmp / "run.json", run_record(config, {**model_fingerprint(model), "device": str(pipe.device)}), indent=2)
    return Path(out)
