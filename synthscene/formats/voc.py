"""VOC-style segmentation sets, written and read as PASCAL VOC ships them.

Layout::

    JPEGImages/NAME.jpg        (ours: NAME.png, never re-encoded)
    SegmentationClass/NAME.png palette PNG of class indices: 0 background, 1..C, 255 ignore
    ImageSets/Segmentation/{train,val,...}.txt   one NAME per line: the splits
    labels.txt                 optional, one ``id name`` per line (names may hold spaces)

Without ``labels.txt`` the classes are VOC's 20 (``VOC_CLASSES``). A ``labels.txt``
written with one name per line and no ids (synthscene before December 2026) is read too:
line k is class k. Reading honours the split lists, so a val image never trains.
"""

from __future__ import annotations

import shutil
from pathlib import Path

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class VocError(ValueError):
    """A VOC folder cannot be read: the message names the file and what is wrong."""


def write_voc(items, class_names: list[str], out: Path) -> None:
    """Write a VOC-style set from ``(sample, files)`` pairs of a run (``synthscene.store``);
    every sample goes in the ``train`` list."""
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (out / folder).mkdir(parents=True)
    stems = []
    for sample, files in items:
        stem = f"{sample.index:07d}"
        shutil.copyfile(files.image, out / "JPEGImages" / f"{stem}.png")
        shutil.copyfile(files.semantic, out / "SegmentationClass" / f"{stem}.png")
        stems.append(stem)
    (out / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(s + "\n" for s in stems))
    write_voc_labels(out / "labels.txt", class_names)


def write_voc_labels(path: Path, class_names) -> None:
    """``labels.txt``: ``0 background`` then ``k name`` for the classes 1..C."""
    names = ["background", *class_names]
    Path(path).write_text("".join(f"{k} {name}\n" for k, name in enumerate(names)))


def read_voc_labels(path: Path) -> list[str]:
    """The class names 1..C of a ``labels.txt`` (``id name`` lines, ids 0..C in order, 0
    the background; or one name per line)."""
    lines = [line.strip() for line in Path(path).read_text().splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise VocError(f"{path} is empty: it should name the background and the classes")
    first = lines[0].split(maxsplit=1)[0]
    if not first.isdigit():  # one name per line, no ids
        return lines[1:]
    names = []
    for number, line in enumerate(lines, 1):
        key, _, name = line.partition(" ")
        if not key.isdigit() or not name.strip():
            raise VocError(f"{path} line {number}: expected 'id name', got {line!r}")
        if int(key) != len(names):
            raise VocError(f"{path} line {number}: id {key} out of order (expected {len(names)}; ids run 0 "
                           "for the background, then 1, 2, ... without gaps)")
        names.append(name.strip())
    return names[1:]


def voc_class_names(root: Path) -> list[str]:
    """The classes of a VOC folder: its ``labels.txt``, else VOC's 20."""
    labels = Path(root) / "labels.txt"
    return read_voc_labels(labels) if labels.is_file() else list(VOC_CLASSES)


def voc_pairs(root: Path, split: str | None = "train") -> list[tuple[Path, Path]]:
    """(image, mask) files of a VOC folder's ``split`` (its ``ImageSets/Segmentation/
    SPLIT.txt``), in list order. A folder without ``ImageSets/Segmentation`` has no splits:
    every mask is used. ``root`` may also be a split list file itself."""
    root = Path(root)
    listed = None
    if root.is_file() and root.suffix == ".txt":
        listed, root = root, root.parents[2]
    elif (root / "ImageSets" / "Segmentation").is_dir() and split is not None:
        listed = root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listed.is_file():
            have = sorted(p.stem for p in listed.parent.glob("*.txt"))
            raise VocError(f"{root} has no split list ImageSets/Segmentation/{split}.txt (it has "
                           f"{', '.join(have) or 'none'}): name the list file to use instead of the folder")
    masks_dir, images_dir = root / "SegmentationClass", root / "JPEGImages"
    if listed is None:
        stems = sorted(p.stem for p in masks_dir.glob("*.png"))
    else:
        stems = [line.split()[0] for line in listed.read_text().splitlines() if line.strip()]
    if not stems:
        raise VocError(f"{listed or masks_dir} lists no images")
    pairs = []
    for stem in stems:
        if "/" in stem or "\\" in stem or stem.startswith("."):
            raise VocError(f"{listed}: {stem!r} is not an image name (names may not hold paths)")
        mask = masks_dir / f"{stem}.png"
        if not mask.is_file():
            raise VocError(f"{mask} is missing (listed in {listed or masks_dir})")
        image = next((images_dir / f"{stem}{s}" for s in IMAGE_SUFFIXES if (images_dir / f"{stem}{s}").is_file()),
                     None)
        if image is None:
            raise VocError(f"{images_dir} has no image {stem}.jpg or {stem}.png for its mask")
        for path in (image, mask):  # a link may not lead out of the dataset
            if not path.resolve().is_relative_to(root.resolve()):
                raise VocError(f"{path} leads outside {root}")
        pairs.append((image, mask))
    return pairs
