import pytest

from synthscene.world.build import write_world


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """A 32 px shapes world with 60 train and 20 val images."""
    return write_world(tmp_path_factory.mktemp("world") / "w", n_train=60, n_val=20, seed=3, progress=False)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A 16 px world for the tiny generator architecture."""
    return write_world(tmp_path_factory.mktemp("world16") / "w", n_train=48, n_val=4, seed=5, size=16, progress=False)


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    """A randomly initialised tiny Stable Diffusion pipeline saved with save_pretrained."""
    import torch
    from diffusers import StableDiffusionPipeline

    from synthscene.models.configs import ARCHITECTURES, build_components, sampling_scheduler

    torch.manual_seed(0)
    parts = build_components(ARCHITECTURES["tiny"])
    pipe = StableDiffusionPipeline(
        vae=parts["vae"], text_encoder=parts["text_encoder"], tokenizer=parts["tokenizer"], unet=parts["unet"],
        scheduler=sampling_scheduler(parts["scheduler"]), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    path = tmp_path_factory.mktemp("tiny_pipe") / "pipe"
    pipe.save_pretrained(path)
    return path
