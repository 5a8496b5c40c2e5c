import json
import shutil

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image
from scipy import ndimage

from synthscene.formats.yolo import YoloError, load_yolo, read_yolo, write_yolo
from synthscene.records import Instances, Sample, masks_to_xyxy
from synthscene.store import SampleFiles, open_run


def export(run, out, task):
    opened = open_run(run)
    out.mkdir()
    write_yolo(opened.items(), opened.class_names, out, task)
    return out


def run_samples(run):
    return [sample for sample, _ in open_run(run).items()]


def tree(root):
    """Every path under ``root`` with its size: what a reader must leave as it was."""
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


# ---- a run written and read back ----------------------------------------------------------


def test_detect_export_reads_back_the_run_boxes(tiny_run, tmp_path):
    out = export(tiny_run, tmp_path / "yolo", "detect")
    samples = run_samples(tiny_run)
    assert sum(len(s.instances) for s in samples) > 0, "the tiny run should have instances"
    stems = sorted(p.stem for p in (out / "images" / "train").iterdir())
    assert stems == sorted(p.stem for p in (out / "labels" / "train").iterdir()) == [f"{s.index:07d}"
                                                                                     for s in samples]
    for sample in samples:  # the stored PNG byte for byte; an image without instances has an empty label file
        name = f"{sample.index:07d}"
        assert np.array_equal(np.array(Image.open(out / "images" / "train" / f"{name}.png")), sample.image)
        lines = (out / "labels" / "train" / f"{name}.txt").read_text().splitlines()
        assert len(lines) == len(sample.instances) and all(len(line.split()) == 5 for line in lines)

    source = read_yolo(out)
    assert len(source) == len(samples) and source.class_names == ["ball", "leaf", "box"]
    assert source.num_annotations == sum(len(s.instances) for s in samples) and not source.has_masks
    for k, sample in enumerate(samples):
        assert source.images[k]["file_name"] == f"images/train/{sample.index:07d}.png"
        read = source.instances(k)
        assert read.class_id.tolist() == sample.instances.class_id.tolist()
        np.testing.assert_allclose(read.xyxy, sample.instances.xyxy, atol=1e-3)
        assert np.array_equal(source.load_image(k), sample.image)


def test_segment_export_reads_back_the_run_masks(tiny_run, tmp_path):
    out = export(tiny_run, tmp_path / "yolo", "segment")
    samples = run_samples(tiny_run)
    source = read_yolo(out / "data.yaml")
    assert source.has_masks and source.dropped == {}
    checked = holes = 0
    for k, sample in enumerate(samples):
        read = source.instances(k)
        assert read.class_id.tolist() == sample.instances.class_id.tolist()
        if not len(read):
            continue
        np.testing.assert_array_equal(read.xyxy, masks_to_xyxy(read.masks))  # boxes derived from the masks
        for original, back in zip(sample.instances.masks, read.masks):
            # YOLO keeps the outline only: what comes back is the mask with its holes filled
            assert np.array_equal(back, ndimage.binary_fill_holes(original))
            if np.array_equal(ndimage.binary_fill_holes(original), original):
                assert (back & original).sum() / (back | original).sum() >= 0.9
            else:
                holes += 1
            checked += 1
    assert checked == sum(len(s.instances) for s in samples) and checked - holes >= 10


def test_data_yaml_is_plain_and_the_folder_can_be_moved(tiny_run, tmp_path):
    out = export(tiny_run, tmp_path / "yolo", "segment")
    text = (out / "data.yaml").read_text()
    config = yaml.safe_load(text)
    assert config == {"train": "images/train", "val": "images/train", "nc": 3,
                      "names": {0: "ball", 1: "leaf", 2: "box"}}
    assert "no separate validation split" in text  # said where people look
    before, _ = load_yolo(out)

    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(out, moved)
    shutil.rmtree(out)
    after, root = load_yolo(moved)
    assert root == moved and after["images"] == before["images"] and after["annotations"] == before["annotations"]
    assert len(read_yolo(moved, split="val")) == len(before["images"])  # val names the training images


# ---- hand-made samples: the format's limits -------------------------------------------------


def write_png(path, height, width, seed=0):
    image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(image).save(path)
    return image


def hand_made_items(tmp_path, height=20, width=28):
    """Two samples on a non-square image (a swapped width and height would show): a ring,
    a one-pixel mask, a two-part mask and a crowd region; then an empty sample."""
    image = write_png(tmp_path / "a.png", height, width)
    masks = np.zeros((4, height, width), bool)
    cv2.circle(masks[0].view(np.uint8), (8, 9), 6, 1, -1)
    cv2.circle(masks[0].view(np.uint8), (8, 9), 2, 0, -1)  # the ring's hole
    masks[1, 3, 25] = True
    masks[2, 1:6, 18:26] = True  # the large part
    masks[2, 15:17, 18:20] = True  # a small second part (OpenCV lists it first)
    masks[3, 0:5, 0:5] = True
    first = Sample(0, 0, "", image, Instances.from_masks(masks, [0, 1, 2, 1],
                                                         data={"iscrowd": np.array([0, 0, 0, 1], bool)}))
    empty = Sample(1, 0, "", image, Instances.empty(height, width))
    files = SampleFiles(tmp_path / "a.png", None)
    return [(first, files), (empty, files)], masks


def test_segment_limits_ring_one_pixel_parts_crowd(tmp_path, caplog):
    items, masks = hand_made_items(tmp_path)
    out = tmp_path / "yolo"
    out.mkdir()
    names = ["yes", "leaf: green", "1"]  # YAML would read these unquoted as a bool, a mapping, a number
    write_yolo(items, names, out, "segment")
    assert "1 crowd instance(s) left out" in caplog.text
    assert (out / "labels" / "train" / "0000001.txt").read_text() == ""
    lines = (out / "labels" / "train" / "0000000.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["0", "1", "2"]  # the crowd region is not written
    assert lines[1].split()[1:] == ["0.892858", "0.150001"] * 4  # one pixel: its box's corners

    source = read_yolo(out)
    assert source.class_names == names
    read = source.instances(0)
    assert np.array_equal(read.masks[0], ndimage.binary_fill_holes(masks[0]))  # the hole is lost
    assert not np.array_equal(read.masks[0], masks[0])
    assert np.array_equal(read.masks[1], masks[1])
    largest = np.zeros_like(masks[2])
    largest[1:6, 18:26] = True
    assert np.array_equal(read.masks[2], largest)  # only the largest part

    # Ultralytics parses labels as float32 and casts pixel coordinates to int32 (truncation)
    # before cv2.fillPoly: the written coordinates must survive that too
    height, width = masks.shape[1:]
    for line, expected in zip(lines, read.masks):
        points = np.array(line.split()[1:], np.float32).reshape(-1, 2) * np.array([width, height], np.float32)
        filled = np.zeros((height, width), np.uint8)
        cv2.fillPoly(filled, [points.astype(np.int32)], 1)
        assert np.array_equal(filled.astype(bool), expected)


def test_segment_needs_masks_but_detect_takes_boxes(tmp_path):
    image = write_png(tmp_path / "a.png", 10, 20)
    boxes = Sample(0, 0, "", image, Instances.from_boxes([[2, 1, 12, 9]], [1]))
    items = [(boxes, SampleFiles(tmp_path / "a.png", None))]
    (tmp_path / "seg").mkdir()
    with pytest.raises(ValueError, match="box-only instances.*task 'detect'"):
        write_yolo(items, ["a", "b"], tmp_path / "seg", "segment")
    (tmp_path / "det").mkdir()
    write_yolo(items, ["a", "b"], tmp_path / "det", "detect")
    assert (tmp_path / "det" / "labels" / "train" / "0000000.txt").read_text() == \
        "1 0.350000 0.500000 0.500000 0.800000\n"
    with pytest.raises(ValueError, match="unknown YOLO task"):
        write_yolo(items, ["a", "b"], tmp_path / "x", "pose")


# ---- reading: bad input is refused by name ---------------------------------------------------


def yolo_folder(root, labels, data=None, height=12, width=16):
    """A one-image dataset ``root`` with label file text ``labels`` and data.yaml ``data``."""
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    write_png(root / "images" / "train" / "0000001.png", height, width)
    (root / "labels" / "train" / "0000001.txt").write_text(labels)
    config = {"train": "images/train", "names": ["a", "b", "c"]} if data is None else data
    (root / "data.yaml").write_text(yaml.safe_dump(config))
    return root


GOOD_LINE = "0 0.5 0.5 0.25 0.5\n"


@pytest.mark.parametrize(("labels", "data", "message"), [
    (GOOD_LINE + "\n1 0.1 0.2 0.3 0.4 0.5\n", None,
     r"labels/train/0000001\.txt line 3: 6 values; a box line has 5 \(class cx cy w h\)"),
    (GOOD_LINE + "7 0.5 0.5 0.1 0.1\n", None, r"0000001\.txt line 2: class 7 is not in data\.yaml \(names 0\.\.2\)"),
    ("1.5 0.5 0.5 0.1 0.1\n", None, r"0000001\.txt line 1: class 1\.5 is not in data\.yaml"),
    ("2 0.1 0.1 0.9 0.1 1.5 0.8 0.1 0.8\n", None, r"0000001\.txt line 1: coordinate 1\.5 is outside \[0, 1\]"),
    ("0 0.5 nan 0.1 0.1\n", None, r"0000001\.txt line 1: coordinate nan is outside \[0, 1\]"),
    (GOOD_LINE, {"train": "images/train", "nc": 3}, r"data\.yaml has no 'names'"),
    (GOOD_LINE, {"train": "images/train", "names": ["a", "b"], "nc": 3}, r"nc is 3 but names has 2 classes"),
    (GOOD_LINE, {"train": "images/train", "names": {0: "a", 2: "c"}}, r"names has ids \[0, 2\].*0\.\.1"),
    (GOOD_LINE, {"val": "images/train", "names": ["a"]}, r"has no 'train' entry"),
    (GOOD_LINE, {"train": "../elsewhere", "names": ["a"]}, r"train entry '\.\./elsewhere' lies outside"),
    (GOOD_LINE, {"train": "images/train", "names": ["a"], "kpt_shape": [17, 3]}, r"pose \(keypoint\) dataset"),
])
def test_bad_datasets_are_refused_by_name_and_line(tmp_path, labels, data, message):
    root = yolo_folder(tmp_path / "ds", labels, data)
    before = tree(tmp_path)
    with pytest.raises(YoloError, match=message) as caught:
        read_yolo(root)
    assert "\n" not in str(caught.value)
    assert tree(tmp_path) == before  # the reader writes nothing


def test_list_entries_may_not_leave_the_root(tmp_path):
    root = yolo_folder(tmp_path / "ds", GOOD_LINE, {"train": "train.txt", "names": ["a"]})
    write_png(tmp_path / "x.png", 12, 16)  # it exists: the refusal is about where it is
    (root / "train.txt").write_text("./images/train/0000001.png\n../x.png\n")
    with pytest.raises(YoloError, match=r"train\.txt line 2: image '\.\./x\.png' lies outside the dataset folder"):
        read_yolo(root)
    (root / "train.txt").write_text(f"{tmp_path / 'x.png'}\n")
    with pytest.raises(YoloError, match=r"train\.txt line 1: image .* lies outside"):
        read_yolo(root)
    # a symbolic link inside the folder that leads out of it
    (root / "images" / "train" / "link.png").symlink_to(tmp_path / "x.png")
    (root / "train.txt").write_text("images/train/link.png\n")
    with pytest.raises(YoloError, match=r"line 1: image 'images/train/link\.png' lies outside"):
        read_yolo(root)
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "images/train", "names": ["a"]}))
    with pytest.raises(YoloError, match=r"link\.png leads outside the dataset folder"):
        read_yolo(root)


def test_reader_rules_lists_names_mapping_path_key_and_missing_labels(tmp_path):
    root = yolo_folder(tmp_path / "ds" / "inner", "1 0.5 0.5 0.5 0.5\n",
                       {"path": "inner", "train": ["list.txt", "more"], "names": {1: "b", 0: "a"}, "nc": 2})
    (root.parent / "data.yaml").write_text((root / "data.yaml").read_text())  # path: is relative to this yaml
    (root / "data.yaml").unlink()
    (root / "list.txt").write_text("images/train/0000001.png\n\n")
    (root / "more" / "images").mkdir(parents=True)
    write_png(root / "more" / "images" / "B.JPG", 8, 10)  # no label file: an image without objects
    coco, image_root = load_yolo(root.parent / "data.yaml")
    assert image_root == root
    assert [(i["file_name"], i["height"], i["width"]) for i in coco["images"]] == [
        ("images/train/0000001.png", 12, 16), ("more/images/B.JPG", 8, 10)]
    assert [c["name"] for c in coco["categories"]] == ["a", "b"]
    assert coco["annotations"] == [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [4.0, 3.0, 8.0, 6.0],
                                    "area": 48.0, "iscrowd": 0}]
    json.dumps(coco)  # a plain COCO dict


# ---- a real dataset: the shapes world -------------------------------------------------------


def test_world_images_labelled_by_hand_match_their_coco_boxes(small_world, tmp_path):
    truth = json.loads((small_world / "annotations" / "instances_train.json").read_text())
    images = truth["images"][:5]
    root = tmp_path / "world_yolo"
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    for image in images:
        stem = f"{image['id']:06d}"
        shutil.copyfile(small_world / image["file_name"], root / "images" / "train" / f"{stem}.png")
        lines = []
        for a in truth["annotations"]:
            if a["image_id"] == image["id"]:
                x, y, w, h = a["bbox"]
                W, H = image["width"], image["height"]  # noqa: N806
                lines.append(f"{a['category_id'] - 1} {(x + w / 2) / W:.6f} {(y + h / 2) / H:.6f} {w / W:.6f} "
                             f"{h / H:.6f}\n")
        (root / "labels" / "train" / f"{stem}.txt").write_text("".join(lines))
    (root / "train.txt").write_text("".join(f"./images/train/{i['id']:06d}.png\n" for i in images))
    names = [c["name"] for c in sorted(truth["categories"], key=lambda c: c["id"])]
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "train.txt", "val": "images/train", "names": names}))

    source = read_yolo(root)
    assert source.class_names == names and len(source) == len(images)
    for k, image in enumerate(images):
        annotations = [a for a in truth["annotations"] if a["image_id"] == image["id"]]
        read = source.instances(k)
        assert read.class_id.tolist() == [a["category_id"] - 1 for a in annotations]
        expected = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in annotations)])
        np.testing.assert_allclose(read.xyxy, expected.reshape(-1, 4), atol=1e-3)
        assert np.array_equal(source.load_image(k), np.array(Image.open(small_world / image["file_name"])))
    assert sum(len(source.instances(k)) for k in range(len(source))) > 0


def test_ultralytics_accepts_the_export(tiny_run, tmp_path):
    pytest.importorskip("ultralytics", reason="ultralytics is not installed here (it pulls opencv-python, which "
                        "replaces opencv-contrib)")
    from ultralytics.data.utils import check_det_dataset

    out = export(tiny_run, tmp_path / "yolo", "segment")
    data = check_det_dataset(str(out / "data.yaml"))
    assert data["names"] == {0: "ball", 1: "leaf", 2: "box"} and data["nc"] == 3


def test_train_merge_and_restyle_read_a_yolo_dataset(tiny_run, small_world, tmp_path):
    """A YOLO folder is a source like a COCO file: training data, one side of a merge, restyle's input."""
    from synthscene.formats.export import export_run
    from synthscene.formats.merge import merge_files
    from synthscene.formats.source import open_source
    from synthscene.spec import SourceSpec
    from synthscene.train.data import Source, open_sources

    out = export_run(tiny_run, "yolo", tmp_path / "yolo")  # auto: polygons, the run has masks
    assert all(len(line.split()) >= 7 for f in (out / "labels" / "train").glob("*.txt")
               for line in f.read_text().splitlines())
    data = open_sources("detection", [Source(str(out / "data.yaml"))])
    samples = list(open_run(tiny_run).samples())
    assert len(data.dataset) == len(samples) and data.class_names == ["ball", "leaf", "box"]
    _, target = data.dataset[0]
    assert target["labels"].tolist() == (samples[0].instances.class_id + 1).tolist() and "masks" in target
    merged = merge_files(small_world / "annotations" / "instances_train.json", out, tmp_path / "merged.json",
                         real_images=small_world)
    assert merged["synthetic_images"] == len(samples)
    assert open_sources("detection", [Source(str(tmp_path / "merged.json"), image_roots=(str(merged["image_root"]),))])
    source = open_source(SourceSpec(format="yolo", path=str(out)))
    assert len(source) == len(samples) and source.sample(0).image.shape == samples[0].image.shape
