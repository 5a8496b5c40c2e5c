"""The grounding head and its set losses: shapes, open classes, matching, learning."""

import pytest
import torch

from synthscene.grounding.head import GroundingHead, HeadConfig, box_evidence, predict_boxes
from synthscene.grounding.matching import LossWeights, match, set_loss

LEVELS = ((8, 8, 12), (4, 4, 24))


def _features(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, h, w, generator=g) for h, w, c in LEVELS]


def _head(**kw):
    torch.manual_seed(0)
    return GroundingHead(HeadConfig(levels=LEVELS, text_dim=16, width=32, queries=8, layers=2, heads=2, groups=4, **kw))


def test_outputs_per_layer_and_classes_only_where_given():
    head = _head()
    classes = torch.randn(3, 2, 16)
    mask = torch.tensor([[True, False], [True, True], [False, False]])
    out = head(_features(3), classes, mask)
    assert out["logits"].shape == (3, 3, 8, 2) and out["boxes"].shape == (3, 3, 8, 4)  # proposals + 2 layers
    assert torch.isinf(out["logits"][:, 0, :, 1]).all() and torch.isfinite(out["logits"][:, 1]).all()
    assert torch.isinf(out["logits"][:, 2]).all()  # an image given no class scores nothing, without NaNs
    assert not torch.isnan(out["boxes"]).any() and ((out["boxes"] > 0) & (out["boxes"] < 1)).all()
    # a new class is just another embedding: the same image scored against other names
    other = head(_features(3), torch.randn(3, 2, 16), mask)
    assert not torch.allclose(other["logits"][-1, 1], out["logits"][-1, 1])
    predictions = predict_boxes(out, mask, (32, 64), score_threshold=0.0)
    assert len(predictions) == 3 and predictions[2]["boxes"].shape == (0, 4)
    assert (predictions[1]["boxes"][:, 2] <= 64).all() and (predictions[1]["boxes"][:, 3] <= 32).all()


def test_an_image_of_one_class_is_scored_by_objectness_alone():
    """Classes compete only with the image's others: with one, its name changes nothing
    (a novel name needs no learnt embedding); with two, they split one objectness."""
    head = _head()
    queries = torch.randn(2, 8, 32)
    mask = torch.tensor([[True, False], [True, True]])
    first, second = (head.class_logits(queries, torch.randn(2, 2, 32), mask) for _ in range(2))
    assert torch.allclose(first[0, :, 0], second[0, :, 0]) and not torch.allclose(first[1], second[1])
    text = torch.randn(2, 2, 32)
    both = head.class_logits(queries, text, mask)
    alone = head.class_logits(queries, text, torch.tensor([[True, False], [True, False]]))
    assert torch.allclose(both[1].mean(-1), alone[1, :, 0], atol=1e-5)
    assert not torch.allclose(both[1, :, 0], both[1, :, 1])


def test_features_of_another_layout_are_refused():
    head = _head()
    with pytest.raises(ValueError, match="another model or feature layout"):
        head([torch.randn(1, 12, 8, 8)], torch.randn(1, 1, 16), torch.ones(1, 1, dtype=torch.bool))


def test_matching_pairs_each_target_with_its_nearest_query():
    boxes = torch.tensor([[[0.2, 0.2, 0.1, 0.1], [0.8, 0.8, 0.2, 0.2], [0.5, 0.5, 0.4, 0.4]]])
    logits = torch.zeros(1, 3, 2)
    targets = [{"classes": torch.tensor([1, 0]), "boxes": torch.tensor([[0.79, 0.8, 0.2, 0.2], [0.5, 0.5, 0.4, 0.41]])}]
    (queries, columns), = match(logits, boxes, targets, LossWeights())
    assert dict(zip(columns.tolist(), queries.tolist())) == {0: 1, 1: 2}
    empty = match(logits, boxes, [{"classes": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}],
                  LossWeights())
    assert len(empty[0][0]) == 0


def test_perfect_boxes_cost_nothing_but_focal():
    boxes = torch.tensor([[[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.2]]])
    output = {"logits": torch.tensor([[[[3.0, -3.0], [-3.0, 3.0]]]]), "boxes": boxes[None]}
    targets = [{"classes": torch.tensor([0, 1]), "boxes": boxes[0]}]
    losses = set_loss(output, torch.ones(1, 2, dtype=torch.bool), targets, LossWeights())
    assert losses["l1"] < 1e-6 and losses["giou"] < 1e-4 and losses["focal"] < 1e-3
    wrong = set_loss({**output, "logits": -output["logits"]}, torch.ones(1, 2, dtype=torch.bool), targets,
                     LossWeights())
    assert wrong["focal"] > 1.0


def test_a_named_class_without_pseudo_box_is_neither_positive_nor_negative():
    # image of two named classes; the pseudo-labeller boxed class 0 only: class 1's logits
    # must get no gradient (its object is there, unboxed), class 0's still do
    boxes = torch.tensor([[[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.2]]])
    target = {"classes": torch.tensor([0]), "boxes": boxes[0, :1]}
    mask = torch.ones(1, 2, dtype=torch.bool)
    gradients = []
    for unlabelled in ([], [1]):
        logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
        wanted = {**target, "unlabelled": torch.tensor(unlabelled, dtype=torch.long)}
        set_loss({"logits": logits, "boxes": boxes[None]}, mask, [wanted], LossWeights())["loss"].backward()
        gradients.append(logits.grad[0, 0])
    background, ignored = gradients
    assert (background[:, 1] > 0).all()  # as background: class 1 pushed down on both queries
    assert (ignored[:, 1] == 0).all() and torch.equal(ignored[:, 0], background[:, 0])


def test_box_evidence_is_the_mean_inside_each_box():
    evidence = torch.zeros(1, 2, 8, 8)
    evidence[0, 0, :, :4] = 1.0  # class 0 on the left half, class 1 on the right
    evidence[0, 1, :, 4:] = 1.0
    boxes = torch.tensor([[[0.25, 0.5, 0.5, 1.0], [0.75, 0.5, 0.5, 1.0], [0.5, 0.5, 1.0, 1.0]]])
    got = box_evidence(evidence, boxes)
    assert got.shape == (1, 3, 2)
    assert torch.allclose(got[0], torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]), atol=1e-6)


def test_class_evidence_moves_the_named_classes_logits():
    head = _head(class_evidence=True)
    features, classes, mask = _features(2), torch.randn(2, 2, 16), torch.ones(2, 2, dtype=torch.bool)
    favours_first = torch.stack([torch.full((8, 8), 5.0), torch.full((8, 8), -5.0)])[None].expand(2, -1, -1, -1)
    with torch.no_grad():
        first = head(features, classes, mask, favours_first)["logits"]
        second = head(features, classes, mask, -favours_first)["logits"]
    assert ((first[..., 0] - first[..., 1]) > 5).all() and ((second[..., 1] - second[..., 0]) > 5).all()
    with pytest.raises(ValueError, match="built with class evidence"):
        head(features, classes, mask)
    with pytest.raises(ValueError, match="built without class evidence"):
        _head()(features, classes, mask, favours_first)


def test_proposals_start_some_strides_of_their_level_wide():
    # at init the proposal deltas are zero: a selected proposal is its token's anchor box
    widths = {}
    for strides in (None, 3.0):
        with torch.no_grad():
            boxes = _head(proposal_strides=strides)(_features(2), torch.randn(2, 1, 16),
                                                     torch.ones(2, 1, dtype=torch.bool))["boxes"][0]
        widths[strides] = {round(v, 4) for v in boxes[..., 2:].flatten().tolist()}
    assert widths[None] <= {0.05, 0.1} and widths[3.0] <= {3 / 8, 3 / 4} and len(widths[3.0]) >= 1


def test_head_learns_where_objects_are():
    """Features that carry a bright square: after training, the head boxes it."""
    torch.manual_seed(0)
    head = _head()
    # at lr 1e-3 the head was still finding the squares at step 500, and whether it passed
    # depended on the thread count (float sums in another order); at 3e-3 it has found them
    # (mean IoU 0.61 / 0.62 with 1 / 2 threads)
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3)
    classes, mask = torch.randn(1, 1, 16).expand(8, 1, 16), torch.ones(8, 1, dtype=torch.bool)

    def batch(seed):
        g = torch.Generator().manual_seed(seed)
        corners = torch.randint(0, 5, (8, 2), generator=g)
        features = [torch.zeros(8, c, h, w) for h, w, c in LEVELS]
        targets = []
        for b, (y, x) in enumerate(corners.tolist()):
            features[0][b, :, y : y + 4, x : x + 4] = 1.0
            features[1][b, :, y // 2 : y // 2 + 2, x // 2 : x // 2 + 2] = 1.0
            targets.append({"classes": torch.tensor([0]), "boxes": torch.tensor([[(x + 2) / 8, (y + 2) / 8, 0.5, 0.5]])})
        return features, targets

    first = None
    for step in range(500):
        features, targets = batch(step)
        losses = set_loss(head(features, classes, mask), mask, targets, LossWeights())
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
        first = first if first is not None else losses["loss"].item()
    from torchvision.ops import box_convert, box_iou

    ious = []
    for seed in range(10_000, 10_004):  # 32 images not seen in training
        features, targets = batch(seed)
        with torch.no_grad():
            top = predict_boxes(head(features, classes, mask), mask, (8, 8), score_threshold=0.0)
        ious += [box_iou(p["boxes"][:1], box_convert(t["boxes"], "cxcywh", "xyxy") * 8)[0, 0] for p, t in zip(top, targets)]
    assert losses["loss"].item() < 0.5 * first
    assert torch.stack(ious).mean() > 0.4  # untrained: its 0.05-wide proposals reach IoU 0.01
