import hashlib

import numpy as np
import pytest

from synthscene.codecs import IGNORE_INDEX, load_semantic_png
from synthscene.formats.cityscapes import CITYSCAPES, CityscapesSource, from_cityscapes, write_cityscapes
from synthscene.formats.coco import read_coco
from synthscene.formats.export import export_run
from synthscene.store import open_run
from synthscene.world import CLASS_NAMES
from synthscene.world.build import write_world
from tests.helpers import write_cityscapes_files as _write_files
from tests.helpers import write_street as _street


def _digest(root):
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def _same_samples(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.semantic, y.semantic)
        assert np.array_equal(x.instances.masks, y.instances.masks)
        assert np.array_equal(x.instances.class_id, y.instances.class_id)
        assert x.instances.data.keys() == y.instances.data.keys()
        for key in x.instances.data:
            assert np.array_equal(x.instances.data[key], y.instances.data[key])


def test_reads_cityscapes_ids_train_ids_instances_and_groups(tmp_path):
    _, label_ids, instance_ids = _street(tmp_path / "cs")
    source = CityscapesSource(tmp_path / "cs", "train")
    assert source.class_names[13] == "car" and len(source.class_names) == 19
    sample = source.sample(0)
    car = source.class_names.index("car") + 1
    assert (sample.semantic[label_ids == 7] == source.class_names.index("road") + 1).all()
    assert (sample.semantic[label_ids == 26] == car).all()
    assert (sample.semantic[(label_ids == 0) | (label_ids == 29)] == IGNORE_INDEX).all()
    assert (sample.semantic != 0).all()  # Cityscapes' table has no background
    # the group first (its id is the label id), then the cars by id; the caravan has no class
    assert sample.instances.data["instance_id"].tolist() == [26, 26000, 26002]
    assert sample.instances.data["iscrowd"].tolist() == [True, False, False]
    assert (sample.instances.class_id == car - 1).all()
    assert np.array_equal(sample.instances.masks[2], instance_ids == 26002)
    assert sample.instances.xyxy[1].tolist() == [2, 10, 10, 16]
    assert sample.dropped == {"ignored_class": 1}
    assert sample.extra["source"]["city"] == "aachen"


def test_writing_what_was_read_gives_the_same_samples_and_files(tmp_path):
    _street(tmp_path / "cs")
    _street(tmp_path / "cs", stem="aachen_000001_000019")
    first = list(from_cityscapes(tmp_path / "cs"))
    write_cityscapes(first, CITYSCAPES.class_names, tmp_path / "once", city="aachen")
    again = list(from_cityscapes(tmp_path / "once"))
    _same_samples(first, again)
    assert not (tmp_path / "once" / "labels.json").exists()  # Cityscapes' own table
    write_cityscapes(again, CITYSCAPES.class_names, tmp_path / "twice", city="aachen")
    assert _digest(tmp_path / "once") == _digest(tmp_path / "twice")


def test_world_in_cityscapes_layout_matches_its_coco_and_semantic_files(tmp_path):
    root = write_world(tmp_path / "w", n_train=6, n_val=3, seed=2, progress=False, cityscapes=True)
    for split, count in (("train", 6), ("val", 3)):
        source = CityscapesSource(root / "cityscapes", split)
        assert source.class_names == list(CLASS_NAMES) and len(source) == count
        coco = read_coco(root / "annotations" / f"instances_{split}.json", [root])
        for i, sample in enumerate(source):
            expected = coco.sample(i)
            assert np.array_equal(sample.image, expected.image)
            assert np.array_equal(sample.semantic, load_semantic_png(root / split / "semantic" / f"{i:06d}.png"))
            assert len(sample.instances) == len(expected.instances)
            if not len(expected.instances):
                continue
            # the world's masks are disjoint, so the layout holds them exactly
            order = np.lexsort((np.arange(len(expected.instances)), expected.instances.class_id))
            assert np.array_equal(sample.instances.masks, expected.instances.masks[order])
            assert np.array_equal(sample.instances.class_id, expected.instances.class_id[order])
    assert (root / "cityscapes" / "labels.json").is_file()


def test_export_of_a_run_reads_back_as_its_samples(tiny_run, tmp_path):
    out = export_run(tiny_run, "cityscapes", tmp_path / "cs")
    run = open_run(tiny_run)
    exported = list(from_cityscapes(out))
    stored = list(run.samples())
    assert len(exported) == len(stored) and CityscapesSource(out).class_names == run.class_names
    for got, want in zip(exported, stored):
        assert np.array_equal(got.image, want.image) and np.array_equal(got.semantic, want.semantic)
        # an instance keeps every pixel of its mask; instances are disjoint here
        assert sorted(map(int, got.instances.class_id)) == sorted(map(int, want.instances.class_id))
        assert got.instances.masks.sum() == want.instances.masks.sum()


def test_bad_sources_get_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not a Cityscapes layout: gtFine/train/ is missing"):
        (tmp_path / "a" / "leftImg8bit" / "train").mkdir(parents=True)
        CityscapesSource(tmp_path / "a")
    image, label_ids, instance_ids = _street(tmp_path / "b")
    (tmp_path / "b" / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_instanceIds.png").unlink()
    with pytest.raises(ValueError, match="has no gtFine/train/aachen/aachen_000000_000019_gtFine_instanceIds.png"):
        CityscapesSource(tmp_path / "b")
    _write_files(tmp_path / "c", "train", "x", "x_0", image, label_ids[:, :40], instance_ids[:, :40])
    with pytest.raises(ValueError, match="differ in size"):
        CityscapesSource(tmp_path / "c").sample(0)
    road_instance = instance_ids.copy()
    road_instance[20:, :4] = 7001  # road is not a thing class
    _write_files(tmp_path / "d", "train", "x", "x_0", image, label_ids, road_instance)
    with pytest.raises(ValueError, match="instance id 7001 is not class x 1000 \\+ k"):
        CityscapesSource(tmp_path / "d").sample(0)
    unknown = label_ids.copy()
    unknown[0, 0] = 200
    _write_files(tmp_path / "e", "train", "x", "x_0", image, unknown, instance_ids)
    with pytest.raises(ValueError, match="label id 200"):
        CityscapesSource(tmp_path / "e").sample(0)


def test_a_file_linked_from_outside_the_root_is_refused(tmp_path):
    _street(tmp_path / "outside")
    _street(tmp_path / "cs")
    label = tmp_path / "cs" / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png"
    label.unlink()
    label.symlink_to(tmp_path / "outside" / "gtFine" / "train" / "aachen" / label.name)
    with pytest.raises(ValueError, match="leads outside the dataset root"):
        CityscapesSource(tmp_path / "cs")
