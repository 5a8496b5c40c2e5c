"""Optional Segment Anything refinement of instance masks from their boxes.

MosaicFusion can refine each attention mask by prompting SAM with the mask's box. This
uses transformers' ``SamModel`` (no extra dependency): pass a hub id such as
``facebook/sam-vit-base`` (needs the hub or its cache) or a folder written by
``save_pretrained``. Weights load from safetensors only.
"""

from __future__ import annotations

import numpy as np
import torch

from synthscene.records import masks_to_xyxy


class SamRefiner:
    """Replace masks by SAM's mask for their tight box."""

    def __init__(self, model: str, device: str | torch.device = "cpu"):
        from transformers import SamModel, SamProcessor

        try:
            self.model = SamModel.from_pretrained(model, use_safetensors=True).to(device).eval()
            self.processor = SamProcessor.from_pretrained(model)
        except OSError as err:
            raise FileNotFoundError(f"cannot load a SAM model from {model!r} (a local save_pretrained folder or "
                                    f"a hub id with safetensors weights): {err}") from None
        self.device = device

    @torch.no_grad()
    def __call__(self, image: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """image uint8 [H, W, 3]; masks bool [N, H, W] -> bool [N, H, W]."""
        if len(masks) == 0:
            return masks
        boxes = masks_to_xyxy(masks).astype(np.float64)
        boxes[:, 2:] -= 1  # SAM boxes are inclusive pixel coordinates
        inputs = self.processor(image, input_boxes=[boxes.tolist()], return_tensors="pt").to(self.device)
        outputs = self.model(**inputs, multimask_output=False)
        refined = self.processor.image_processor.post_process_masks(
            outputs.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu())[0]
        return refined[:, 0].numpy().astype(bool)
