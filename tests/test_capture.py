import numpy as np
import pytest
import torch

from synthscene.capture import AttentionStore, CaptureConfig, attention_probabilities, capture_attention
from synthscene.models.families import family_of
from tests.tiny_models import tiny_pipeline

PROMPTS = ["a red ball", "two green leaves"]


def _size(pipe):
    """64 px: UNets' 8x8 level; transformers' 2x2 patches of the 16x16 latents give an 8x8 grid at 32 px."""
    return 32 if family_of(pipe).joint_attention else 64


def _run(pipe, guidance, steps=3):
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPTS, num_inference_steps=steps, guidance_scale=guidance, height=_size(pipe), width=_size(pipe),
                generator=[torch.Generator().manual_seed(i) for i in range(len(PROMPTS))], output_type="np").images


@pytest.fixture(scope="module", params=["sd1", "sd2", "sdxl", "sd3", "flux"])
def pipe(request):
    return tiny_pipeline(request.param)


@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_capture_keeps_images_identical_and_restores(pipe, guidance):
    family = family_of(pipe)
    denoiser = family.denoiser
    plain = _run(pipe, guidance)
    before = dict(denoiser.attn_processors)
    store = AttentionStore(CaptureConfig(cross_resolutions=(), self_resolution=8), num_steps=3,
                           guidance=family.guides(guidance))
    with capture_attention(denoiser, store):
        captured = _run(pipe, guidance)
    assert np.array_equal(plain, captured)
    after = denoiser.attn_processors
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)
    assert not any(m._forward_hooks for m in denoiser.modules()) and not denoiser._forward_pre_hooks

    maps = store.cross_maps()
    assert maps, "no cross-attention captured"
    for (h, w), m in maps.items():
        assert m.shape == (len(PROMPTS), family.text_layout().length, h, w) and m.dtype == torch.float32
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


@pytest.mark.parametrize("layout", ["sd3", "flux"])
def test_joint_attention_maps_are_the_text_block_of_the_layers_own_softmax(layout, monkeypatch):
    """Independent of how the processor rebuilds them: record q and k where the layer hands them
    to SDPA (after its q / k norms and, in FLUX, RoPE), take each image query's probabilities
    over the text keys, renormalised per head, and compare with the store."""
    pipe = tiny_pipeline(layout)
    family = family_of(pipe)
    text, image = family.text_layout().length, 64  # an 8x8 token grid at 32 px
    recorded = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording(query, key, *args, **kwargs):
        if query.shape[-2] == text + image:  # a joint layer; CLIP's own calls have 77 tokens
            recorded.append((query.detach().float(), key.detach().float()))
        return sdpa(query, key, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    store = AttentionStore(CaptureConfig(cross_resolutions=()), num_steps=1, guidance=family.guides(4.0))
    with capture_attention(family.denoiser, store):
        pipe(PROMPTS[:1], num_inference_steps=1, guidance_scale=4.0, height=32, width=32,
             generator=torch.Generator().manual_seed(0), output_type="np")
    assert recorded, "no joint attention reached SDPA"
    image_rows = slice(text, None) if layout == "flux" else slice(0, image)
    text_cols = slice(0, text) if layout == "flux" else slice(image, None)
    expected = []
    for query, key in recorded:
        query, key = query[-1:], key[-1:]  # the conditional half
        logits = query[:, :, image_rows] @ key[:, :, text_cols].transpose(-1, -2) * query.shape[-1] ** -0.5
        expected.append(torch.softmax(logits, dim=-1).mean(dim=1))
    expected = torch.stack(expected).mean(0)  # [1, N, T]
    captured = store.cross_maps()[(8, 8)]  # [1, T, 8, 8]
    assert torch.allclose(captured.flatten(2).transpose(1, 2), expected, atol=1e-5)
