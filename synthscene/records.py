"""The one internal data object: a labelled sample and its instances.

Like supervision's ``Detections``: parallel arrays, absolute pixel ``xyxy`` boxes,
integer ``class_id`` (0-based into the dataset's class list), optional boolean masks
(box-only labels are valid) and a ``data`` dict of further per-instance arrays (the
scores of each check, crowd flags, source annotation ids). Formats convert to xywh /
1-based ids / RLE only at the edges (``synthscene.formats``); the stored JSON form is
``synthscene.store``'s.
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
        class_id: int64 [N], 0-based index into the dataset's classes.
        score: float32 [N], 1.0 for ground truth.
        masks: bool [N, H, W], or None for box-only instances.
        data: name -> array [N, ...] of further per-instance values.
    """

    xyxy: np.ndarray
    class_id: np.ndarray
    score: np.ndarray
    masks: np.ndarray | None = None
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.class_id)
        problems = []
        if self.xyxy.shape != (n, 4):
            problems.append(f"xyxy {self.xyxy.shape}")
        if len(self.score) != n:
            problems.append(f"score {self.score.shape}")
        if self.masks is not None and (self.masks.ndim != 3 or len(self.masks) != n):
            problems.append(f"masks {self.masks.shape}")
        problems += [f"data[{k!r}] {np.shape(v)}" for k, v in self.data.items() if len(v) != n]
        if problems:
            raise ValueError(f"Instances fields disagree with class_id {self.class_id.shape}: {', '.join(problems)}")

    def __len__(self) -> int:
        return len(self.class_id)

    def __getitem__(self, index) -> Instances:
        """Filter every field at once (bool mask, int array or slice)."""
        return Instances(self.xyxy[index], self.class_id[index], self.score[index],
                         None if self.masks is None else self.masks[index],
                         {k: v[index] for k, v in self.data.items()})

    @property
    def has_masks(self) -> bool:
        return self.masks is not None

    @property
    def area(self) -> np.ndarray:
        """int64 [N]: mask pixel counts, or box areas for box-only instances."""
        if self.masks is not None:
            return self.masks.reshape(len(self), -1).sum(axis=1).astype(np.int64) if len(self) else np.zeros(0, np.int64)
        sides = np.clip(self.xyxy[:, 2:] - self.xyxy[:, :2], 0, None)
        return np.round(sides[:, 0] * sides[:, 1]).astype(np.int64)

    @classmethod
    def empty(cls, height: int | None = None, width: int | None = None) -> Instances:
        """No instances; with a size, an empty mask stack of that size (a labeller that
        makes masks), without one, box-only."""
        masks = None if height is None else np.zeros((0, height, width), bool)
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), np.zeros((0,), np.float32), masks)

    @classmethod
    def from_masks(cls, masks: np.ndarray, class_id, score=None, data: dict | None = None) -> Instances:
        """Build instances from masks; boxes are the masks' tight boxes."""
        masks = np.asarray(masks, bool)
        class_id = np.asarray(class_id, np.int64)
        score = np.ones(len(class_id), np.float32) if score is None else np.asarray(score, np.float32)
        return cls(masks_to_xyxy(masks), class_id, score, masks, dict(data or {}))

    @classmethod
    def from_boxes(cls, xyxy, class_id, score=None, data: dict | None = None) -> Instances:
        """Box-only instances."""
        class_id = np.asarray(class_id, np.int64)
        score = np.ones(len(class_id), np.float32) if score is None else np.asarray(score, np.float32)
        return cls(np.asarray(xyxy, np.float32).reshape(-1, 4), class_id, score, None, dict(data or {}))


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

    Attributes:
        index: the sample's number in its run (or the image's position in a source file).
        seed: the seed it was made with (0 for real data).
        caption: the text it was made from, or the source's caption.
        image: uint8 [H, W, 3] RGB.
        instances: its objects.
        semantic: uint8 [H, W], 0 background, 1..C the classes, 255 ignore; None when the
            labeller gives no per-pixel classes (box-only methods).
        class_ids: 0-based classes the caption named (LVIS exports use them).
        dropped: what each label filter removed, e.g. {"small": 2}.
        extra: method-specific JSON-ready values (a mosaic's layout, a source image id).
        parts: uint8 [H, W] object parts, 0 none, else 1 + an index into the dataset's part
            list (the shapes world's ``PARTS``); None when there are no part labels.
    """

    index: int
    seed: int
    caption: str
    image: np.ndarray
    instances: Instances
    semantic: np.ndarray | None = None
    class_ids: tuple[int, ...] = ()
    dropped: dict[str, int] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    parts: np.ndarray | None = None

    @property
    def height(self) -> int:
        return self.image.shape[0]

    @property
    def width(self) -> int:
        return self.image.shape[1]
