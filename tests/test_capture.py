import numpy as np
import pytest
import torch

from synthscene.capture import AttentionStore, CaptureConfig, attention_probabilities, capture_attention
from tests.tiny_models import tiny_pipeline

PROMPTS = ["a red ball", "two green leaves"]


def _run(pipe, guidance, steps=3):
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPTS, num_inference_steps=steps, guidance_scale=guidance, height=64, width=64,
                generator=[torch.Generator().manual_seed(i) for i in range(len(PROMPTS))], output_type="np").images


@pytest.fixture(scope="module", params=["sd1", "sd2", "sdxl"])
def pipe(request):
    return tiny_pipeline(request.param)


@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_capture_keeps_images_identical_and_restores(pipe, guidance):
    plain = _run(pipe, guidance)
    before = dict(pipe.unet.attn_processors)
    store = AttentionStore(CaptureConfig(cross_resolutions=(), self_resolution=8), num_steps=3,
                           guidance=guidance > 1)
    with capture_attention(pipe.unet, store):
        captured = _run(pipe, guidance)
    assert np.array_equal(plain, captured)
    after = pipe.unet.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    assert not any(m._forward_hooks for m in pipe.unet.modules()) and not pipe.unet._forward_pre_hooks

    maps = store.cross_maps()
    assert maps, "no cross-attention captured"
    for (h, w), m in maps.items():
        assert m.shape == (len(PROMPTS), 77, h, w) and m.dtype == torch.float32
        assert torch.allclose(m.sum(dim=1), torch.ones(len(PROMPTS), h, w), atol=1e-4)  # softmax over tokens
    self_map = store.self_map()
    assert self_map.shape == (len(PROMPTS), 64, 64)
    assert store.step == 2


def test_step_window_and_resolution_filter():
    pipe = tiny_pipeline("sd1")
    store = AttentionStore(CaptureConfig(cross_resolutions=(8,), step_window=(0.5, 1.0)), num_steps=4)
    with capture_attention(pipe.unet, store):
        _run(pipe, 4.0, steps=4)
    # sd1 layout at 64 px: latent 32, cross-attention at 32, 16, 8; only 8x8 kept, steps 2 and 3
    assert list(store.cross_maps()) == [(8, 8)]
    layers_at_8 = 1 + 2  # one down-block layer + the two attention layers of its up block
    assert store.cross_counts[(8, 8)] == 2 * layers_at_8
    assert store.self_map() is None


def test_processors_restored_after_an_error():
    pipe = tiny_pipeline("sd1")
    before = dict(pipe.unet.attn_processors)
    store = AttentionStore(CaptureConfig())
    with pytest.raises(RuntimeError, match="boom"), capture_attention(pipe.unet, store):
        raise RuntimeError("boom")
    assert all(pipe.unet.attn_processors[k] is v for k, v in before.items())


def test_attention_probabilities_match_sdpa_weights():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 6, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    probs = attention_probabilities(q, k, heads=2, scale=0.5)
    qh, kh, vh = (t.reshape(2, -1, 2, 4).transpose(1, 2) for t in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, scale=0.5)
    per_head = torch.softmax(qh @ kh.transpose(-1, -2) * 0.5, -1)
    assert torch.allclose(per_head @ vh, out, atol=1e-5)
    assert torch.allclose(per_head.mean(1), probs)


@pytest.mark.parametrize("side", [0, 64])
def test_self_resolution_bounds(side):
    with pytest.raises(ValueError, match="self_resolution"):
        CaptureConfig(self_resolution=side)
