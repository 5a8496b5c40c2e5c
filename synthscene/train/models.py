"""Downstream models from torchvision, randomly initialised unless the user gives weights.

Detection: Faster R-CNN / Mask R-CNN with a ResNet-50 FPN v2 or a MobileNetV3-Large FPN
backbone (the MobileNet one set up for small objects on a CPU, see
``_small_object_mobile_parts``). Semantic: LRASPP or DeepLabV3 on MobileNetV3-Large, DeepLabV3 on ResNet-50.
Without pre-trained weights torchvision uses plain BatchNorm (frozen BatchNorm is for
pre-trained backbones). ``min_size`` / ``max_size``: the detectors' resize (small here:
shapes-world images are 32 px).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn
from torchvision.models import segmentation
from torchvision.models.detection import (
    FasterRCNN,
    MaskRCNN,
    fasterrcnn_resnet50_fpn_v2,
    maskrcnn_resnet50_fpn_v2,
)
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone
from torchvision.ops import MultiScaleRoIAlign

DETECTORS = ("maskrcnn_resnet50_fpn_v2", "maskrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn_v2",
             "fasterrcnn_mobilenet_v3_large_fpn")
SEGMENTERS = ("lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large", "deeplabv3_resnet50")


def build_model(name: str, num_classes: int, min_size: int = 128, max_size: int = 256) -> nn.Module:
    """``num_classes`` includes background."""
    size = {"min_size": min_size, "max_size": max_size}
    if name == "maskrcnn_resnet50_fpn_v2":
        return maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=num_classes, **size)
    if name == "fasterrcnn_resnet50_fpn_v2":
        return fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=num_classes, **size)
    if name in ("maskrcnn_mobilenet_v3_large_fpn", "fasterrcnn_mobilenet_v3_large_fpn"):
        detector = MaskRCNN if name.startswith("maskrcnn") else FasterRCNN
        return detector(**_small_object_mobile_parts(detector is MaskRCNN), num_classes=num_classes, **size)
    if name in SEGMENTERS:
        return getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=num_classes,
                                           **({} if name.startswith("lraspp") else {"aux_loss": False}))
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(DETECTORS + SEGMENTERS)}")


def _small_object_mobile_parts(with_masks: bool) -> dict:
    """MobileNetV3-Large FPN parts for small objects, trained from scratch on a CPU.

    torchvision's mobile detector returns strides 32 only (its two returned stages are both
    C5-sized), too coarse for 8-16 px objects: trained like this it scored box AP 0.0 on the
    shapes world. Here the FPN reads strides 8, 16 and 32 (+ a max-pooled level for the RPN),
    one anchor size per level. RoIAlign uses one sample per bin (its CPU backward was 43 % of a
    training step with two) and 64 RoIs per image: the images hold a few objects each.
    """
    backbone = mobilenet_backbone(backbone_name="mobilenet_v3_large", weights=None, fpn=True,
                                  norm_layer=nn.BatchNorm2d, trainable_layers=6, returned_layers=[2, 3, 5])
    levels = ["0", "1", "2"]  # the max-pooled level feeds the RPN only, as in torchvision
    parts = {
        "backbone": backbone,
        "rpn_anchor_generator": AnchorGenerator(((16,), (32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 4),
        "rpn_pre_nms_top_n_train": 300, "rpn_post_nms_top_n_train": 300,
        "rpn_pre_nms_top_n_test": 300, "rpn_post_nms_top_n_test": 300,
        "box_batch_size_per_image": 64,
        "box_roi_pool": MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=1),
    }
    if with_masks:
        parts["mask_roi_pool"] = MultiScaleRoIAlign(levels, output_size=14, sampling_ratio=1)
    return parts


def load_weights(model: nn.Module, path: str | Path, name: str = "this model") -> None:
    """A user's local weights: safetensors, or a torch file read with ``weights_only=True``
    (a full checkpoint's ``model`` entry is used); one clear error when they do not fit."""
    from synthscene.models.weights import load_into, read_state_dict

    state = read_state_dict(path)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    load_into(model, state, path, name)
