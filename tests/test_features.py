"""Denoiser feature capture: every block's output, grouped by resolution, hooks removed,
the denoiser's output unchanged."""

import pytest
import torch

from synthscene.capture.features import capture_features, denoiser_features, feature_layout, group_by_resolution
from synthscene.models.adapters import feature_blocks
from tests.tiny_models import tiny_pipeline


@pytest.mark.parametrize("layout", ["sd1", "sd2"])
def test_features_of_every_block_grouped_by_resolution(layout):
    pipe = tiny_pipeline(layout)
    unet = pipe.unet
    blocks = feature_blocks(unet)
    assert [n for n, _ in blocks] == ["down_blocks.0", "down_blocks.1", "down_blocks.2", "down_blocks.3",
                                      "mid_block", "up_blocks.0", "up_blocks.1", "up_blocks.2", "up_blocks.3"]
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    states = torch.randn(2, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = unet(torch.cat([latents, latents]), 10, encoder_hidden_states=torch.cat([states * 0, states])).sample
        with capture_features(unet) as outputs:
            hooked = unet(torch.cat([latents, latents]), 10, encoder_hidden_states=torch.cat([states * 0, states])).sample
    assert torch.equal(plain, hooked)
    assert len(outputs) == len(blocks)
    assert all(not b._forward_hooks for _, b in blocks)  # removed on exit

    grouped = group_by_resolution(outputs, guided=True)
    assert list(grouped) == [(16, 16), (8, 8), (4, 4), (2, 2)]  # finest first
    for hw, feature in grouped.items():
        same = [o for o in outputs if tuple(o.shape[-2:]) == hw]
        assert feature.shape == (2, 2 * sum(o.shape[1] for o in same), *hw)
        # conditional half first, then the unconditional half, per block
        assert torch.equal(feature[:, : same[0].shape[1]], same[0][2:])
        assert torch.equal(feature[:, same[0].shape[1] : 2 * same[0].shape[1]], same[0][:2])


def test_denoiser_features_match_a_guided_call():
    pipe = tiny_pipeline("sd1")
    pipe.scheduler.set_timesteps(4)
    t = pipe.scheduler.timesteps[-1]
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    cond, uncond = pipe.encode_prompt(["a ball"], "cpu", 1, True)
    features = denoiser_features(pipe, latents, t, cond, uncond)
    unguided = denoiser_features(pipe, latents, t, cond)
    assert [c for _, _, c in feature_layout(features)] == [2 * c for _, _, c in feature_layout(unguided)]
    with torch.no_grad(), capture_features(pipe.unet) as outputs:
        pipe.unet(torch.cat([latents, latents]), t, encoder_hidden_states=torch.cat([uncond, cond]))
    expected = group_by_resolution(outputs, guided=True)
    assert all(torch.allclose(features[hw], expected[hw], atol=1e-6) for hw in expected)
    with torch.no_grad(), capture_features(pipe.unet) as single:
        pipe.unet(latents, t, encoder_hidden_states=cond)
    # each block's conditional half is what an unguided call computes
    assert all(torch.allclose(g[1:], s, atol=1e-5) for g, s in zip(outputs, single))
    assert not all(torch.allclose(g[:1], s, atol=1e-3) for g, s in zip(outputs, single))


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="no feature table for denoiser Linear"):
        feature_blocks(torch.nn.Linear(2, 2))
