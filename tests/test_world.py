import hashlib
import json
import re

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from synthscene.codecs import load_semantic_png, rle_to_mask
from synthscene.evaluation.semantic import confusion_matrix, miou_from_confusion
from synthscene.world import CLASS_NAMES, CLASSES, oracle_semantic, render_scene, scene_seed
from synthscene.world.build import write_world
from synthscene.world.render import MIN_VISIBLE_SHARE, _place_objects, _visible_masks

NUMBERS = {"a": 1, "an": 1, "two": 2, "three": 3, "four": 4}


def _tree_digest(root):
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path):
    a = write_world(tmp_path / "a", 12, 4, seed=7, progress=False)
    b = write_world(tmp_path / "b", 12, 4, seed=7, progress=False)
    c = write_world(tmp_path / "c", 12, 4, seed=8, progress=False)
    assert _tree_digest(a) == _tree_digest(b)
    assert _tree_digest(a) != _tree_digest(c)


def test_scene_does_not_depend_on_how_many_are_drawn():
    first = render_scene(11, 5)
    again = render_scene(11, 5)
    assert np.array_equal(first.image, again.image) and first.caption == again.caption
    assert first.seed == 11 and first.index == 5


def test_labels_agree_masks_boxes_semantic_caption(small_world):
    coco = COCO(str(small_world / "annotations" / "instances_train.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASS_NAMES)
    captions = [json.loads(line) for line in open(small_world / "train" / "metadata.jsonl")]
    saw_repeat = False
    for row in captions:
        image_id = row["image_id"]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        semantic = load_semantic_png(small_world / "train" / "semantic" / row["file_name"].split("/")[-1])
        rebuilt = np.zeros_like(semantic)
        for ann in anns:
            mask = rle_to_mask(ann["segmentation"])
            assert mask.sum() == ann["area"] > 0
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
            assert not (rebuilt[mask] != 0).any(), "instances overlap"
            rebuilt[mask] = ann["category_id"]
        assert np.array_equal(rebuilt, semantic)
        # the caption names each class with its instance count
        counts = {}
        for ann in anns:
            counts[ann["category_id"] - 1] = counts.get(ann["category_id"] - 1, 0) + 1
        for class_id, cls in enumerate(CLASSES):
            match = re.search(rf"\b(a|an|two|three|four) (?:{cls.colour} )?({cls.name}|{cls.plural})\b", row["text"])
            if class_id in counts:
                assert match and NUMBERS[match.group(1)] == counts[class_id], row["text"]
            else:
                assert match is None, row["text"]
        saw_repeat |= any(c > 1 for c in counts.values())
    assert saw_repeat


def test_scenes_have_partial_occlusion_within_bounds():
    occluded = 0
    for index in range(100):
        shapes, _ = _place_objects(scene_seed(0, index), 32)
        masks = [mask for mask, _dark in shapes]
        for full, visible in zip(masks, _visible_masks(masks) if masks else []):
            assert visible.sum() >= MIN_VISIBLE_SHARE * full.sum()
            occluded += int(visible.sum() < full.sum())
    assert occluded > 0


def test_oracle_is_near_exact_on_world_images(small_world):
    confusion = np.zeros((len(CLASSES) + 1,) * 2, np.int64)
    for path in sorted((small_world / "val" / "images").glob("*.png")):
        image = np.array(Image.open(path))
        semantic = load_semantic_png(small_world / "val" / "semantic" / path.name)
        confusion += confusion_matrix(oracle_semantic(image), semantic, len(CLASSES) + 1)
    miou, _ = miou_from_confusion(confusion)
    assert miou >= 0.95


def test_world_writes_exact_part_maps_the_oracle_reads_back(small_world):
    from synthscene.world import PARTS, oracle_parts

    listed = json.loads((small_world / "world.json").read_text())["parts"]
    assert [(row["class"], row["name"]) for row in listed] == [(CLASSES[p.class_id].name, p.name) for p in PARTS]
    assert {row["class"] for row in listed} == {"box", "star"}
    seen = np.zeros(len(PARTS) + 1, np.int64)
    for path in sorted((small_world / "val" / "images").glob("*.png")):
        image = np.array(Image.open(path))
        parts = load_semantic_png(small_world / "val" / "parts" / path.name)
        semantic = load_semantic_png(small_world / "val" / "semantic" / path.name)
        assert np.array_equal(oracle_parts(image), parts)
        for part_id, part in enumerate(PARTS, 1):  # a part lies on its class, and covers all of it
            assert (semantic[parts == part_id] == part.class_id + 1).all()
        aware = np.isin(semantic, [p.class_id + 1 for p in PARTS])
        assert np.array_equal(aware, parts > 0)
        seen += np.bincount(parts.ravel(), minlength=len(PARTS) + 1)
    assert (seen[1:] > 0).all()


def test_parts_are_visibly_different_and_shaped_as_described():
    from synthscene.world import PARTS

    dark_share = {p.name: [] for p in PARTS}
    for index in range(80):
        scene = render_scene(1, index)
        value = scene.image.max(axis=2) / 255
        for part_id, part in enumerate(PARTS, 1):
            inside = scene.parts == part_id
            if inside.any():
                dark_share[part.name].append(float((value[inside] < 0.71).mean()))
    # the light parts (face, centre) are light, the dark ones (frame, points) dark, everywhere
    assert np.mean(dark_share["face"]) == 0 and np.mean(dark_share["centre"]) == 0
    assert np.mean(dark_share["frame"]) == 1 and np.mean(dark_share["points"]) == 1


def test_oracle_instances_cover_each_class_as_the_scene_does():
    from synthscene.world.oracle import oracle_instances

    for index in range(20):
        scene = render_scene(3, index)
        found = oracle_instances(scene.image, min_area=1)
        semantic = oracle_semantic(scene.image)
        for class_id in range(len(CLASSES)):
            union = np.zeros(semantic.shape, bool)
            for mask in found.masks[found.class_id == class_id]:
                assert not (union & mask).any()  # components of one class never overlap
                union |= mask
            assert np.array_equal(union, semantic == class_id + 1)
        # every oracle instance lies on a drawn object of its class
        for mask, class_id in zip(found.masks, found.class_id):
            drawn = scene.instances.masks[scene.instances.class_id == class_id]
            assert (drawn.any(0) & mask).sum() >= 0.9 * mask.sum()


def test_oracle_rejects_non_rgb():
    with pytest.raises(ValueError, match="uint8 RGB"):
        oracle_semantic(np.zeros((4, 4), np.uint8))


@pytest.mark.parametrize("n_train, n_val, message", [(-1, 2, ">= 0"), (3, -5, ">= 0"), (0, 0, "nothing to write")])
def test_bad_counts_fail_without_output(tmp_path, n_train, n_val, message):
    with pytest.raises(ValueError, match=message):
        write_world(tmp_path / "w", n_train, n_val, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_refused(tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        write_world(tmp_path / "w", 2, 1, progress=False)
    assert (tmp_path / "w" / "keep.txt").read_text() == "mine"
