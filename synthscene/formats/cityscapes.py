"""The Cityscapes layout: read it into ``Sample``s, write ``Sample``s into it.

Layout of a root::

    leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png         RGB
    gtFine/{split}/{city}/{stem}_gtFine_labelIds.png          uint8, one label id per pixel
    gtFine/{split}/{city}/{stem}_gtFine_instanceIds.png       uint16: label id x 1000 + k on
                                                              an instance of a thing class,
                                                              else the pixel's label id
    labels.json        only for a label table other than Cityscapes' own (see below)

Cityscapes' own table has 34 label ids (0-33); 19 are evaluated, with train ids 0-18, the
others are ignored. As a ``Sample``: the classes are the train ids in order; semantic =
train id + 1 (0 only for a table's background label; 255 ignore); every thing instance
(id >= 1000) is an instance with its mask, and a thing class's pixels without an instance
id (Cityscapes' groups, e.g. a row of parked cars) are one crowd instance
(``data["iscrowd"]``). ``data["instance_id"]`` keeps the source's id, so writing what was
read gives the same files back. Instances of ignored classes (caravan, trailer) have no
class: they are counted in ``dropped["ignored_class"]``.

A run with its own classes is written with its own table (``labels.json``): label 0
background, 1..C the classes (all things), 255 ignore.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from synthscene.codecs import IGNORE_INDEX
from synthscene.io import write_json
from synthscene.records import Instances, Sample

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"
INSTANCE_SUFFIX = "_gtFine_instanceIds.png"
LABELS_FILE = "labels.json"
INSTANCE_FACTOR = 1000  # instance id = label id x 1000 + k
MAX_LABEL_ID = 65  # the largest label id whose instance ids fit a 16-bit PNG


@dataclass(frozen=True)
class Label:
    name: str
    id: int  # the value in labelIds PNGs
    train_id: int  # the class index; 255: ignored
    has_instances: bool


@dataclass(frozen=True)
class LabelTable:
    labels: tuple[Label, ...]
    background_id: int | None = None  # the label whose pixels are semantic 0, if any

    def __post_init__(self) -> None:
        ids = [label.id for label in self.labels]
        if len(set(ids)) != len(ids):
            raise ValueError("label ids repeat in the Cityscapes label table")
        trained = sorted(label.train_id for label in self.labels if label.train_id != IGNORE_INDEX
                         and label.id != self.background_id)
        if trained != list(range(len(trained))):
            raise ValueError(f"train ids must be 0..C-1 without gaps, got {trained}")
        if not any(label.train_id == IGNORE_INDEX and label.id != self.background_id for label in self.labels):
            raise ValueError("the label table needs an ignored label (train id 255) for unlabelled pixels")

    @property
    def class_names(self) -> list[str]:
        trained = [label for label in self.labels if self._is_class(label)]
        return [label.name for label in sorted(trained, key=lambda label: label.train_id)]

    def _is_class(self, label: Label) -> bool:
        return label.train_id != IGNORE_INDEX and label.id != self.background_id

    def semantic_lut(self) -> np.ndarray:
        """uint8 [256]: label id -> semantic value; ids not in the table map to 0 and are
        refused by ``known_ids``."""
        lut = np.zeros(256, np.uint8)
        for label in self.labels:
            lut[label.id] = (0 if label.id == self.background_id
                             else label.train_id + 1 if self._is_class(label) else IGNORE_INDEX)
        return lut

    def known_ids(self) -> np.ndarray:
        known = np.zeros(256, bool)
        known[[label.id for label in self.labels]] = True
        return known

    def label_of_class(self, class_index: int) -> Label:
        return next(label for label in self.labels if self._is_class(label) and label.train_id == class_index)

    def ignore_id(self) -> int:
        return next(label.id for label in self.labels
                    if label.train_id == IGNORE_INDEX and label.id != self.background_id)

    def to_json(self) -> dict:
        return {"background_id": self.background_id, "labels": [asdict(label) for label in self.labels]}

    @classmethod
    def from_json(cls, data: dict) -> LabelTable:
        return cls(tuple(Label(**label) for label in data["labels"]), data.get("background_id"))

    @classmethod
    def for_classes(cls, class_names: list[str]) -> LabelTable:
        """Cityscapes' own table for its 19 train classes; else 0 background, 1..C, 255 ignore."""
        if list(class_names) == CITYSCAPES.class_names:
            return CITYSCAPES
        if len(class_names) > MAX_LABEL_ID:
            raise ValueError(f"the Cityscapes layout holds at most {MAX_LABEL_ID} thing classes (instance ids "
                             f"are 16-bit), got {len(class_names)}")
        return cls((Label("background", 0, IGNORE_INDEX, False),
                    *(Label(name, k + 1, k, True) for k, name in enumerate(class_names)),
                    Label("ignore", IGNORE_INDEX, IGNORE_INDEX, False)), background_id=0)


def _cityscapes_table() -> LabelTable:
    # (name, id, train id, has instances), from the Cityscapes dataset's label definitions
    rows = [
        ("unlabeled", 0, 255, False), ("ego vehicle", 1, 255, False), ("rectification border", 2, 255, False),
        ("out of roi", 3, 255, False), ("static", 4, 255, False), ("dynamic", 5, 255, False),
        ("ground", 6, 255, False), ("road", 7, 0, False), ("sidewalk", 8, 1, False), ("parking", 9, 255, False),
        ("rail track", 10, 255, False), ("building", 11, 2, False), ("wall", 12, 3, False), ("fence", 13, 4, False),
        ("guard rail", 14, 255, False), ("bridge", 15, 255, False), ("tunnel", 16, 255, False),
        ("pole", 17, 5, False), ("polegroup", 18, 255, False), ("traffic light", 19, 6, False),
        ("traffic sign", 20, 7, False), ("vegetation", 21, 8, False), ("terrain", 22, 9, False),
        ("sky", 23, 10, False), ("person", 24, 11, True), ("rider", 25, 12, True), ("car", 26, 13, True),
        ("truck", 27, 14, True), ("bus", 28, 15, True), ("caravan", 29, 255, True), ("trailer", 30, 255, True),
        ("train", 31, 16, True), ("motorcycle", 32, 17, True), ("bicycle", 33, 18, True),
    ]
    return LabelTable(tuple(Label(*row) for row in rows))


CITYSCAPES = _cityscapes_table()


# ---- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CityscapesImage:
    city: str
    stem: str  # e.g. aachen_000000_000019
    image: Path
    label_ids: Path
    instance_ids: Path


class CityscapesSource:
    """One split of a Cityscapes-layout folder; ``sample(i)`` reads image ``i``."""

    def __init__(self, root: str | Path, split: str = "train"):
        self.root = Path(root)
        self.split = split
        images, labels = self.root / "leftImg8bit" / split, self.root / "gtFine" / split
        for folder in (images, labels):
            if not folder.is_dir():
                raise ValueError(f"{self.root} is not a Cityscapes layout: {folder.relative_to(self.root)}/ is missing")
        table_file = self.root / LABELS_FILE
        self.table = LabelTable.from_json(json.loads(table_file.read_text())) if table_file.is_file() else CITYSCAPES
        self.images = [self._files(path, labels) for path in sorted(images.glob(f"*/*{IMAGE_SUFFIX}"))]
        if not self.images:
            raise ValueError(f"{images} holds no */*{IMAGE_SUFFIX} images")

    @property
    def class_names(self) -> list[str]:
        return self.table.class_names

    def _files(self, image: Path, labels: Path) -> CityscapesImage:
        city, stem = image.parent.name, image.name[: -len(IMAGE_SUFFIX)]
        files = CityscapesImage(city, stem, image, labels / city / f"{stem}{LABEL_SUFFIX}",
                                labels / city / f"{stem}{INSTANCE_SUFFIX}")
        root = self.root.resolve()
        for path in (files.image, files.label_ids, files.instance_ids):
            if not path.is_file():
                raise ValueError(f"{image.relative_to(self.root)} has no {path.relative_to(self.root)}")
            if not path.resolve().is_relative_to(root):  # a link that leaves the dataset
                raise ValueError(f"{path.relative_to(self.root)} leads outside the dataset root {self.root}")
        return files

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self)):
            yield self.sample(index)

    def sample(self, index: int) -> Sample:
        files = self.images[index]
        try:
            image = np.asarray(Image.open(files.image).convert("RGB"))
        except (OSError, ValueError) as error:
            raise ValueError(f"{files.image.relative_to(self.root)} does not decode ({error})") from None
        label_ids, instance_ids = self._label_images(index)
        if image.shape[:2] != label_ids.shape:
            raise ValueError(f"{files.stem}: image {image.shape[1]}x{image.shape[0]} and labels "
                             f"{label_ids.shape[1]}x{label_ids.shape[0]} differ in size")
        instances, ignored = self._instances(label_ids, instance_ids, files)
        semantic = self.table.semantic_lut()[label_ids]
        return Sample(index, 0, "", image, instances, semantic,
                      tuple(sorted({int(c) for c in instances.class_id})),
                      {"ignored_class": ignored},
                      {"source": {"split": self.split, "city": files.city, "stem": files.stem,
                                  "image": str(files.image.relative_to(self.root))}})

    def instances(self, index: int) -> Instances:
        """Image ``index``'s instances, from its label files alone."""
        return self._instances(*self._label_images(index), self.images[index])[0]

    def _label_images(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 label ids, int64 instance ids) of image ``index``, checked."""
        files = self.images[index]
        name = files.label_ids.relative_to(self.root)
        try:
            label_ids = np.asarray(Image.open(files.label_ids))
        except (OSError, ValueError) as error:
            raise ValueError(f"{name} does not decode ({error})") from None
        instance_ids = cv2.imread(str(files.instance_ids), cv2.IMREAD_UNCHANGED)
        if label_ids.ndim != 2 or label_ids.dtype != np.uint8:
            raise ValueError(f"{name} is not a one-channel 8-bit label image")
        if instance_ids is None or instance_ids.ndim != 2:
            raise ValueError(f"{files.instance_ids.relative_to(self.root)} is not a one-channel instance image")
        if label_ids.shape != instance_ids.shape:
            raise ValueError(f"{files.stem}: labels {label_ids.shape[1]}x{label_ids.shape[0]} and instances "
                             f"{instance_ids.shape[1]}x{instance_ids.shape[0]} differ in size")
        unknown = np.unique(label_ids[~self.table.known_ids()[label_ids]])
        if len(unknown):
            raise ValueError(f"{name} holds label id {int(unknown[0])}, which its label table does not define")
        return label_ids, instance_ids.astype(np.int64)

    def _instances(self, label_ids: np.ndarray, instance_ids: np.ndarray, files) -> tuple[Instances, int]:
        """Instances in the order of their ids (crowds, whose id is the label id, first)."""
        things = {label.id: label for label in self.table.labels if label.has_instances}
        masks, classes, crowd, source_ids, ignored = [], [], [], [], 0
        for value in np.unique(instance_ids).tolist():
            where = instance_ids == value
            label_id = value // INSTANCE_FACTOR if value >= INSTANCE_FACTOR else value
            if value >= INSTANCE_FACTOR and label_id not in things:
                raise ValueError(f"{files.instance_ids.relative_to(self.root)}: instance id {value} is not "
                                 f"class x {INSTANCE_FACTOR} + k of a thing class")
            if value < INSTANCE_FACTOR and (label_id not in things or value == 0):
                continue  # stuff, or thing pixels outside any instance (written as 0)
            label = things[label_id]
            if label.train_id == IGNORE_INDEX:
                ignored += 1
                continue
            masks.append(where)
            classes.append(label.train_id)
            crowd.append(value < INSTANCE_FACTOR)
            source_ids.append(value)
        height, width = label_ids.shape
        if not masks:
            return Instances.empty(height, width), ignored
        return Instances.from_masks(np.stack(masks), classes, data={
            "iscrowd": np.array(crowd, bool), "instance_id": np.array(source_ids, np.int64)}), ignored


def from_cityscapes(root: str | Path, split: str = "train") -> Iterator[Sample]:
    """Every image of one split of a Cityscapes-layout folder as a ``Sample``."""
    yield from CityscapesSource(root, split)


# ---- writing ------------------------------------------------------------------------------


def write_cityscapes(samples: Iterable[Sample], class_names: list[str], out: Path, split: str = "train",
                     city: str = "synthscene") -> int:
    """Write ``samples`` as one split (one city) of a Cityscapes layout in ``out`` (an
    empty folder the caller made, normally ``io.atomic_output_dir``'s). Instances are painted
    in their order (a later one covers an earlier one where masks overlap); each keeps its
    ``data["instance_id"]`` when it has a valid one. Returns the number of images."""
    table = LabelTable.for_classes(class_names)
    if table is not CITYSCAPES and not (out / LABELS_FILE).is_file():
        write_json(out / LABELS_FILE, table.to_json(), indent=2)
    images, labels = out / "leftImg8bit" / split / city, out / "gtFine" / split / city
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    count = 0
    for sample in samples:
        source = sample.extra.get("source", {})
        stem = source.get("stem") if source.get("city") == city else None
        stem = stem or f"{city}_{sample.index:06d}_000000"
        label_ids, instance_ids = encode_labels(sample, table)
        Image.fromarray(sample.image).save(images / f"{stem}{IMAGE_SUFFIX}")
        Image.fromarray(label_ids).save(labels / f"{stem}{LABEL_SUFFIX}")
        cv2.imwrite(str(labels / f"{stem}{INSTANCE_SUFFIX}"), instance_ids)
        count += 1
    return count


def encode_labels(sample: Sample, table: LabelTable) -> tuple[np.ndarray, np.ndarray]:
    """A sample's (uint8 labelIds, uint16 instanceIds) in ``table``'s ids."""
    if sample.semantic is None or not sample.instances.has_masks:
        raise ValueError(f"sample {sample.index} has no semantic mask or no instance masks: the Cityscapes layout "
                         "needs both")
    to_label = np.full(256, table.ignore_id(), np.uint8)
    for k in range(len(table.class_names)):
        to_label[k + 1] = table.label_of_class(k).id
    if table.background_id is not None:
        to_label[0] = table.background_id
    elif (sample.semantic == 0).any():
        raise ValueError(f"sample {sample.index} has background pixels (0), which Cityscapes' table cannot hold")
    label_ids = to_label[sample.semantic]
    things = {label.id for label in table.labels if label.has_instances}
    # stuff pixels keep their label id; thing pixels outside every instance are 0
    instance_ids = np.where(np.isin(label_ids, list(things)), 0, label_ids).astype(np.uint16)
    given = sample.instances.data.get("instance_id")
    crowd = sample.instances.data.get("iscrowd")
    taken = set() if given is None else {int(v) for v in given}
    for i in range(len(sample.instances)):
        label_id = table.label_of_class(int(sample.instances.class_id[i])).id
        if crowd is not None and crowd[i]:
            value = label_id
        elif given is not None and given[i] // INSTANCE_FACTOR == label_id:
            value = int(given[i])
        else:  # the next free k of its class
            value = label_id * INSTANCE_FACTOR
            while value in taken:
                value += 1
            if value >= (label_id + 1) * INSTANCE_FACTOR:
                raise ValueError(f"sample {sample.index} has over {INSTANCE_FACTOR} instances of one class")
            taken.add(value)
        # an instance keeps every pixel of its mask, also where the semantic mask abstains (255)
        instance_ids[sample.instances.masks[i]] = value
    return label_ids, instance_ids
