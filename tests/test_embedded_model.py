"""The embedded shapes model: loads like a real checkpoint, is deterministic, draws what it is told
(and every shipped model is safetensors, small and carded)."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from synthscene.models.info import EMBEDDED_MODELS
from synthscene.models.load import EMBEDDED_MODEL_DIR, load_pipeline
from synthscene.world.presence import score_presence


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("embedded")


@pytest.mark.parametrize("name", sorted(EMBEDDED_MODELS))
def test_shipped_models_are_safetensors_small_and_carded(name):
    """Every shipped pipeline (``embedded``, ``embedded-mmdit``)."""
    folder = EMBEDDED_MODELS[name]
    files = [p for p in folder.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix in {".safetensors", ".bin", ".ckpt", ".pt", ".pth"}]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    assert sum(p.stat().st_size for p in files) <= 30 * 2**20
    assert (folder / "README.md").is_file(), "the model card is missing"
    assert (folder / "sample_grid.png").is_file(), "the model card's sample grid is missing"


def test_loads_through_the_real_checkpoint_code_path():
    pipe = StableDiffusionPipeline.from_pretrained(EMBEDDED_MODEL_DIR, local_files_only=True)
    assert pipe.vae.config.sample_size >= 32
    # cross-attention at 16x16 or finer: the first cross-attention level of a 32x32 latent
    latent = pipe.unet.config.sample_size
    first_cross = pipe.unet.config.down_block_types.index("CrossAttnDownBlock2D")
    assert latent // 2**first_cross >= 16
    assert pipe.tokenizer.model_max_length == 77


def test_same_seed_same_image(pipe):
    def run(seed):
        return pipe(["a photo of a red ball"], num_inference_steps=10, guidance_scale=3.0, output_type="np",
                    generator=torch.Generator().manual_seed(seed)).images[0]

    first, again, other = run(0), run(0), run(1)
    assert first.shape == (32, 32, 3)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.slow
def test_draws_named_classes_and_not_others(pipe):
    prompts = [f"a photo of a {name}" for name in ("ball", "leaf", "box", "hat", "star", "ring")] * 3
    result = score_presence(pipe, prompts, steps=20, seed=99, batch_size=18, progress=False)
    # the benchmark measures the full figure over 240 images; here a quick, looser check
    assert result["named_present"] >= 0.8
    assert result["unnamed_present"] <= 0.15
    # it draws parts: a box's dark frame, a star's dark points (the model before parts: 0.11 / 0.18)
    assert min(result["dark_part_share"].values()) >= 0.3
