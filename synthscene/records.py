"""The one internal data object: a labelled sample and its instances.

Like supervision's ``Detections``: parallel arrays, absolute pixel ``xyxy`` boxes,
boolean masks, integer ``class_id`` (0-based into the dataset's class list).
Formats convert to xywh / 1-based ids / RLE only at the edges (``synthscene.formats``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Instances:
    """N object instances of one image.

    Attributes:
        xyxy: float32 [N, 4], absolute pixels, x1 y1 inclusive, x2 y2 exclusive
            (the box of a one-pixel mask at (x, y) is (x, y, x+1, y+1)).
        masks: bool [N, H, W].
        class_id: int64 [N], 0-based index into the dataset's classes.
        score: float32 [N], 1.0 for ground truth.
    """

    xyxy: np.ndarray
    masks: np.ndarray
    class_id: np.ndarray
    score: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.class_id)
        if self.xyxy.shape != (n, 4) or self.masks.ndim != 3 or len(self.masks) != n or len(self.score) != n:
            raise ValueError(
                f"Instances fields disagree: xyxy {self.xyxy.shape}, masks {self.masks.shape}, "
                f"class_id {self.class_id.shape}, score {self.score.shape}"
            )

    def __len__(self) -> int:
        return len(self.class_id)

    def __getitem__(self, index) -> Instances:
        """Filter every field at once (bool mask, int array or slice)."""
        return Instances(self.xyxy[index], self.masks[index], self.class_id[index], self.score[index])

    @property
    def area(self) -> np.ndarray:
        """int64 [N]: mask pixel counts."""
        return self.masks.reshape(len(self), -1).sum(axis=1).astype(np.int64)

    @classmethod
    def empty(cls, height: int, width: int) -> Instances:
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            masks=np.zeros((0, height, width), bool),
            class_id=np.zeros((0,), np.int64),
            score=np.zeros((0,), np.float32),
        )

    @classmethod
    def from_masks(cls, masks: np.ndarray, class_id, score=None) -> Instances:
        """Build instances from masks; boxes are the masks' tight boxes."""
        masks = np.asarray(masks, bool)
        class_id = np.asarray(class_id, np.int64)
        score = np.ones(len(class_id), np.float32) if score is None else np.asarray(score, np.float32)
        return cls(masks_to_xyxy(masks), masks, class_id, score)


def masks_to_xyxy(masks: np.ndarray) -> np.ndarray:
    """Tight boxes of boolean masks.

    Args:
        masks: bool [N, H, W].
    Returns:
        float32 [N, 4] xyxy with exclusive x2, y2; an empty mask gives (0, 0, 0, 0).
    """
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, mask in enumerate(masks):
        ys, xs = np.nonzero(mask)
        if len(xs):
            boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return boxes


@dataclass
class Sample:
    """One image with its labels and provenance.

    ``semantic`` is uint8 [H, W]: 0 background, 1..C the classes, 255 ignore.
    """

    image: np.ndarray  # uint8 [H, W, 3] RGB
    instances: Instances
    semantic: np.ndarray
    caption: str
    seed: int
    meta: dict = field(default_factory=dict)

    @property
    def height(self) -> int:
        return self.image.shape[0]

    @property
    def width(self) -> int:
        return self.image.shape[1]
