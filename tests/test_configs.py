import pytest
import torch

from synthscene.models.configs import ARCHITECTURES, build_components, sampling_scheduler, training_scheduler


@pytest.mark.parametrize("steps", [10, 25, 50, 100])
def test_first_sampling_step_does_not_amplify_errors(steps):
    # A DDIM step from t to t' turns an error d in the predicted noise into an error of about
    # sqrt(alpha_bar(t') / alpha_bar(t)) * d in the sample. With cosine betas alpha_bar(999) ~ 0,
    # so a first step at t = 999 ("trailing" spacing) blew samples up into saturated noise.
    scheduler = sampling_scheduler(training_scheduler())
    scheduler.set_timesteps(steps)
    t0, t1 = (int(t) for t in scheduler.timesteps[:2])
    amplification = (scheduler.alphas_cumprod[t1] / scheduler.alphas_cumprod[t0]).sqrt()
    assert amplification < 5
    assert scheduler.config.clip_sample is False


def test_tiny_architecture_shapes():
    torch.manual_seed(0)
    parts = build_components(ARCHITECTURES["tiny"])
    arch = ARCHITECTURES["tiny"]
    latents = torch.randn(2, arch.latent_channels, arch.resolution, arch.resolution)
    states = parts["text_encoder"](parts["tokenizer"](["a ball", "a leaf"], padding="max_length",
                                                      return_tensors="pt").input_ids)[0]
    assert states.shape == (2, 77, arch.cross_attention_dim)
    assert parts["unet"](latents, torch.tensor([10, 500]), states).sample.shape == latents.shape
