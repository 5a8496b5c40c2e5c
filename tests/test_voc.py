"""VOC folders as PASCAL VOC ships them: splits honoured, built-in classes, ``id name`` labels."""

import numpy as np
import pytest
from PIL import Image

from synthscene.codecs import IGNORE_INDEX, save_semantic_png
from synthscene.formats.voc import VOC_CLASSES, read_voc_labels, write_voc_labels
from synthscene.train.data import DatasetError, SemanticDataset


def voc_folder(root, train=("a", "b"), val=("c",), labels: str | None = None):
    """A VOC2012-like folder: JPEG images, palette masks with a 255 border, two split lists."""
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for k, stem in enumerate([*train, *val]):
        Image.fromarray(np.full((12, 16, 3), 40 * k, np.uint8)).save(root / "JPEGImages" / f"{stem}.jpg")
        mask = np.zeros((12, 16), np.uint8)
        mask[3:9, 4:12] = k + 1
        mask[2, 3:13] = IGNORE_INDEX
        save_semantic_png(mask, root / "SegmentationClass" / f"{stem}.png")
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("".join(s + "\n" for s in train))
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(s + "\n" for s in val))
    if labels is not None:
        (root / "labels.txt").write_text(labels)
    return root


def test_a_voc_folder_trains_on_its_train_list_only_and_has_the_20_classes(tmp_path):
    root = voc_folder(tmp_path / "VOC2012")
    train = SemanticDataset(root)
    assert [p.stem for p in train.images] == ["a", "b"]  # c is val: it never trains
    assert train.class_names == list(VOC_CLASSES) and len(train.class_names) == 20
    val = SemanticDataset(root, split="val")
    assert [p.name for p in val.images] == ["c.jpg"]
    _, mask = val[0]
    assert set(np.unique(mask.numpy()).tolist()) == {0, 3, IGNORE_INDEX}
    listed = SemanticDataset(root / "ImageSets" / "Segmentation" / "val.txt")  # a list file names a split too
    assert [p.stem for p in listed.images] == ["c"]


def test_labels_txt_names_may_hold_spaces(tmp_path):
    root = voc_folder(tmp_path / "v", labels="0 background\n1 traffic light\n2 potted plant\n3 person\n")
    assert SemanticDataset(root).class_names == ["traffic light", "potted plant", "person"]
    legacy = tmp_path / "legacy.txt"
    legacy.write_text("background\ntraffic light\nball\n")  # one name per line, no ids
    assert read_voc_labels(legacy) == ["traffic light", "ball"]
    written = tmp_path / "written.txt"
    write_voc_labels(written, ["traffic light", "ball_(toy)"])
    assert read_voc_labels(written) == ["traffic light", "ball_(toy)"]


@pytest.mark.parametrize("change, words", [
    (lambda r: (r / "labels.txt").write_text("0 background\n2 cat\n"), "out of order"),
    (lambda r: (r / "ImageSets/Segmentation/train.txt").write_text("a\nzz\n"), "zz.png is missing"),
    (lambda r: (r / "ImageSets/Segmentation/train.txt").write_text("../../x\n"), "not an image name"),
    (lambda r: (r / "ImageSets/Segmentation/train.txt").unlink(), "no split list"),
    (lambda r: (r / "JPEGImages" / "b.jpg").unlink(), "no image b.jpg"),
])
def test_bad_voc_folders_are_refused_by_name(tmp_path, change, words):
    root = voc_folder(tmp_path / "v", labels="0 background\n1 cat\n2 dog\n")
    change(root)
    with pytest.raises(DatasetError, match=words):
        SemanticDataset(root)
