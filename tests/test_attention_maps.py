import numpy as np
import pytest
import torch

from synthscene.label.attention_maps import (
    IGNORE_INDEX,
    class_maps,
    min_max_per_class,
    refine_with_self_attention,
    semantic_from_scores,
    upsample_scores,
)


def test_class_maps_average_tokens_and_resolutions():
    cross = {(4, 4): torch.zeros(5, 4, 4), (2, 2): torch.zeros(5, 2, 2)}
    cross[(4, 4)][1, :2, :2] = 1.0  # class 0 (tokens 1 and 2): top-left at 4x4
    cross[(4, 4)][2, :2, :2] = 0.5
    cross[(2, 2)][1, 0, 0] = 1.0
    maps = class_maps(cross, [[1, 2], []], size=(4, 4))
    assert maps.shape == (2, 4, 4)
    assert torch.all(maps[1] == 0)  # absent class
    assert maps[0, 0, 0] > maps[0, 3, 3]


def test_class_maps_need_captured_maps():
    with pytest.raises(ValueError, match="no cross-attention"):
        class_maps({}, [[1]], (4, 4))


def test_self_attention_power_spreads_within_groups():
    # two groups of pixels that only attend within themselves
    n = 4
    attn = torch.zeros(n, n)
    attn[:2, :2] = 0.5
    attn[2:, 2:] = 0.5
    maps = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # one class, seed pixel 0
    refined = refine_with_self_attention(maps, attn, power=4)
    assert torch.allclose(refined.flatten(), torch.tensor([0.5, 0.5, 0.0, 0.0]))
    assert torch.equal(refine_with_self_attention(maps, attn, power=0), maps)
    with pytest.raises(ValueError, match="does not match"):
        refine_with_self_attention(maps, torch.eye(9))


def test_min_max_per_class_forces_every_class_to_one():
    maps = torch.stack([torch.full((2, 2), 0.01), torch.arange(4.0).reshape(2, 2) * 1e-3])
    maps[0, 0, 0] = 0.02
    normalised = min_max_per_class(maps)
    assert torch.isclose(normalised[0].max(), torch.tensor(1.0)) and torch.isclose(normalised[1].max(), torch.tensor(1.0))
    assert torch.all(min_max_per_class(torch.ones(1, 3, 3)) == 0)  # flat map: no claim


def test_semantic_thresholds_and_ignore_band():
    scores = torch.tensor([[[0.9, 0.55], [0.1, 0.2]], [[0.2, 0.1], [0.7, 0.3]]])
    semantic = semantic_from_scores(scores)
    assert semantic.dtype == np.uint8
    assert semantic.tolist() == [[1, IGNORE_INDEX], [2, 0]]
    with pytest.raises(ValueError, match="background <= foreground"):
        semantic_from_scores(scores, foreground=0.4, background=0.5)


def test_upsample_scores_stays_in_unit_range():
    scores = torch.zeros(1, 4, 4)
    scores[0, 1:3, 1:3] = 1.0
    up = upsample_scores(scores, (16, 16))
    assert up.shape == (1, 16, 16) and up.min() >= 0 and up.max() <= 1  # bicubic overshoot clipped
